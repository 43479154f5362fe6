"""The training CLI end to end on tiny data: every task, checkpoints and resume, two processes, tracking, the
exported folder (model, tokenizer, code, card), and bad input refused before any step."""

import contextlib
import csv
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from datasets import Dataset, DatasetDict
from helpers import CLI_ENVIRONMENT, TWO_PROCESSES, commit_into, train_in_process
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, pipeline

import transformer_encoder  # noqa: F401  (registers the Auto classes)
from transformer_encoder.cpu import BF16_OVERRIDE, detects_native_bf16
from transformer_encoder.training import run as training_run

TINY_MODEL = [
    "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--intermediate_size", "64",
    "--max_seq_length", "32", "--vocab_size", "300", "--per_device_train_batch_size", "8",
]
WORDS = "the a cat dog sat ran on under mat tree big small red blue quickly slowly and then".split()


FRESH_PROCESS = [sys.executable, "-m"]


def cli(*args, env=None, check=True, launcher=None):
    """Run the training CLI as a user would: `main` in this process, or under `launcher` (several processes)."""
    if launcher is None:
        result = train_in_process(args, env)
    else:
        command = launcher + ["transformer_encoder.training", *map(str, args)]
        environment = {**os.environ, **CLI_ENVIRONMENT, **(env or {})}
        result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, result.args))} failed:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A text file of short random sentences, one per line."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choices(WORDS, k=rng.randint(5, 15))) for _ in range(400)))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus) -> Path:
    """A tiny masked-LM checkpoint trained by the CLI, for the fine-tuning tests."""
    out = tmp_path_factory.mktemp("runs") / "mlm"
    cli("mlm", "--train_file", corpus, "--output_dir", out, "--max_train_steps", 6, *TINY_MODEL)
    return out


def final_weights(folder) -> dict:
    return load_file(Path(folder) / "model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# ---------------------------------------------------------------------------------------------------------------------
# Each task end to end
# ---------------------------------------------------------------------------------------------------------------------


def test_mlm_on_the_embedded_corpus_ends_in_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "default"
    cli("mlm", "--output_dir", out, "--max_train_steps", 3, *TINY_MODEL)
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
                "configuration_transformer_encoder.py", "modeling_transformer_encoder.py", "metrics.jsonl",
                "all_results.json"}
    assert expected <= {p.name for p in out.iterdir()}
    assert isinstance(AutoModel.from_pretrained(out), transformer_encoder.TransformerEncoderModel)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.mask_token == "[MASK]" and len(tokenizer) <= 300
    predictions = pipeline("fill-mask", model=str(out))("the [MASK] statement")
    assert len(predictions) == 5

    results = json.loads((out / "all_results.json").read_text())
    assert results["train_steps"] == 3 and results["perplexity"] > 1
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [3]
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "pipeline_tag: fill-mask" in card and "perplexity" in card
    assert "pydoc_data" in card  # the data it was trained on


def test_mlm_from_yaml_options_with_bpe_bf16_and_tensorboard(tmp_path, corpus):
    out = tmp_path / "bpe"
    options = tmp_path / "options.yaml"
    options.write_text(
        f"task: mlm\ntrain_file: {corpus}\noutput_dir: {out}\nmax_train_steps: 4\ntokenizer_type: bpe\n"
        "mixed_precision: bf16\nwith_tracking: true\nreport_to: tensorboard\nlogging_steps: 2\n"
        "lr_scheduler_type: inverse_sqrt\nnum_warmup_steps: 2\n"
    )
    cli(options, *TINY_MODEL)
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    settings = card_settings(out)
    assert settings["mixed_precision"] == "bf16" and settings["tokenizer_type"] == "bpe"
    assert AutoTokenizer.from_pretrained(out).convert_ids_to_tokens(0) == "[PAD]"
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [entry for entry in entries if "loss" in entry]
    assert [entry["step"] for entry in losses] == [2, 4]
    assert losses[0]["learning_rate"] == pytest.approx(5e-4)  # inverse_sqrt: the peak at the end of warmup


@pytest.mark.parametrize(
    "words, expected",
    [
        (["mlm"], {"per_device_train_batch_size": 16, "num_train_epochs": 20, "learning_rate": 2e-3,
                   "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "hidden_size": 128}),
        (["mlm", "--per_device_train_batch_size", "8", "--hidden_dropout_prob", "0.1"],
         {"per_device_train_batch_size": 8, "hidden_dropout_prob": 0.1, "num_train_epochs": 20}),
        (["mlm", "--train_file", "corpus.txt"], {"per_device_train_batch_size": 32, "num_train_epochs": 3,
                                                 "learning_rate": 5e-4, "hidden_dropout_prob": None, "hidden_size": None}),
        (["question-answering", "--model_name_or_path", "checkpoint"],
         {"max_seq_length": 384, "per_device_train_batch_size": 32, "hidden_dropout_prob": None}),
    ],
    ids=["built-in corpus", "given options win", "own data", "a task's own default"],
)
def test_defaults_follow_the_run(tmp_path, words, expected):
    """One table (arguments.RUN_DEFAULTS) gives the defaults that depend on the run; a task's own value replaces
    the general one, and an option on the command line wins over both."""
    from transformer_encoder.training.arguments import parse_args

    args = parse_args([*words, "--output_dir", str(tmp_path / "out")])
    assert {name: getattr(args, name) for name in expected} == expected


def test_the_recipe_file_is_one_option_away(tmp_path):
    """recipes/modern.yaml sets the modern architecture (a YAML `true` for a valued option included); options after
    the file win over it."""
    from transformer_encoder.training.arguments import parse_args

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "modern.yaml"
    args = parse_args([str(recipe), "--output_dir", str(tmp_path / "out"), "--num_hidden_layers", "2"])
    assert (args.task, args.hidden_act, args.position_embedding_type, args.norm_first) == ("mlm", "geglu", "rotary", True)
    assert (args.hidden_size, args.num_hidden_layers, args.learning_rate) == (256, 2, 5e-4)


def card_settings(folder: Path) -> dict:
    return json.loads((folder / "README.md").read_text().split("## Training settings")[1].split("```json")[1].split("```")[0])


@pytest.mark.parametrize("processes", [1, 2])
def test_mlm_streaming(tmp_path, corpus, processes):
    out = tmp_path / "stream"
    cli("mlm", "--train_file", corpus, "--output_dir", out, "--streaming", "--max_train_steps", 3, *TINY_MODEL,
        **(TWO_PROCESSES if processes == 2 else {}))
    assert json.loads((out / "all_results.json").read_text())["train_steps"] == 3
    assert card_settings(out)["num_processes"] == processes


def sentiment_csv(folder: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = ["sentence,label"]
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(WORDS, k=6) + [("good" if label else "bad")] + rng.choices(WORDS, k=3)
        rows.append(f"{' '.join(words)},{'positive' if label else 'negative'}")
    path = folder / f"sentiment_{seed}.csv"
    path.write_text("\n".join(rows))
    return path


def test_sequence_classification_fine_tunes_a_pretrained_checkpoint(tmp_path, pretrained):
    out = tmp_path / "cls"
    cli(
        "sequence-classification", "--model_name_or_path", pretrained,
        "--train_file", sentiment_csv(tmp_path, 160, 0), "--validation_file", sentiment_csv(tmp_path, 40, 1),
        "--output_dir", out, "--num_train_epochs", 8, "--learning_rate", 3e-3, "--per_device_train_batch_size", 16,
        "--hidden_dropout_prob", 0.05, "--hidden_size", 32,  # a new dropout rate; the checkpoint's own size
    )
    results = json.loads((out / "all_results.json").read_text())
    assert results["accuracy"] >= 0.9, results  # one word decides the label: a working pipeline learns it
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["hidden_dropout_prob"] == 0.05 and config["attention_probs_dropout_prob"] == 0.1
    classify = pipeline("text-classification", model=str(out))
    assert classify("the cat sat good on the mat")[0]["label"] == "positive"


def test_token_classification_with_string_tags(tmp_path, pretrained):
    rng = random.Random(0)

    def sentences(n):
        rows = []
        for _ in range(n):
            tokens = rng.choices(WORDS, k=8)
            tags = ["O"] * 8
            start = rng.randint(0, 5)
            tokens[start:start + 2], tags[start:start + 2] = ["mr", "smith"], ["B-PER", "I-PER"]
            rows.append(json.dumps({"tokens": tokens, "ner_tags": tags}))
        return "\n".join(rows)

    (tmp_path / "train.jsonl").write_text(sentences(160))
    (tmp_path / "dev.jsonl").write_text(sentences(40))
    out = tmp_path / "ner"
    cli(
        "token-classification", "--model_name_or_path", pretrained, "--train_file", tmp_path / "train.jsonl",
        "--validation_file", tmp_path / "dev.jsonl", "--output_dir", out, "--num_train_epochs", 8,
        "--learning_rate", 3e-3, "--per_device_train_batch_size", 16,
    )
    results = json.loads((out / "all_results.json").read_text())
    assert {"f1", "precision", "recall", "f1_PER", "accuracy"} <= results.keys()
    assert results["f1_PER"] >= 0.9, results
    # labels sit on each word's first piece: the pipeline reads words the same way with "first"
    entities = pipeline("token-classification", model=str(out), aggregation_strategy="first")("the cat saw mr smith")
    assert [(e["entity_group"], e["word"]) for e in entities] == [("PER", "mr smith")]


# ---------------------------------------------------------------------------------------------------------------------
# Sentence pairs: classification, regression, NLI → zero-shot
# ---------------------------------------------------------------------------------------------------------------------

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "stsb").is_dir(), reason=f"no real data beside this checkout ({SHARED_DATA} is missing)"
)


def stsb_slice(folder: Path, split: str, start: int, n: int) -> Path:
    """n real STS-B pairs (sentence1, sentence2, label 0-5) from ../shared/data."""
    with (SHARED_DATA / "stsb" / f"{split}.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    path = folder / f"stsb_{split}_{start}_{n}.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *rows[1 + start : 1 + start + n]])
    return path


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, pretrained) -> Path:
    """The tiny pretrained checkpoint with BERT's two segment embeddings added (type_vocab_size=2)."""
    from transformers import AutoModelForMaskedLM

    folder = tmp_path_factory.mktemp("runs") / "segmented"
    AutoModelForMaskedLM.from_pretrained(pretrained, type_vocab_size=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(pretrained).save_pretrained(folder)
    return folder


@needs_shared_data
def test_sentence_pair_regression_on_real_stsb(tmp_path, segmented):
    from huggingface_hub import ModelCard
    from scipy import stats
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "stsb"
    validation = stsb_slice(tmp_path, "validation", 0, 96)
    cli("sequence-classification", "--model_name_or_path", segmented, "--train_file", stsb_slice(tmp_path, "train", 0, 256),
        "--validation_file", validation, "--output_dir", out, "--num_train_epochs", 2, "--learning_rate", 1e-3,
        "--per_device_train_batch_size", 16, "--max_seq_length", 64)
    results = json.loads((out / "all_results.json").read_text())
    assert {"mse", "pearson", "spearmanr", "eval_loss"} <= results.keys() and "accuracy" not in results
    # the pairs reached the model as pairs, with segments; the saved tokenizer gives the same inputs to pipelines
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "token_type_ids" in tokenizer.model_input_names
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    with validation.open(newline="") as f:
        rows = list(csv.DictReader(f))
    inputs = tokenizer([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], truncation=True,
                       max_length=64, padding=True, return_tensors="pt")
    assert (inputs["token_type_ids"] == 1).any()
    with torch.no_grad():
        predicted = model(**inputs).logits.squeeze(-1).tolist()
    gold = [float(r["label"]) for r in rows]
    assert results["pearson"] == pytest.approx(stats.pearsonr(predicted, gold).statistic, abs=1e-4)
    assert results["spearmanr"] == pytest.approx(stats.spearmanr(predicted, gold).statistic, abs=1e-4)
    assert results["mse"] == pytest.approx(sum((p - g) ** 2 for p, g in zip(predicted, gold)) / len(gold), rel=1e-4)
    card = (out / "README.md").read_text()
    assert "text = `sentence1`, text_pair = `sentence2`, label = `label`" in card
    assert ModelCard.load(out / "README.md").data.eval_results[0].metric_type == "spearmanr"


def tiny_tokenizer():
    from transformer_encoder.training.tokenizer import train_tokenizer

    return train_tokenizer(Dataset.from_dict({"text": [" ".join(WORDS)] * 10}), "text", "wordpiece", 100, 64)


@pytest.mark.parametrize("segments", [2, 0])
def test_a_pair_is_encoded_as_cls_a_sep_b_sep(segments):
    from types import SimpleNamespace

    from transformer_encoder.training.run import match_segment_inputs
    from transformer_encoder.training.tasks.sequence_classification import TASK

    tokenizer = tiny_tokenizer()
    match_segment_inputs(tokenizer, SimpleNamespace(type_vocab_size=segments))
    columns = {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    encode = TASK.encoder(tokenizer, columns, None, SimpleNamespace(max_seq_length=12))
    batch = encode({"sentence1": ["the cat sat", "the " * 20], "sentence2": ["a dog", "a dog ran"], "label": [1.0, 2.5]})
    ids = tokenizer.convert_tokens_to_ids
    assert batch["input_ids"][0] == ids(["[CLS]", "the", "cat", "sat", "[SEP]", "a", "dog", "[SEP]"])
    assert batch["labels"] == [1.0, 2.5]
    # too long: the longer text loses tokens first, the shorter is kept whole
    assert batch["input_ids"][1] == ids(["[CLS]"] + ["the"] * 6 + ["[SEP]", "a", "dog", "ran", "[SEP]"])
    if segments:
        assert batch["token_type_ids"][0] == [0, 0, 0, 0, 0, 1, 1, 1]
    else:  # a model without segment embeddings is never given segment ids
        assert "token_type_ids" not in batch


@pytest.mark.parametrize(
    "columns, options, expected",
    [
        (["sentence1", "sentence2", "label", "idx"], {}, {"text": "sentence1", "text_pair": "sentence2"}),
        (["premise", "hypothesis", "label"], {}, {"text": "premise", "text_pair": "hypothesis"}),
        (["question", "sentence", "label"], {}, {"text": "question", "text_pair": "sentence"}),
        (["question1", "question2", "label"], {}, {"text": "question1", "text_pair": "question2"}),
        (["sentence", "label"], {}, {"text": "sentence"}),
        (["a", "b", "label"], {"text_column_name": "b", "text_pair_column_name": "a"}, {"text": "b", "text_pair": "a"}),
    ],
)
def test_pair_columns_are_found_as_run_glue_finds_them(columns, options, expected):
    from argparse import Namespace

    from accelerate import PartialState
    from transformer_encoder.training.tasks.sequence_classification import TASK

    PartialState()  # the task logs through accelerate
    values = {name: (["1"] if name in ("label", "idx") else ["some text"]) for name in columns}
    raw = DatasetDict(train=Dataset.from_dict(values))
    args = Namespace(**{"text_column_name": None, "text_pair_column_name": None, "label_column_name": None, **options})
    assert TASK.columns(args, raw) == {**expected, "label": "label"}


@needs_shared_data
def test_an_unused_text_column_is_named_in_the_log(tmp_path, pretrained):
    out = tmp_path / "single"
    result = cli("sequence-classification", "--model_name_or_path", pretrained, "--train_file",
                 stsb_slice(tmp_path, "train", 0, 32), "--text_column_name", "sentence1", "--output_dir", out,
                 "--max_train_steps", 1, "--max_seq_length", 32)
    assert "the text column(s) 'sentence2' are left unused" in result.stderr


def nli_jsonl(folder: Path, n: int, seed: int) -> Path:
    """Premises about one topic; the hypothesis "This example is {topic}." (the zero-shot pipeline's own
    template) is entailment when the topic is the premise's, else contradiction; neutral for a premise without
    a topic."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic, other = rng.sample(TOPICS, 2)
        premise = rng.choices(WORDS, k=4) + [topic] + rng.choices(WORDS, k=3)
        label = rng.choice(["entailment", "contradiction", "neutral"])
        if label == "neutral":
            premise = rng.choices(WORDS, k=8)
        hypothesis = f"This example is {topic if label != 'contradiction' else other}."
        rows.append(json.dumps({"premise": " ".join(premise), "hypothesis": hypothesis, "label": label}))
    path = folder / f"nli_{seed}.jsonl"
    path.write_text("\n".join(rows))
    return path


TOPICS = ["sports", "music", "food", "weather"]


def test_zero_shot_classification_after_nli_fine_tuning(tmp_path, segmented):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "nli"
    cli("sequence-classification", "--model_name_or_path", segmented, "--train_file", nli_jsonl(tmp_path, 600, 0),
        "--validation_file", nli_jsonl(tmp_path, 90, 1), "--output_dir", out, "--num_train_epochs", 6,
        "--learning_rate", 3e-3, "--per_device_train_batch_size", 32, "--max_seq_length", 32)
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["contradiction", "entailment", "neutral"]
    classifier = pipeline("zero-shot-classification", model=str(out))
    text = "the cat sat on the mat with music"
    result = classifier(text, candidate_labels=["sports", "music", "food"])
    # transformers found the entailment label in id2label: its scores are the softmax of the entailment logits
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    entailment = model.config.label2id["entailment"]
    hypotheses = [f"This example is {label}." for label in ["sports", "music", "food"]]
    with torch.no_grad():
        logits = model(**tokenizer([text] * 3, hypotheses, padding=True, return_tensors="pt")).logits[:, entailment]
    expected = dict(zip(["sports", "music", "food"], logits.softmax(0).tolist()))
    assert dict(zip(result["labels"], result["scores"])) == pytest.approx(expected, abs=1e-4)
    # it learnt something (a topic-less premise is neutral), if not yet to match topics across the pair
    assert json.loads((out / "all_results.json").read_text())["accuracy"] > 0.5


# ---------------------------------------------------------------------------------------------------------------------
# Exactness: processes, accumulation, resume
# ---------------------------------------------------------------------------------------------------------------------

# Splitting a batch across processes or micro-batches gives the same weights in fp32 (the README's guarantee), so these
# runs say fp32: left to itself, pretraining picks bf16 on a CPU that computes it, where the split changes rounding.
EXACT = [*TINY_MODEL, "--hidden_dropout_prob", 0, "--attention_probs_dropout_prob", 0, "--max_train_steps", 4,
         "--logging_steps", 1, "--mixed_precision", "no"]


def test_two_processes_and_accumulation_match_one_process(tmp_path, corpus):
    common = ["mlm", "--train_file", corpus, *EXACT]
    cli(*common, "--output_dir", tmp_path / "one", "--per_device_train_batch_size", 8)
    cli(*common, "--output_dir", tmp_path / "accumulated", "--per_device_train_batch_size", 4,
        "--gradient_accumulation_steps", 2)
    two = cli(*common, "--output_dir", tmp_path / "two", "--per_device_train_batch_size", 4, **TWO_PROCESSES)
    assert card_settings(tmp_path / "two")["num_processes"] == 2, two.stderr[-2000:]
    reference = final_weights(tmp_path / "one")
    assert max_difference(final_weights(tmp_path / "accumulated"), reference) < 1e-5
    assert max_difference(final_weights(tmp_path / "two"), reference) < 1e-5
    # the logged loss is the global batch's, whatever the split
    losses = {name: logged_losses(tmp_path / name) for name in ("one", "accumulated", "two")}
    assert losses["two"] == pytest.approx(losses["one"], abs=1e-4)
    assert losses["accumulated"] == pytest.approx(losses["one"], abs=1e-4)


@pytest.mark.skipif(not detects_native_bf16(), reason="this CPU emulates bf16: slow, and not a precision to train in")
def test_under_bf16_the_split_moves_the_weights_less_than_bf16_itself(tmp_path, corpus):
    """Under bf16 autocast, splitting the batch changes the rounding, so the weights are no longer equal. The stated
    tolerance: they move from the one-process bf16 run by less than half as far as bf16 moves that run from fp32
    (measured on an AMX Xeon: 0.16 of it), and the logged losses agree to 1e-3."""
    common = ["mlm", "--train_file", corpus, *EXACT[:-2]]
    for name, options in {
        "fp32": ["--mixed_precision", "no", "--per_device_train_batch_size", 8],
        "one": ["--mixed_precision", "bf16", "--per_device_train_batch_size", 8],
        "accumulated": ["--mixed_precision", "bf16", "--per_device_train_batch_size", 4, "--gradient_accumulation_steps", 2],
    }.items():
        cli(*common, "--output_dir", tmp_path / name, *options)
    cli(*common, "--output_dir", tmp_path / "two", "--mixed_precision", "bf16", "--per_device_train_batch_size", 4,
        **TWO_PROCESSES)
    weights = {name: final_weights(tmp_path / name) for name in ("fp32", "one", "accumulated", "two")}
    bf16_effect = distance(weights["one"], weights["fp32"])
    for split in ("accumulated", "two"):
        assert distance(weights[split], weights["one"]) < 0.5 * bf16_effect, split
        assert logged_losses(tmp_path / split) == pytest.approx(logged_losses(tmp_path / "one"), abs=1e-3)


def distance(a: dict, b: dict) -> float:
    """The Euclidean distance between two sets of weights, all tensors together."""
    return torch.cat([(a[k].float() - b[k].float()).flatten() for k in a]).norm().item()


def logged_losses(folder: Path) -> list:
    return [json.loads(line).get("loss") for line in (folder / "metrics.jsonl").read_text().splitlines()][:4]


def test_the_main_job_repeats_bit_for_bit_tokenizer_included(tmp_path):
    """The main job's command (shortened) twice, each a process of its own: the same tokenizer (trained afresh)
    and the same weights, with dropout on and evaluations in between."""
    for run in ("a", "b"):  # fresh processes: string hashing, and so any set order, differs between them
        cli("mlm", "--output_dir", tmp_path / run, "--max_train_steps", 6, "--eval_steps", 2, launcher=FRESH_PROCESS)
    for name in ("tokenizer.json", "model.safetensors"):
        digests = {hashlib.sha256((tmp_path / run / name).read_bytes()).hexdigest() for run in ("a", "b")}
        assert len(digests) == 1, name


def test_streaming_on_two_processes_matches_one_process(tmp_path, corpus):
    """Each process reads its own part of the stream: together they see what one process sees."""
    common = ["mlm", "--train_file", corpus, "--streaming", *EXACT]
    cli(*common, "--output_dir", tmp_path / "one", "--per_device_train_batch_size", 8)
    cli(*common, "--output_dir", tmp_path / "two", "--per_device_train_batch_size", 4, **TWO_PROCESSES)
    assert max_difference(final_weights(tmp_path / "two"), final_weights(tmp_path / "one")) < 1e-5


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, corpus):
    common = ["mlm", "--train_file", corpus, *TINY_MODEL, "--max_train_steps", 6, "--checkpointing_steps", 3,
              "--checkpoints_total_limit", 0]  # default dropout: the RNG state is restored too
    cli(*common, "--output_dir", tmp_path / "whole")

    interrupted = tmp_path / "interrupted"
    cli(*common, "--output_dir", interrupted)
    # The process dies after step 3's checkpoint: its later state is gone, a checkpoint was cut mid-write, and
    # another has no trainer_state.json. Resuming must take step_3.
    for path in [interrupted / "checkpoints" / "step_6", interrupted / "model.safetensors"]:
        subprocess.run(["rm", "-rf", str(path)], check=True)
    (interrupted / "checkpoints" / ".tmp-step_9").mkdir()
    (interrupted / "checkpoints" / "step_12").mkdir()
    (interrupted / "checkpoints" / "step_12" / "model.safetensors").write_bytes(b"half")
    result = cli(*common, "--output_dir", interrupted, "--resume_from_checkpoint", "latest")
    assert "Resumed from" in result.stdout + result.stderr and "step_3" in result.stdout + result.stderr
    assert max_difference(final_weights(interrupted), final_weights(tmp_path / "whole")) == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one paragraph, exit code 2, before any step, nothing in output_dir lost
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def run_main(capsys):
    from accelerate.state import AcceleratorState

    def run(*args):
        AcceleratorState._reset_state(True)
        with pytest.raises(SystemExit) as exit_info:
            training_run.main([str(a) for a in args])
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    return run


def test_missing_file(run_main, tmp_path):
    err = run_main("mlm", "--train_file", tmp_path / "nope.txt", "--output_dir", tmp_path / "out")
    assert "nope.txt does not exist" in err
    assert not (tmp_path / "out").exists()


def test_missing_hub_dataset(run_main, tmp_path):
    err = run_main("mlm", "--dataset_name", "no-one/no-such-dataset", "--output_dir", tmp_path / "out")
    assert "Could not load the dataset 'no-one/no-such-dataset'" in err
    assert not (tmp_path / "out").exists()


def test_missing_text_column_lists_the_columns(run_main, tmp_path):
    (tmp_path / "d.csv").write_text("review,stars\ngood film,5\n")
    err = run_main("mlm", "--train_file", tmp_path / "d.csv", "--output_dir", tmp_path / "out", *TINY_MODEL)
    assert "no text column 'text'" in err and "review, stars" in err and "--text_column_name" in err


def test_missing_label_column(run_main, tmp_path, pretrained):
    path = sentiment_csv(tmp_path, 10, 0)
    err = run_main("sequence-classification", "--model_name_or_path", pretrained, "--train_file", path,
                   "--label_column_name", "stars", "--output_dir", tmp_path / "out")
    assert "no label column 'stars'" in err and "sentence, label" in err


def test_empty_dataset(run_main, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    err = run_main("mlm", "--train_file", tmp_path / "empty.txt", "--output_dir", tmp_path / "out", *TINY_MODEL)
    assert "empty" in err


def test_labels_that_do_not_match_a_fine_tuned_checkpoint(run_main, tmp_path, pretrained):
    from transformers import AutoModelForSequenceClassification

    three_labels = AutoModelForSequenceClassification.from_pretrained(pretrained, num_labels=3)
    three_labels.save_pretrained(tmp_path / "three")
    AutoTokenizer.from_pretrained(pretrained).save_pretrained(tmp_path / "three")
    err = run_main("sequence-classification", "--model_name_or_path", tmp_path / "three",
                   "--train_file", sentiment_csv(tmp_path, 10, 0), "--output_dir", tmp_path / "out")
    assert "fine-tuned with 3 labels" in err and "--ignore_mismatched_sizes" in err


def test_output_dir_of_another_run_is_refused_and_kept(run_main, tmp_path, corpus):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"precious")
    err = run_main("mlm", "--train_file", corpus, "--output_dir", out, *TINY_MODEL)
    assert "already holds files" in err and "--overwrite_output_dir" in err
    assert (out / "model.safetensors").read_bytes() == b"precious"


@pytest.mark.parametrize("target", ["latest", "no-such-checkpoint"])
def test_resume_from_nothing(run_main, tmp_path, corpus, target):
    err = run_main("mlm", "--train_file", corpus, "--output_dir", tmp_path / "out", "--resume_from_checkpoint",
                   tmp_path / target if target != "latest" else target, *TINY_MODEL)
    assert "--resume_from_checkpoint" in err


@pytest.mark.parametrize("option, value, theirs", [("--hidden_size", 64, 32), ("--norm_first", "true", False)])
def test_an_option_that_would_change_a_checkpoints_architecture(run_main, tmp_path, pretrained, option, value, theirs):
    err = run_main("sequence-classification", "--model_name_or_path", pretrained, "--train_file",
                   sentiment_csv(tmp_path, 40, 0), "--output_dir", tmp_path / "out", option, value)
    assert f"{option} {'True' if value == 'true' else value}: the model comes from {pretrained}" in err
    assert f"whose {option[2:]} is {theirs}" in err
    assert not (tmp_path / "out").exists()


def test_streaming_needs_max_train_steps(run_main, tmp_path, corpus):
    err = run_main("mlm", "--train_file", corpus, "--output_dir", tmp_path / "out", "--streaming")
    assert "--max_train_steps" in err


def test_unknown_task_and_help():
    result = cli("--help")
    for option in ("--dataset_name", "--train_file", "--mlm_probability", "--resume_from_checkpoint", "--push_to_hub",
                   "--lr_scheduler_type", "--hidden_size", "--report_to"):
        assert option in result.stdout
    bad = cli("pretrain", check=False, launcher=FRESH_PROCESS)
    assert bad.returncode == 2 and "unknown task 'pretrain'" in bad.stderr


def test_the_registry_is_what_the_cli_offers():
    """Every task of the registry is a task of the command line, named in --help, its options under its name."""
    import argparse

    from transformer_encoder.training.tasks import TASKS

    assert {"mlm", "rtd", "sequence-classification", "token-classification"} <= set(TASKS)
    result = cli("--help")
    usage = result.stdout.splitlines()[0]
    for name, task in TASKS.items():
        assert task.name == name and name in usage
        assert task.auto_class.__name__.startswith("AutoModelFor") and task.metric and all(task.card_tags())
        group = argparse.ArgumentParser().add_argument_group("probe")
        task.add_arguments(group)
        if group._group_actions:
            section = result.stdout.split(f"{name} ({task.title.lower()}):")[1]
            assert all(action.option_strings[0] in section for action in group._group_actions)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--learning_rate", "-1", "argument --learning_rate: must be > 0, got -1"),
        ("--learning_rate", "nan", "argument --learning_rate: must be > 0, got nan"),
        ("--num_warmup_steps", "-3", "argument --num_warmup_steps: must be >= 0, got -3"),
        ("--mlm_probability", "1.5", "argument --mlm_probability: must be between 0 and 1 (exclusive), got 1.5"),
        ("--hidden_dropout_prob", "1", "argument --hidden_dropout_prob: must be at least 0 and below 1, got 1"),
        ("--per_device_train_batch_size", "0", "argument --per_device_train_batch_size: must be > 0, got 0"),
        ("--max_train_steps", "2.5", "argument --max_train_steps: expected an integer, got '2.5'"),
        ("--validation_split_percentage", "100", "must be a percentage from 0 to 99, got 100"),
        ("--checkpointing_steps", "0", "--checkpointing_steps takes a number of steps or 'epoch', got '0'"),
        ("--max_seq_length", "4", "--max_seq_length=4 is too short"),
    ],
)
def test_bad_numbers_stop_with_one_line(run_main, tmp_path, corpus, option, value, message):
    out = tmp_path / "out"
    err = run_main("mlm", "--train_file", corpus, "--output_dir", out, option, value)
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "rows, message",
    [
        (["0", "1", "", "1", "", "0"], "2 of 6 train examples have no label in column 'label' (rows 3, 5;"),
        (["0", "1", "positive", "1", "0", "negative"], "mixes numbers (0, 1) and words (negative, positive)"),
    ],
)
def test_bad_labels_are_refused_before_anything_is_written(run_main, tmp_path, pretrained, rows, message):
    path = tmp_path / "bad.csv"
    path.write_text("sentence,label\n" + "\n".join(f"the cat sat number {i},{label}" for i, label in enumerate(rows)))
    out = tmp_path / "out"
    err = run_main("sequence-classification", "--model_name_or_path", pretrained, "--train_file", path,
                   "--validation_file", path, "--output_dir", out)
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", b"", "The train file {path} is empty"),
        ("blank.txt", b"\n  \n", "The train file {path} is empty"),
        ("header.csv", b"sentence,label\n", "The train file {path} is empty: it has only a header"),
        ("latin1.csv", "sentence,label\nun café noir,1\n".encode("latin-1"), "not UTF-8 text: byte 0xe9 at offset 21"),  # 15 bytes of header, 6 of "un caf"
    ],
)
def test_bad_files_are_named(run_main, tmp_path, pretrained, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    err = run_main("sequence-classification", "--model_name_or_path", pretrained, "--train_file", path,
                   "--output_dir", tmp_path / "out")
    assert message.format(path=path) in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_an_output_dir_that_is_a_file(run_main, tmp_path, corpus):
    (tmp_path / "out").write_text("notes")
    err = run_main("mlm", "--train_file", corpus, "--output_dir", tmp_path / "out", *TINY_MODEL)
    assert "--output_dir" in err and "is a file, not a folder" in err
    assert (tmp_path / "out").read_text() == "notes"


def test_a_refused_run_writes_nothing_and_the_corrected_rerun_works(run_main, tmp_path, corpus):
    out = tmp_path / "out"
    err = run_main("mlm", "--train_file", corpus, "--output_dir", out, *TINY_MODEL, "--max_seq_length", 100000)
    assert "shorter than one block of --max_seq_length=100000" in err
    assert not out.exists() or not any(out.iterdir())  # not even the tokenizer it trained
    cli("mlm", "--train_file", corpus, "--output_dir", out, *TINY_MODEL, "--max_train_steps", 1)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()


def test_ctrl_c_saves_a_checkpoint_and_prints_the_command_that_resumes(tmp_path, corpus):
    import shlex
    import signal
    import time

    out = tmp_path / "out"
    command = [sys.executable, "-m", "transformer_encoder.training", "mlm", "--train_file", str(corpus), "--output_dir",
               str(out), *map(str, TINY_MODEL), "--max_train_steps", "100000", "--logging_steps", "1"]
    env = {**os.environ, **CLI_ENVIRONMENT}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    resume = stderr.split("Resume with:\n")[1].strip().splitlines()[0]
    assert resume.startswith("transformer-encoder train mlm ") and resume.endswith(
        "--resume_from_checkpoint latest")
    steps = [int(p.name.removeprefix("step_")) for p in (out / "checkpoints").iterdir()]
    assert len(steps) == 1 and (out / "checkpoints" / f"step_{steps[0]}" / "trainer_state.json").exists()
    # the printed command resumes there (here with fewer steps to go)
    words = shlex.split(resume)
    result = cli(*words[2:], "--max_train_steps", steps[0] + 2)  # words[:2]: transformer-encoder train
    assert f"step_{steps[0]}" in result.stderr + result.stdout
    assert json.loads((out / "all_results.json").read_text())["train_steps"] == steps[0] + 2


# ---------------------------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------------------------


def test_push_to_hub_uploads_model_tokenizer_code_and_card_only(tmp_path, pretrained):
    from huggingface_hub import HfApi, ModelCard

    uploaded = tmp_path / "uploaded"

    folder = tmp_path / "run"
    subprocess.run(["cp", "-r", str(pretrained), str(folder)], check=True)
    (folder / "checkpoints" / "step_3").mkdir(parents=True)
    (folder / "checkpoints" / "step_3" / "optimizer.bin").write_bytes(b"x")
    (folder / "logs").mkdir()
    (folder / "logs" / "events").write_bytes(b"x")
    args = mock.Mock(hub_token=None, hub_model_id="me/tiny")
    with (
        mock.patch.object(HfApi, "create_repo", return_value=mock.MagicMock(repo_id="me/tiny")),
        mock.patch.object(HfApi, "create_commit", commit_into(uploaded)),
        mock.patch("huggingface_hub.hf_api.is_xet_available", return_value=False),  # the one-commit upload path
        mock.patch.object(HfApi, "_validate_yaml"),  # a POST to the Hub; the card is parsed offline below
    ):
        assert training_run.push_folder(folder, args) == "me/tiny"
    names = {p.relative_to(uploaded).as_posix() for p in uploaded.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "modeling_transformer_encoder.py",
            "configuration_transformer_encoder.py"} <= names
    assert not any(n.startswith(("checkpoints/", "logs/")) for n in names)
    card = ModelCard.load(uploaded / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "fill-mask"
    assert "transformer-encoder" in card.data.tags and card.data.eval_results[0].metric_type == "perplexity"


def test_masking_follows_the_80_10_10_rule_and_is_seeded_per_block():
    from transformer_encoder.training.tasks.mlm import SeededMaskingCollator
    from transformer_encoder.training.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(Dataset.from_dict({"text": [" ".join(WORDS)] * 10}), "text", "wordpiece", 100, 64)
    rng = random.Random(0)
    blocks = [{"input_ids": [tokenizer.cls_token_id] + [rng.randrange(5, len(tokenizer)) for _ in range(62)]
               + [tokenizer.sep_token_id], "example_id": i} for i in range(400)]
    collator = SeededMaskingCollator(tokenizer, mlm_probability=0.15, seed=3)
    batch = collator(blocks)
    original = torch.tensor([b["input_ids"] for b in blocks])
    masked = batch["labels"] != -100
    assert masked[:, [0, -1]].sum() == 0  # never [CLS] or [SEP]
    assert abs(masked.float().mean().item() - 0.15 * 62 / 64) < 0.01
    became_mask = (batch["input_ids"] == tokenizer.mask_token_id) & masked
    unchanged = (batch["input_ids"] == original) & masked
    assert abs(became_mask.sum().item() / masked.sum().item() - 0.8) < 0.03
    assert abs(unchanged.sum().item() / masked.sum().item() - 0.1 - 0.1 / len(tokenizer)) < 0.03
    torch.testing.assert_close(batch["labels"][masked], original[masked])
    # the same block is masked the same way in any batch; another epoch masks it differently
    alone = collator([blocks[7]])
    torch.testing.assert_close(alone["input_ids"][0], batch["input_ids"][7])
    collator.epoch = 1
    assert not torch.equal(collator([blocks[7]])["labels"][0], batch["labels"][7])


DATA = ["--train_file", "corpus.txt"]


@pytest.mark.parametrize(
    "task, native, environment, options, expected",
    [
        ("mlm", True, {}, DATA, "bf16"),
        ("rtd", True, {}, DATA, "bf16"),
        ("mlm", False, {}, DATA, None),
        ("mlm", True, {"ACCELERATE_MIXED_PRECISION": "no"}, DATA, None),  # accelerate launch / config decides
        ("mlm", True, {}, [*DATA, "--mixed_precision", "no"], "no"),
        ("sequence-classification", True, {}, ["--model_name_or_path", "x"], None),
        ("mlm", None, {BF16_OVERRIDE: "1"}, DATA, "bf16"),  # the detection overridden, as the suite's flipped run does
        ("mlm", None, {BF16_OVERRIDE: "0"}, DATA, None),
        ("mlm", True, {}, [], None),  # the built-in corpus's small model: fp32 even where bf16 is native
        ("mlm", True, {}, ["--mixed_precision", "bf16"], "bf16"),
    ],
)
def test_pretraining_uses_bf16_where_the_cpu_computes_it_natively(task, native, environment, options, expected):
    """native: what the detection is made to say (None: left alone, the environment decides)."""
    from transformer_encoder.training import arguments

    detection = mock.patch("transformer_encoder.cpu.detects_native_bf16", return_value=native)
    with (
        detection if native is not None else contextlib.nullcontext(),
        mock.patch.object(arguments.torch.cuda, "is_available", return_value=False),
        mock.patch.dict(os.environ, environment),
    ):
        for name in ("ACCELERATE_MIXED_PRECISION", BF16_OVERRIDE):
            if name not in environment:
                os.environ.pop(name, None)
        args = arguments.parse_args([task, "--output_dir", "unused", *options])
    assert args.mixed_precision == expected
    if task == "mlm" and options == DATA and not environment:
        assert ("natively" in args.precision_note) if native else ("no native bf16" in args.precision_note)
    if not options:
        assert "built-in corpus" in args.precision_note


def test_the_log_says_which_precision_the_cpu_chose(corpus, tmp_path):
    from transformer_encoder.cpu import cpu_computes_bf16

    result = cli("mlm", "--train_file", corpus, "--output_dir", tmp_path / "out", "--max_train_steps", 1, *TINY_MODEL)
    note = "Precision: bf16 autocast" if cpu_computes_bf16() else "Precision: fp32: this CPU has no native bf16"
    assert note in result.stdout + result.stderr
    settings = card_settings(tmp_path / "out")
    assert settings["mixed_precision"] == ("bf16" if cpu_computes_bf16() else "no")

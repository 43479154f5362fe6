"""The distill task: the loss against the formula, a student cut from its teacher, the transfer set, and runs end to
end on real slices (SST-2 sentences, STS-B pairs) with the converted all-MiniLM-L6-v2 as teacher."""

import copy
import json
import math
import random
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from helpers import TWO_PROCESSES, tiny_config, train_in_process
from safetensors.torch import load_file
from test_training import card_settings, cli, final_weights, max_difference
from transformer_encoder.benchmarks import DATA_DIR, students
from transformer_encoder.training.errors import UsageError
from transformer_encoder.training.student_init import (
    check_student_shape,
    init_from_teacher,
    kept_layers,
    stream_projection,
)
from transformer_encoder.training.tasks.distill import distillation_loss, perturbed
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import transformer_encoder  # noqa: F401  (registers the Auto classes)
from transformer_encoder import TransformerEncoderForSequenceClassification

needs_data = pytest.mark.skipif(not (DATA_DIR / "README.md").is_file(), reason="no ../shared/data here")


# ---------------------------------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------------------------------


def softmax(row, temperature):
    exps = [math.exp(z / temperature) for z in row]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (2.0, 0.3), (4.0, 1.0), (2.0, 0.0)])
def test_classification_loss_is_the_formula(temperature, alpha):
    student = [[1.0, -0.5, 0.2], [0.3, 0.3, 2.0], [-1.0, 0.0, 1.0]]
    teacher = [[2.0, 0.0, -1.0], [0.0, 1.0, 1.5], [0.5, 0.5, 0.5]]
    labels = [0, 2, -100]  # the third row has no label: the soft term only
    kl = []
    for s, t in zip(student, teacher):
        p_s, p_t = softmax(s, temperature), softmax(t, temperature)
        kl.append(sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)))
    soft = temperature**2 * sum(kl) / 3
    hard = -sum(math.log(softmax(student[i], 1.0)[labels[i]]) for i in (0, 1)) / 2
    loss, got_soft, got_hard = distillation_loss(
        torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), temperature, alpha
    )
    assert got_soft.item() == pytest.approx(soft, rel=1e-5)
    assert got_hard.item() == pytest.approx(hard, rel=1e-5)
    assert loss.item() == pytest.approx(alpha * soft + (1 - alpha) * hard, rel=1e-5)


def test_regression_loss_is_the_formula():
    student, teacher, labels = [[1.0], [2.5], [0.0]], [[1.5], [2.0], [1.0]], [1.0, float("nan"), 0.5]
    soft = (0.25 + 0.25 + 1.0) / 3
    hard = (0.0 + 0.25) / 2  # the NaN row has no label
    loss, got_soft, got_hard = distillation_loss(
        torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), temperature=3.0, alpha=0.25
    )
    assert (got_soft.item(), got_hard.item()) == pytest.approx((soft, hard))
    assert loss.item() == pytest.approx(0.25 * soft + 0.75 * hard)


def test_micro_batches_divided_by_the_steps_counts_add_up_to_the_whole_batch():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 2, generator=generator), torch.randn(8, 2, generator=generator)
    labels = torch.tensor([0, 1, -100, 1, -100, -100, 0, 1])
    whole, _, _ = distillation_loss(student, teacher, labels, 2.0, 0.5)
    counts = (torch.tensor(8.0), (labels != -100).sum().float())
    parts = sum(distillation_loss(student[i:i + 4], teacher[i:i + 4], labels[i:i + 4], 2.0, 0.5, counts)[0]
                for i in (0, 4))
    assert parts.item() == pytest.approx(whole.item(), rel=1e-6)


def test_perturbed_copies_mask_words_and_sample_ngrams_reproducibly():
    text = " ".join(f"w{i}" for i in range(12))
    copies = [perturbed(text, "[MASK]", random.Random(seed)) for seed in range(400)]
    assert copies == [perturbed(text, "[MASK]", random.Random(seed)) for seed in range(400)]
    words = [c.split() for c in copies]
    ngrams = [w for w in words if len(w) < 12]
    assert 0.18 < len(ngrams) / len(copies) < 0.32 and all(1 <= len(w) <= 5 for w in ngrams)
    whole = [w for w in words if len(w) == 12]
    masked = sum(word == "[MASK]" for w in whole for word in w) / (12 * len(whole))
    assert 0.07 < masked < 0.13
    assert all(word == "[MASK]" or word == f"w{i}" for w in whole for i, word in enumerate(w))


# ---------------------------------------------------------------------------------------------------------------------
# A student cut from its teacher
# ---------------------------------------------------------------------------------------------------------------------


def classifier(seed=0, **overrides):
    torch.manual_seed(seed)
    options = {"num_labels": 3, "num_hidden_layers": 4, "type_vocab_size": 2, "embedding_layer_norm": True, **overrides}
    config = tiny_config(**options)
    return TransformerEncoderForSequenceClassification(config).eval()


def batch(seed=1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 99, (4, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("norm_first", [False, True])
def test_a_student_of_the_teachers_size_is_the_teacher(norm_first):
    teacher = classifier(norm_first=norm_first)
    student = classifier(seed=1, norm_first=norm_first)
    init_from_teacher(student, teacher, stream_projection(teacher, [batch()], 32))
    assert torch.equal(student(**batch()).logits, teacher(**batch()).logits)


def test_fewer_layers_are_the_teachers_evenly_spaced_layers():
    assert kept_layers(3, 6) == [0, 2, 5] and kept_layers(2, 4) == [0, 3] and kept_layers(1, 6) == [5]
    assert kept_layers(6, 12) == [0, 2, 4, 7, 9, 11] and kept_layers(4, 4) == [0, 1, 2, 3]
    teacher = classifier()
    student = classifier(seed=1, num_hidden_layers=2)
    init_from_teacher(student, teacher, stream_projection(teacher, [batch()], 32))
    teacher.model.layers = torch.nn.ModuleList([teacher.model.layers[0], teacher.model.layers[3]])
    assert torch.equal(student(**batch()).logits, teacher(**batch()).logits)


def test_a_narrower_student_reads_the_stream_through_its_principal_directions():
    teacher = classifier()
    projection = stream_projection(teacher, [batch(seed) for seed in range(4)], 16)
    assert torch.allclose(projection @ projection.T, torch.eye(16), atol=1e-5)  # orthonormal rows
    student = classifier(seed=1, hidden_size=16, num_attention_heads=2, intermediate_size=20)
    init_from_teacher(student, teacher, projection)
    # The student's token embeddings are the teacher's seen through P, and it keeps its teacher's 2 strongest heads
    assert torch.allclose(student.model.embeddings.token_embeddings.weight,
                          teacher.model.embeddings.token_embeddings.weight @ projection.T)
    out_proj = teacher.model.layers[0].attention.out_proj.weight
    head_norms = out_proj.reshape(32, 4, 8).pow(2).sum((0, 2))
    kept = head_norms.topk(2).indices.sort().values
    expected_q = teacher.model.layers[0].attention.q_proj.weight.reshape(4, 8, 32)[kept].reshape(16, 32) @ projection.T
    assert torch.allclose(student.model.layers[0].attention.q_proj.weight, expected_q, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 64, "num_attention_heads": 8}, "hidden_size 64 cannot exceed the teacher's 32"),
        ({"hidden_size": 16, "num_attention_heads": 4, "intermediate_size": 20}, "--num_attention_heads 2"),
        ({"hidden_act": "geglu"}, "leave --hidden_act as the teacher's (relu)"),
    ],
)
def test_a_student_that_cannot_be_cut_from_its_teacher_is_refused(overrides, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_student_shape(classifier(**overrides).config, classifier().config)


# ---------------------------------------------------------------------------------------------------------------------
# Runs end to end
# ---------------------------------------------------------------------------------------------------------------------


def sst2_slice(folder: Path, split: str, start: int, n: int, labelled: bool = True) -> Path:
    """n real SST-2 rows from ../shared/data; without their labels where `labelled` is False."""
    lines = (DATA_DIR / "sst2" / f"{split}.csv").read_text().splitlines()
    rows = lines[1 + start:1 + start + n]
    if not labelled:
        rows = [row.rsplit(",", 1)[0] for row in rows]
    path = folder / f"sst2_{split}_{start}_{n}{'' if labelled else '_unlabelled'}.csv"
    path.write_text("\n".join(["sentence,label" if labelled else "sentence", *rows]))
    return path


def train(*args, check=True):
    result = train_in_process(["distill", *map(str, args)])
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def minilm_teacher(minilm, tmp_path_factory) -> Path:
    """The converted all-MiniLM-L6-v2 fine-tuned on 1,000 SST-2 sentences (two epochs)."""
    if not (DATA_DIR / "README.md").is_file():
        pytest.skip("no ../shared/data here")
    folder = tmp_path_factory.mktemp("runs")
    result = train_in_process([
        "sequence-classification", "--model_name_or_path", minilm[1], "--output_dir", folder / "teacher",
        "--train_file", sst2_slice(folder, "train", 0, 1000), "--validation_file", sst2_slice(folder, "validation", 0, 400),
        "--max_seq_length", "64", "--learning_rate", "1e-4", "--num_train_epochs", "2",
    ])  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return folder / "teacher"


def test_the_teachers_signal_on_unlabelled_text_makes_a_better_student(minilm_teacher, tmp_path):
    """A small student learns 200 labelled SST-2 sentences and 2,000 more that only the teacher labels; dropping the
    teacher's targets (alpha 0) leaves it the 200 labels alone, for the same steps."""
    common = [
        "--teacher_name_or_path", minilm_teacher, "--train_file", sst2_slice(tmp_path, "train", 1000, 200),
        "--unlabeled_file", sst2_slice(tmp_path, "train", 1200, 3000, labelled=False),
        "--validation_file", sst2_slice(tmp_path, "validation", 400, 472), "--max_seq_length", "64",
        "--hidden_size", "64", "--num_hidden_layers", "2", "--max_train_steps", "200", "--learning_rate", "2e-3",
    ]  # fmt: skip
    scores = {}
    for alpha in (0.0, 0.5):
        out = tmp_path / f"alpha{alpha}"
        train(*common, "--alpha", alpha, "--output_dir", out)
        scores[alpha] = json.loads((out / "all_results.json").read_text())
    assert scores[0.5]["teacher_accuracy"] > 0.7, scores  # measured 0.77; the student alone stays at chance (0.50)
    assert scores[0.5]["accuracy"] > scores[0.0]["accuracy"] + 0.1, scores  # measured 0.71

    # the comparison table of benchmarks/students.py, from these runs
    students.main(["--teacher", str(minilm_teacher), "--student", f"distilled={tmp_path / 'alpha0.5'}",
                   "--student", f"no teacher={tmp_path / 'alpha0.0'}", "--out", str(tmp_path / "table"),
                   "--rounds", "1", "--sentences", "32", "--threads", str(torch.get_num_threads())])
    rows = json.loads((tmp_path / "table" / "students.json").read_text())["rows"]
    assert rows["distilled"]["score"] == scores[0.5]["accuracy"] and rows["teacher"]["fp32"]["vs_teacher"] == 1.0
    assert rows["teacher"]["parameters"] > 20e6 and rows["distilled"]["parameters"] < 3e6
    assert rows["distilled"]["fp32"]["sentences_per_s"] > 0 and rows["distilled"]["size"] == "d64, 2 layers"


def tiny_teacher(folder: Path, tokenizer, **head) -> Path:
    """A tiny classifier with BERT's two segments, saved with `tokenizer`: random weights are a teacher too."""
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), type_vocab_size=2, hidden_size=32, **head)
    TransformerEncoderForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer():
    from transformer_encoder.training.tokenizer import train_tokenizer

    if not (DATA_DIR / "README.md").is_file():
        pytest.skip("no ../shared/data here")
    sentences = (DATA_DIR / "sst2" / "train.csv").read_text().splitlines()[1:2000]
    return train_tokenizer(Dataset.from_dict({"text": sentences}), "text", "wordpiece", 600, 64)


@pytest.fixture(scope="module")
def sentiment_teacher(tmp_path_factory, tokenizer) -> Path:
    return tiny_teacher(tmp_path_factory.mktemp("teachers") / "sentiment", tokenizer, id2label={0: "0", 1: "1"})


TINY_STUDENT = ["--hidden_size", "16", "--num_hidden_layers", "1", "--max_seq_length", "32",
                "--per_device_train_batch_size", "8"]


def test_the_student_is_a_classifier_with_the_teachers_labels_tokenizer_and_a_card_naming_it(sentiment_teacher, tmp_path):
    out = tmp_path / "student"
    train("--teacher_name_or_path", sentiment_teacher, "--train_file", sst2_slice(tmp_path, "train", 0, 64),
          "--validation_file", sst2_slice(tmp_path, "validation", 0, 32), "--output_dir", out, *TINY_STUDENT,
          "--augment_copies", 2, "--student_init", "teacher", "--num_attention_heads", 2)
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.id2label == {0: "0", 1: "1"} and student.config.hidden_size == 16
    assert student.config.num_hidden_layers == 1 and student.config.type_vocab_size == 2
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(sentiment_teacher).get_vocab()
    results = json.loads((out / "all_results.json").read_text())
    card = (out / "README.md").read_text()
    assert str(sentiment_teacher) in card and f"accuracy {results['teacher_accuracy']:.4f}" in card
    assert 0 <= results["teacher_accuracy"] <= 1 and results["train_steps"] == 3 * (64 * 3 // 8)  # 3 epochs of 64 rows + 2 copies each


def test_pairs_reach_teacher_and_student_as_pairs(tokenizer, tmp_path):
    """STS-B pairs: the transfer set holds both texts with their segments, and its targets are the teacher's
    scores of the pairs, not of the first sentences."""
    from accelerate import Accelerator
    from transformer_encoder.training import data as training_data
    from transformer_encoder.training.arguments import parse_args
    from transformer_encoder.training.run import match_segment_inputs
    from transformer_encoder.training.tasks import TASKS
    from transformer_encoder.training.tasks.base import starting_config

    teacher_folder = tiny_teacher(tmp_path / "teacher", tokenizer, num_labels=1, problem_type="regression")
    lines = (DATA_DIR / "stsb" / "train.csv").read_text().splitlines()[:41]
    (tmp_path / "pairs.csv").write_text("\n".join(lines))
    args = parse_args(["distill", "--teacher_name_or_path", str(teacher_folder), "--train_file", str(tmp_path / "pairs.csv"),
                       "--output_dir", str(tmp_path / "out"), "--validation_split_percentage", "0"])
    raw = training_data.load_raw_datasets(args, TASKS["distill"])
    tokenizer = copy.deepcopy(tokenizer)
    match_segment_inputs(tokenizer, starting_config(args))  # as the run does: the student is the teacher's kind
    data = TASKS["distill"].prepare(args, raw, tokenizer, Accelerator(cpu=True), starting_config(args))
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_folder).eval()
    row = data.train[3]
    first, second = raw["train"][3]["sentence1"], raw["train"][3]["sentence2"]
    encoded = tokenizer(first, second, return_tensors="pt")
    assert row["input_ids"] == encoded["input_ids"][0].tolist() and 1 in row["token_type_ids"]
    with torch.no_grad():
        expected = teacher(**encoded).logits[0].tolist()
    assert row["teacher_logits"] == pytest.approx(expected, abs=0.05)  # bf16 where the CPU computes it
    assert row["labels"] == pytest.approx(float(raw["train"][3]["label"]))


@pytest.mark.parametrize(
    "case, message",
    [
        ("labels", "predicts the labels ['negative', 'positive'], the data has ['0', '1']"),
        ("regression", "predicts a regression score, the data has the labels ['0', '1']"),
        ("vocabulary", "The run's tokenizer"),
        ("student vocabulary", "The student"),
        ("not a classifier", "is not a fine-tuned sequence classifier"),
        ("no teacher", "distill needs a teacher"),
        ("too wide", "its hidden_size 64 cannot exceed the teacher's 32"),
    ],
)
def test_a_teacher_that_does_not_match_is_refused_before_anything_is_written(case, message, tokenizer, tmp_path):
    from transformers import AutoModelForMaskedLM, BertTokenizerFast

    teachers = tmp_path / "teachers"
    teacher = {
        "labels": lambda: tiny_teacher(teachers, tokenizer, id2label={0: "negative", 1: "positive"}),
        "regression": lambda: tiny_teacher(teachers, tokenizer, num_labels=1, problem_type="regression"),
        "vocabulary": lambda: tiny_teacher(teachers, BertTokenizerFast(vocab_file=None, vocab={
            w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"])}),
            id2label={0: "0", 1: "1"}),
        "not a classifier": lambda: (AutoModelForMaskedLM.from_config(tiny_config(vocab_size=len(tokenizer)))
                                     .save_pretrained(teachers), tokenizer.save_pretrained(teachers), teachers)[-1],
        "student vocabulary": lambda: tiny_teacher(teachers, tokenizer, id2label={0: "0", 1: "1"}),
        "no teacher": lambda: None,
        "too wide": lambda: tiny_teacher(teachers, tokenizer, id2label={0: "0", 1: "1"}),
    }[case]()
    options = ["--teacher_name_or_path", teacher] if teacher else []
    if case == "vocabulary":
        options += ["--tokenizer_name", tiny_teacher(tmp_path / "other", tokenizer)]
    if case == "student vocabulary":  # a student checkpoint with a tokenizer of its own
        options += ["--model_name_or_path", tiny_teacher(tmp_path / "other", BertTokenizerFast(vocab_file=None, vocab={
            w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"])}))]
    if case == "too wide":
        options += ["--student_init", "teacher", "--hidden_size", "64", "--num_attention_heads", "8"]
    out = tmp_path / "out"
    size = TINY_STUDENT[4:] if case == "student vocabulary" else TINY_STUDENT[2:]  # a checkpoint has its size
    result = train(*options, "--train_file", sst2_slice(tmp_path, "train", 0, 32), "--output_dir", out, *size,
                   check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not out.exists()


def test_resume_gives_the_same_weights(sentiment_teacher, tmp_path):
    common = ["--teacher_name_or_path", sentiment_teacher, "--train_file", sst2_slice(tmp_path, "train", 0, 64),
              "--augment_copies", 1, *TINY_STUDENT, "--max_train_steps", 8, "--checkpointing_steps", 4,
              "--checkpoints_total_limit", 0, "--validation_split_percentage", 0]
    train(*common, "--output_dir", tmp_path / "whole")
    train(*common, "--output_dir", tmp_path / "cut")
    (tmp_path / "cut" / "model.safetensors").unlink()
    import shutil

    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_8")
    result = train(*common, "--output_dir", tmp_path / "cut", "--resume_from_checkpoint", "latest")
    assert "step_4" in result.stdout + result.stderr
    whole, resumed = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_two_processes_and_accumulation_match_one_process(sentiment_teacher, tmp_path):
    """The teacher labels its batches on either process alike, and each loss term is normalised by its own count
    over the whole step: rows for the teacher's targets, labelled rows for the labels (the copies have none)."""
    common = ["distill", "--teacher_name_or_path", sentiment_teacher, "--train_file", sst2_slice(tmp_path, "train", 0, 48),
              "--augment_copies", 1, *TINY_STUDENT[:4], "--max_train_steps", 4, "--logging_steps", 1,
              "--validation_split_percentage", 0, "--mixed_precision", "no"]
    cli(*common, "--output_dir", tmp_path / "one", "--per_device_train_batch_size", 8)
    cli(*common, "--output_dir", tmp_path / "accumulated", "--per_device_train_batch_size", 4,
        "--gradient_accumulation_steps", 2)
    cli(*common, "--output_dir", tmp_path / "two", "--per_device_train_batch_size", 4, **TWO_PROCESSES)
    assert card_settings(tmp_path / "two")["num_processes"] == 2
    reference = final_weights(tmp_path / "one")
    assert max_difference(final_weights(tmp_path / "accumulated"), reference) < 1e-5
    assert max_difference(final_weights(tmp_path / "two"), reference) < 1e-5


@pytest.mark.parametrize("name, message", [("nope.csv", "does not exist"), ("rows.xml", "Cannot read --unlabeled_file")])
def test_an_unreadable_unlabeled_file_is_refused_before_anything_is_written(sentiment_teacher, tmp_path, name, message):
    (tmp_path / "rows.xml").write_text("<rows/>")
    out = tmp_path / "out"
    result = train("--teacher_name_or_path", sentiment_teacher, "--train_file", sst2_slice(tmp_path, "train", 0, 32),
                   "--unlabeled_file", tmp_path / name, "--output_dir", out, *TINY_STUDENT, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not out.exists()

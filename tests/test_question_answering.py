"""Extractive question answering: SQuAD's metric on known cases, windows over long contexts, the answer spans
mapped back to characters, and the `question-answering` task trained end to end on questions about real text
(paragraphs of the built-in corpus, CPython's own documentation)."""

import json
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from test_training import cli
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import transformer_encoder  # noqa: F401  (registers the Auto classes)
from transformer_encoder.question_answering import answer, answer_batch, answer_positions, best_spans, make_windows
from transformer_encoder.training.metrics import answer_f1, normalize_answer, squad_scores
from transformer_encoder.training.tokenizer import train_tokenizer

# ---------------------------------------------------------------------------------------------------------------------
# SQuAD's exact match and F1
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, normalized",
    [("The Eiffel Tower!", "eiffel tower"), ("an apple, a pear", "apple pear"), ("  Theory of   the  atom. ", "theory of atom")],
)
def test_normalize_answer_drops_case_punctuation_and_articles(text, normalized):
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    "prediction, golds, exact, f1",
    [
        ("the Eiffel Tower", ["Eiffel Tower."], 100.0, 100.0),  # article and punctuation do not count
        ("Eiffel", ["Eiffel Tower"], 0.0, 100 * 2 * (1 * 0.5) / 1.5),  # precision 1, recall 1/2
        ("tower in Paris", ["the tower", "Paris"], 0.0, 100 * 2 * (1 / 3 * 1) / (4 / 3)),  # the best gold answer: F1 0.5
        ("Paris", ["the tower", "Paris"], 100.0, 100.0),  # several gold answers: the best counts
        ("", [], 100.0, 100.0),  # v2: no answer expected, none given
        ("Paris", [], 0.0, 0.0),  # v2: an answer where there is none
        ("", ["Paris"], 0.0, 0.0),
    ],
)
def test_squad_scores_on_known_cases(prediction, golds, exact, f1):
    scores = squad_scores({"q": prediction}, {"q": golds})
    assert scores == pytest.approx({"exact_match": exact, "f1": f1})


def test_squad_scores_average_over_questions():
    scores = squad_scores({"a": "x y", "b": "z"}, {"a": ["x y"], "b": ["w"]})
    assert scores == pytest.approx({"exact_match": 50.0, "f1": 50.0})
    assert answer_f1("a b c", "c b a") == 1.0  # bag of tokens, as the official script


# ---------------------------------------------------------------------------------------------------------------------
# Windows and spans
# ---------------------------------------------------------------------------------------------------------------------

FILLER = "the cat sat on the mat and then the dog ran under a big tree"


@pytest.fixture(scope="module")
def tokenizer():
    words = FILLER.split() + ["who", "what", "number", "is", "answer", "zebra", "42", "seven"]
    return train_tokenizer(Dataset.from_dict({"text": [" ".join(words)] * 20}), "text", "wordpiece", 200, 64)


def test_windows_overlap_and_place_the_answer_in_the_window_that_holds_it(tokenizer):
    context = f"{FILLER} {FILLER} zebra {FILLER}"
    start = context.index("zebra")
    windows = make_windows(tokenizer, ["what is the answer"], [context], max_length=24, doc_stride=6)
    assert len(windows.example) > 2 and set(windows.example) == {0}
    # neighbouring windows share doc_stride tokens of context
    first = [o for o in windows.offsets[0] if o is not None]
    second = [o for o in windows.offsets[1] if o is not None]
    assert first[-6:] == second[:6]
    starts, ends = answer_positions(windows, [{"text": ["zebra"], "answer_start": [start]}])
    holding = [i for i, offsets in enumerate(windows.offsets) if any(o == (start, start + 5) for o in offsets if o)]
    assert holding and holding[0] > 0  # the answer lies beyond the first window
    for i, (s, e) in enumerate(zip(starts, ends)):
        if i in holding:
            assert windows.offsets[i][s][0] == start and windows.offsets[i][e][1] == start + 5
        else:
            assert s == e == 0  # [CLS]: this window does not hold the answer


def test_best_spans_respect_limits_and_map_back_to_characters(tokenizer):
    context = "the cat sat on the mat"
    windows = make_windows(tokenizer, ["who"], [context], max_length=32, doc_stride=4)
    offsets = windows.offsets[0]
    n = len(offsets)
    start_logits, end_logits = torch.zeros(n), torch.zeros(n)
    cat, mat = [i for i, o in enumerate(offsets) if o and context[o[0]:o[1]] in ("cat", "mat")]
    start_logits[cat], end_logits[mat] = 5.0, 5.0  # the best span, "cat sat on the mat"
    end_logits[cat] = 4.0  # runner-up: "cat"
    spans = best_spans(context, [(start_logits, end_logits, offsets)], n_best_size=5, max_answer_length=30)
    assert spans[0]["answer"] == "cat sat on the mat" and context[spans[0]["start"]:spans[0]["end"]] == spans[0]["answer"]
    assert spans[1]["answer"] == "cat"
    start_p, end_p = start_logits[[o is not None for o in offsets]].softmax(0), end_logits[[o is not None for o in offsets]].softmax(0)
    assert spans[0]["score"] == pytest.approx((start_p.max() * end_p.max()).item())
    # at most 2 tokens: the long span is out
    assert best_spans(context, [(start_logits, end_logits, offsets)], 5, max_answer_length=2)[0]["answer"] == "cat"
    # v2: a [CLS] score above the best span's means no answer
    start_logits[0], end_logits[0] = 6.0, 6.0
    assert best_spans(context, [(start_logits, end_logits, offsets)], 5, 30, allow_no_answer=True)[0]["answer"] == ""
    assert best_spans(context, [(start_logits, end_logits, offsets)], 5, 30, True, null_score_diff_threshold=3)[0][
        "answer"] == "cat sat on the mat"


# ---------------------------------------------------------------------------------------------------------------------
# End to end, on questions about real text
# ---------------------------------------------------------------------------------------------------------------------

NUMBER_QUESTION = "Which number does the text mention?"
QUOTE_QUESTION = "Which name is in quotes?"


def pydoc_questions() -> list[dict]:
    """Two kinds of questions about the paragraphs of CPython's documentation (the built-in training corpus),
    their answers located in the text: the one number a paragraph mentions, and the first quoted name."""
    from transformer_encoder.training.data import embedded_corpus

    rows = []
    for i, paragraph in enumerate(embedded_corpus()["text"]):
        numbers = list(re.finditer(r"\b\d+\b", paragraph))
        if len(numbers) == 1:
            rows.append({"id": f"p{i}-number", "context": paragraph, "question": NUMBER_QUESTION,
                         "answers": {"text": [numbers[0].group()], "answer_start": [numbers[0].start()]}})
        quoted = re.search(r'"([A-Za-z_]\w*)"', paragraph)
        if quoted:
            rows.append({"id": f"p{i}-quote", "context": paragraph, "question": QUOTE_QUESTION,
                         "answers": {"text": [quoted.group(1)], "answer_start": [quoted.start(1)]}})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    rows = pydoc_questions()
    folder = tmp_path_factory.mktemp("qa")
    validation = [r for r in rows if int(r["id"][1:].split("-")[0]) % 5 == 0]
    train = [r for r in rows if int(r["id"][1:].split("-")[0]) % 5 != 0]
    tokenizer = train_tokenizer(Dataset.from_dict({"text": [r["context"] for r in rows] + [NUMBER_QUESTION, QUOTE_QUESTION]}), "text", "wordpiece", 2000, 96)
    tokenizer.save_pretrained(folder / "tokenizer")
    return write_jsonl(folder / "train.jsonl", train), write_jsonl(folder / "validation.jsonl", validation), folder / "tokenizer"


QA_MODEL = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4", "--intermediate_size", "128",
            "--max_seq_length", "96", "--doc_stride", "24", "--per_device_train_batch_size", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, qa_data) -> Path:
    train, validation, tokenizer = qa_data
    out = tmp_path_factory.mktemp("runs") / "qa"
    cli("question-answering", "--tokenizer_name", tokenizer, "--train_file", train, "--validation_file", validation,
        "--output_dir", out, *QA_MODEL, "--num_train_epochs", 6, "--learning_rate", 2e-3, "--num_warmup_steps", 20)
    return out


def test_question_answering_trains_and_evaluates_with_squad_metrics(trained, qa_data):
    results = json.loads((trained / "all_results.json").read_text())
    assert {"exact_match", "f1"} <= results.keys()
    assert results["f1"] > 40, results  # it learnt to read the question (two kinds, often on one paragraph)
    card = (trained / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "exact_match" in card
    # the run's evaluation is the one `answer_batch` gives on the saved folder, scored independently
    model, tokenizer = AutoModelForQuestionAnswering.from_pretrained(trained), AutoTokenizer.from_pretrained(trained)
    rows = [json.loads(line) for line in qa_data[1].read_text().splitlines()]
    found = answer_batch(model, tokenizer, [r["question"] for r in rows], [r["context"] for r in rows],
                         max_length=96, doc_stride=24)
    for row, got in zip(rows, found):
        assert row["context"][got["start"]:got["end"]] == got["answer"]
    scores = squad_scores({r["id"]: got["answer"] for r, got in zip(rows, found)},
                          {r["id"]: r["answers"]["text"] for r in rows})
    assert scores == pytest.approx({k: results[k] for k in scores}, abs=1e-6)


def test_answer_finds_an_answer_in_the_second_window_of_a_long_context(trained):
    model, tokenizer = AutoModelForQuestionAnswering.from_pretrained(trained), AutoTokenizer.from_pretrained(trained)
    filler = ("The proposal that added syntax for annotating the types of variables, instead of expressing them "
              "through comments, was accepted.")
    context = f"{filler} {filler} {filler} It was written in 3 parts by the same authors."
    assert len(tokenizer(NUMBER_QUESTION, context)["input_ids"]) > 96  # longer than one window
    result = answer(model, tokenizer, NUMBER_QUESTION, context, max_length=96, doc_stride=24)
    assert result["answer"] == "3" and context[result["start"]:result["end"]] == "3"
    assert 0 < result["score"] <= 1


# ---------------------------------------------------------------------------------------------------------------------
# Bad data
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, options, message",
    [
        ({"answer_start": [3]}, [], "validation example p0-bad: answer_start 3 does not point at its answer"),
        ({"text": [], "answer_start": []}, [], "validation example p0-bad has no answer: pass --version_2_with_negative"),
    ],
)
def test_bad_answers_are_refused_naming_the_example(tmp_path, qa_data, change, options, message):
    train, _, tokenizer = qa_data
    rows = [{"id": "p0-bad", "context": "It was written in 2016.", "question": NUMBER_QUESTION,
             "answers": {"text": ["2016"], "answer_start": [18], **change}}]
    out = tmp_path / "out"
    result = cli("question-answering", "--tokenizer_name", tokenizer, "--train_file", train, "--validation_file",
                 write_jsonl(tmp_path / "bad.jsonl", rows), "--output_dir", out, *QA_MODEL, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not out.exists()

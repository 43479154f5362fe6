"""benchmarks/recipes.py: every recipe pretrains on the same text with the same tokenizer, for the steps that fill the
same minutes, and its row holds its own pretraining and downstream results."""

import csv
import json
from pathlib import Path

import pytest
from helpers import train_in_process
from transformers import AutoConfig

import transformer_encoder  # noqa: F401  (registers the Auto classes)
from transformer_encoder.benchmarks import recipes

SHARED = recipes.downstream.DATA

pytestmark = pytest.mark.skipif(not (SHARED / "README.md").is_file(), reason="no ../shared/data here")


@pytest.fixture(autouse=True)
def runs_here(monkeypatch):
    """Pretraining and fine-tuning in this process (the script spawns one per run; a test pays its imports once);
    tests/test_downstream.py runs the spawning itself."""
    monkeypatch.setattr(recipes.downstream, "run_training", train_in_process)


TINY = ["--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--intermediate_size", "64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The first rows of the shared files, in the shared folder's layout."""
    out = tmp_path_factory.mktemp("data")
    (out / "README.md").write_text("slices of ../shared/data\n")
    for name, rows in [("wikitext-2/test.txt", 120), ("wikitext-2/valid.txt", 40)]:
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text("".join((SHARED / name).open(encoding="utf-8").readlines()[:rows]), encoding="utf-8")
    for name, rows in [("sst2/train.csv", 200), ("stsb/train.csv", 64), ("stsb/validation.csv", 32)]:
        (out / name).parent.mkdir(exist_ok=True)
        with (SHARED / name).open(encoding="utf-8") as f:
            lines = f.readlines()[: rows + 1]  # the header and `rows` rows (no quoted newlines in these files)
        (out / name).write_text("".join(lines), encoding="utf-8")
    return out


def test_every_recipe_trains_on_the_same_text_and_tokenizer(data, tmp_path):
    out = tmp_path / "recipes"
    recipes.main(
        ["--recipes", "modern", "rtd", "--steps", "2", "--downstream_steps", "2", "--tasks", "stsb"]
        + ["--output_dir", str(out), "--data", str(data), *TINY]
    )

    text = (out / "pretraining.txt").read_text(encoding="utf-8").splitlines()
    with (data / "sst2" / "train.csv").open(encoding="utf-8") as f:
        sentences = [row["sentence"].strip() for row in csv.DictReader(f)]
    assert text[-len(sentences) :] == sentences  # SST-2 sentences as plain text: no labels
    assert "label" not in text[-len(sentences) - 1]

    report = json.loads((out / "recipes.json").read_text())
    assert [row["recipe"] for row in report["rows"]] == ["modern", "rtd"]
    vocab = (out / "tokenizer" / "tokenizer.json").read_text()
    for row in report["rows"]:
        checkpoint = out / row["recipe"] / "pretrain"
        assert (checkpoint / "tokenizer.json").read_text() == vocab
        assert row["pretraining"]["metrics"]["train_steps"] == row["steps"] == 2
        config = AutoConfig.from_pretrained(checkpoint)
        assert config.hidden_size == 32  # the passed-through size won over the common one
        assert config.norm_first == (row["recipe"] == "modern")
        assert config.position_embedding_type == ("rotary" if row["recipe"] == "modern" else "sinusoidal")
        results = json.loads((out / row["recipe"] / "downstream" / "stsb" / "all_results.json").read_text())
        assert row["downstream"]["stsb"]["score"] == results["spearmanr"]
    assert "generator_perplexity" in report["rows"][1]["pretraining"]["metrics"]
    table = (out / "recipes.md").read_text().splitlines()
    assert len(table) == 2 + 2 and table[3].startswith("| rtd | rtd | 2 |")


def test_minutes_become_steps_through_a_probe(data, tmp_path):
    out = tmp_path / "recipes"
    recipes.main(
        ["--recipes", "paper", "--minutes", "0.01", "--downstream_steps", "2", "--tasks", "stsb"]
        + ["--output_dir", str(out), "--data", str(data), *TINY]
    )
    probe = json.loads((out / "paper" / "probe" / "all_results.json").read_text())
    assert probe["train_steps"] == recipes.PROBE_STEPS
    row = json.loads((out / "recipes.json").read_text())["rows"][0]
    # 0.6 s is less than 30 steps take: the budget falls back to the probe's own length
    assert row["steps"] == max(recipes.PROBE_STEPS, int(0.6 / (probe["train_runtime_s"] / recipes.PROBE_STEPS)))

"""benchmarks/downstream.py: a checkpoint fine-tuned on the local sets with the stated budgets, one row per task whose
score is the fine-tuned run's own result."""

import json
from pathlib import Path

import pytest
from helpers import train_in_process

import transformer_encoder  # noqa: F401  (registers the Auto classes)
from transformer_encoder.benchmarks import downstream
from transformer_encoder.training.tasks import TASKS as TRAINING_TASKS


pytestmark = pytest.mark.skipif(not (downstream.DATA / "README.md").is_file(), reason="no ../shared/data here")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny masked-LM checkpoint, trained by the CLI on WikiText-2 text for two steps."""
    out = tmp_path_factory.mktemp("runs") / "mlm"
    result = train_in_process([
        "mlm", "--output_dir", str(out),
        "--train_file", str(downstream.DATA / "wikitext-2" / "valid.txt"), "--max_train_samples", "300",
        "--max_train_steps", "2", "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
        "--intermediate_size", "64", "--vocab_size", "500", "--max_seq_length", "64",
    ])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture
def runs_here(monkeypatch):
    """The fine-tuning runs in this process (the script spawns one per task; a test pays its imports once)."""
    monkeypatch.setattr(downstream, "run_training", train_in_process)


@pytest.mark.parametrize("tasks", [["stsb", "conll2003"]])
def test_each_task_reports_its_runs_own_score(checkpoint, tmp_path, tasks, capsys, runs_here):
    out = tmp_path / "down"
    extra = ["--max_train_samples", "64", "--max_eval_samples", "48", "--per_device_eval_batch_size", "16"]
    downstream.main([str(checkpoint), "--tasks", *tasks, "--max_train_steps", "3", "--output_dir", str(out), *extra])

    report = json.loads((out / "downstream.json").read_text())
    assert [row["task"] for row in report["rows"]] == tasks
    assert report["passthrough"] == extra
    for row in report["rows"]:
        task = downstream.TASKS[row["task"]]
        results = json.loads((out / row["task"] / "all_results.json").read_text())
        assert row["score"] == results[task.metric]
        assert -1.0 <= row["score"] <= 1.0
        assert row["steps"] == results["train_steps"] == 3
        TRAINING_TASKS[task.cli_task].auto_class.from_pretrained(out / row["task"])  # it loads with its head
    table = (out / "downstream.md").read_text().splitlines()
    assert len(table) == 2 + len(tasks)
    assert table[2].startswith(f"| {checkpoint} | {tasks[0]} | {downstream.TASKS[tasks[0]].metric} |")

    capsys.readouterr()
    downstream.main(["--table", str(out / "downstream.json"), str(out / "downstream.json")])
    assert capsys.readouterr().out.count(f"| {tasks[-1]} |") == 2


def test_a_failed_run_names_the_task(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match=r"\[sst2\] the fine-tuning run failed"):
        downstream.main([str(checkpoint), "--tasks", "sst2", "--output_dir", str(tmp_path), "--no_such_option", "1"])

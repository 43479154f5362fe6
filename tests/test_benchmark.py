"""benchmarks/benchmark.py end to end at the tiny size, one round: it runs, and writes the files and keys the README's
tables are made from."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformer_encoder.cpu import cpu_computes_bf16

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "benchmarks" / "benchmark.py"
DATA = ROOT.parent / "shared" / "data"
SMALL = ["--sizes", "tiny", "--rounds", "1", "--batch", "2", "--seq", "16", "--fixed_batches", "1",
         "--variable_batch_size", "2"]  # fmt: skip


@pytest.mark.skipif(not (DATA / "README.md").is_file(), reason="no ../shared/data here")
def test_one_round_writes_the_table_the_numbers_and_the_chart(tmp_path):
    command = [sys.executable, BENCHMARK, *SMALL, "--workloads", "fixed", "variable", "--out", tmp_path]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    saved = json.loads((tmp_path / "results-cpu.json").read_text())
    assert {"machine", "torch", "dtype", "matmul_rate", "rows"} <= saved.keys()
    assert {(row["workload"], row["contender"]) for row in saved["rows"]} >= {
        ("fixed", "ours (sdpa)"), ("variable", "ours (sdpa)"), ("variable", "BERT (sdpa)"), ("variable", "ours (int8)")
    }
    for row in saved["rows"]:
        assert row["tokens_per_s"] > 0 and {"min", "max", "mfu", "padding_share", "parameters"} <= row.keys()
    table = (tmp_path / "results-cpu.md").read_text()
    assert "ours fp32 / BERT sdpa" in table and "padding-free ceiling" in table
    assert (tmp_path / "results-cpu.png").stat().st_size > 0

    # the summary names our float rows by the run's dtype (bf16 on a GPU), here redrawn from the saved numbers
    redrawn = tmp_path / "bf16" / "results-cpu.json"
    redrawn.parent.mkdir()
    redrawn.write_text(json.dumps({**saved, "dtype": "torch.bfloat16"}))
    subprocess.run([sys.executable, BENCHMARK, "--report_from", redrawn], check=True, capture_output=True, cwd=ROOT)
    table = redrawn.with_suffix(".md").read_text()
    assert "ours bf16 / BERT sdpa" in table and "ours fp32" not in table


def test_missing_sentence_data_is_named_in_one_line(tmp_path):
    command = [sys.executable, BENCHMARK, *SMALL, "--workloads", "variable", "--data_dir", tmp_path, "--out", tmp_path]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"benchmark.py: the sentence-batch workload reads "
                                                             f"{tmp_path / 'sst2' / 'validation.csv'}, which is missing")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def benchmark():
    from transformer_encoder.benchmarks import benchmark

    return benchmark


def test_a_bf16_run_keeps_the_serving_anchors_at_their_own_precision(benchmark):
    """In a bf16 CPU run our model runs in bf16, while int8, ONNX Runtime and an added fp32 row of ours keep theirs
    (casting a quantized model to bf16 was a dtype error inside torch)."""
    size = dict(hidden=32, layers=1, heads=2, ffn=64, vocab=100)
    batches = benchmark.fixed_batches(size["vocab"], "cpu", 2, 8)
    factories = benchmark.contenders(size, 8, mlm=False, device="cpu", dtype=torch.bfloat16)
    assert "ours (sdpa, fp32)" in factories and "ours (sdpa, fp32)" not in benchmark.contenders(size, 8, mlm=False)
    models = {name: factories[name]() for name in ("ours (sdpa)", "ours (sdpa, fp32)", "ours (int8)")}
    for name, model in models.items():
        benchmark.make_runner(name, model, "fixed", batches, "cpu", torch.bfloat16)()
    assert models["ours (sdpa)"].embeddings.token_embeddings.weight.dtype == torch.bfloat16
    assert models["ours (sdpa, fp32)"].embeddings.token_embeddings.weight.dtype == torch.float32
    prepacked = "ours (bf16, to_bf16_where_native)"
    assert (prepacked in factories) == cpu_computes_bf16()  # what serving uses, where the CPU computes bf16
    if cpu_computes_bf16():
        model = factories[prepacked]()
        benchmark.make_runner(prepacked, model, "fixed", batches, "cpu", torch.bfloat16)()
        assert any(type(m).__name__ == "PrepackedLinear" for m in model.modules())


def test_rounds_pause_before_each_run_and_reverse_the_order(benchmark, monkeypatch):
    """No contender always runs right after the same other one (ONNX Runtime's spinning threads slowed whichever
    came next), and each timed run starts after a pause."""
    events = []
    monkeypatch.setattr(benchmark.time, "sleep", lambda seconds: events.append(("pause", seconds)))
    runners = {name: (lambda name=name: events.append(name)) for name in "abc"}
    seconds = benchmark.time_alternating(runners, rounds=3, device="cpu")
    assert events[:6] == list("aabbcc")  # two warm-up runs each, untimed
    pause = ("pause", benchmark.SETTLE_SECONDS)
    assert events[6:] == [pause, "a", pause, "b", pause, "c"] + [pause, "c", pause, "b", pause, "a"] + [
        pause, "a", pause, "b", pause, "c"]  # fmt: skip
    assert benchmark.SETTLE_SECONDS > 0 and {name: len(times) for name, times in seconds.items()} == dict.fromkeys("abc", 3)


def test_ratios_pair_the_rounds(benchmark):
    """A ratio compares two contenders round by round: a slow stretch of the machine that fell on both in one round
    does not decide it (the ratio of the medians here would be 8 / 3)."""
    ours = {"tokens_per_s": 1 / 3, "seconds": [1.0, 3.0, 9.0]}
    peer = {"tokens_per_s": 1 / 8, "seconds": [1.2, 8.0, 10.0]}
    ratio, won = benchmark.speedup(ours, peer)
    assert ratio == pytest.approx(1.2) and won == "3/3"
    assert benchmark.speedup(peer, ours) == (pytest.approx(1 / 1.2), "0/3")
    # results saved before the rounds were kept: the medians' ratio, no rounds to count
    assert benchmark.speedup({"tokens_per_s": 3.0}, {"tokens_per_s": 2.0}) == (1.5, "")


def test_the_report_names_the_allocator_settings(benchmark, monkeypatch):
    """Runs with and without allocator settings differ by tens of percent for the torch contenders on CPU (page
    faults at every forward under glibc's defaults), so the table's machine line says which it had."""
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert benchmark.allocator() == "default malloc"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1073741824")
    assert benchmark.allocator() == "GLIBC_TUNABLES=glibc.malloc.trim_threshold=1073741824"


def test_openvino_runs_the_peers_graph_in_the_precision_its_row_names(benchmark):
    """OpenVINO (the bench extra) joins the CPU serving anchors, one row per precision; in f32 it computes BERT's
    outputs."""
    pytest.importorskip("openvino", reason="OpenVINO comes with the bench extra")
    size = dict(hidden=32, layers=1, heads=2, ffn=64, vocab=100)
    factories = benchmark.contenders(size, 8, mlm=False, device="cpu")
    rows = [name for name in factories if name.startswith("OpenVINO")]
    assert "OpenVINO f32 (BERT)" in rows and 1 <= len(rows) <= 2
    torch.manual_seed(0)
    peer = benchmark.bert(size, 8).eval()
    ids, mask = benchmark.fixed_batches(size["vocab"], "cpu", 2, 8)[0]
    mask[1, 5:] = 0
    with torch.inference_mode():
        expected = peer(ids, attention_mask=mask).last_hidden_state
    got = benchmark.OpenVinoModel(peer, "f32")(ids, mask)
    assert torch.allclose(torch.from_numpy(got[0]), expected, atol=1e-4)
    batches = benchmark.fixed_batches(size["vocab"], "cpu", 2, 8)
    seconds = benchmark.time_alternating({name: benchmark.make_runner(name, factories[name](), "fixed", batches, "cpu",
                                                                      torch.float32) for name in rows}, 1, "cpu")
    assert all(len(s) == 1 and s[0] > 0 for s in seconds.values())

"""Ours against BERT sdpa alone, in one process, alternating, at fixed length (16×128), fp32, the benchmark's own
model builders. Usage (from the repository root): python benchmarks/results/base-fixed-2026-11-29/ab_fixed.py ROUNDS SIZE
Run 2026-11-29 ~02:05 on the quiet 2-core Intel Xeon @ 2.50GHz: `8 base` gave ours/bert 0.919, `16 base` 1.017."""

import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

path = Path(__file__).resolve().parents[2] / "benchmark.py"
spec = importlib.util.spec_from_file_location("benchmark", path)
bm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bm)
torch.manual_seed(0)
size = bm.SIZES[sys.argv[2]]
models = {"ours": bm.ours(size, 128).eval(), "bert": bm.bert(size, 128).eval()}
ids = torch.randint(1, size["vocab"], (16, 128))
am = torch.ones_like(ids)
times = {k: [] for k in models}
with torch.inference_mode():
    for m in models.values():
        for _ in range(3):
            m(input_ids=ids, attention_mask=am)
    for r in range(int(sys.argv[1])):
        order = list(models.items()) if r % 2 == 0 else list(models.items())[::-1]
        for k, m in order:
            s = time.perf_counter()
            for _ in range(3):
                m(input_ids=ids, attention_mask=am)
            times[k].append(time.perf_counter() - s)
med = {k: statistics.median(v) for k, v in times.items()}
print({k: f"{3 * 2048 / v:.0f} tok/s" for k, v in med.items()}, "ours/bert", round(med["bert"] / med["ours"], 3))
wins = sum(a < b for a, b in zip(times["ours"], times["bert"]))
print("ours faster in", wins, "of", len(times["ours"]), "pairs")

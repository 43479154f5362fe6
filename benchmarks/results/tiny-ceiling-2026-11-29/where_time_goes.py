"""Where the tiny model's CPU inference time goes (`torch.profiler`, 2 threads), on the benchmark's sentence batches
and at fixed length (16×128): each operator's share, and the linear maps' time per real token in both.
Usage: python benchmarks/results/tiny-ceiling-2026-11-29/where_time_goes.py"""

import importlib.util
from pathlib import Path

import torch

spec = importlib.util.spec_from_file_location("benchmark", Path(__file__).resolve().parents[2] / "benchmark.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
torch.manual_seed(0)
size = bench.SIZES["tiny"]
model = bench.ours(size, 128).eval()
workloads = {
    "sentences": bench.variable_batches(bench.sentence_lengths(size["vocab"], bench.DATA), size["vocab"], "cpu"),
    "fixed 16x128": bench.fixed_batches(size["vocab"], "cpu", 16, 128, 4),
}
with torch.inference_mode():
    for name, batches in workloads.items():
        tokens = sum(int(mask.sum()) for _, mask in batches)
        for ids, mask in batches:  # warm-up
            model(input_ids=ids, attention_mask=mask)
        with torch.profiler.profile() as profiler:
            for ids, mask in batches:
                model(input_ids=ids, attention_mask=mask)
        events = profiler.key_averages()
        total = sum(event.self_cpu_time_total for event in events)
        linear = sum(event.cpu_time_total for event in events if event.key == "aten::linear")
        print(f"{name}: {tokens} real tokens, {total / tokens:.1f} us per token in all, linear maps "
              f"{linear / tokens:.1f} us per token ({linear / total:.0%})")
        for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]:
            print(f"  {event.key:<55} {event.self_cpu_time_total / total:6.1%}  {event.count} calls")

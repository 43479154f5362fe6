"""Does the contender timed right after ONNX Runtime pay for it? Tiny size, fixed 16×128 batches, fp32, 2 threads.
Each round runs ONNX Runtime int8, pauses PAUSE seconds, then times A and B; then again with A and B swapped.

    python benchmarks/results/order-effect-2026-11-28/order_effect.py ROUNDS PAUSE
"""

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

rounds, pause = int(sys.argv[1]), float(sys.argv[2])
torch.manual_seed(0)
size = bm.SIZES["tiny"]
ort = bm.OnnxRuntimeModel(bm.bert(size, 128), int8=True)
models = {"ours": bm.ours(size, 128).eval(), "bert": bm.bert(size, 128).eval()}
batches = bm.fixed_batches(size["vocab"], "cpu", 16, 128, 2)
tokens = sum(mask.numel() for _, mask in batches)


def run(model):
    with torch.inference_mode():
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask)


for model in [ort, *models.values()]:
    run(model)
    run(model)
for first, second in (("ours", "bert"), ("bert", "ours")):
    seconds = {first: [], second: []}
    for _ in range(rounds):
        run(ort)
        time.sleep(pause)
        for name in (first, second):
            start = time.perf_counter()
            run(models[name])
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(times) for name, times in seconds.items()}
    speeds = ", ".join(f"{name} {tokens / median[name]:,.0f} tok/s" for name in (first, second))
    print(f"pause {pause} s; ONNX Runtime, then {first}, then {second}: {speeds}; ours / BERT "
          f"{median['bert'] / median['ours']:.3f}")

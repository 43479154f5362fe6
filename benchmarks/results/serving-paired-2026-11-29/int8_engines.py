"""Which int8 kernels for ours: torch's dynamic int8 linear packed by fbgemm (what `quantize_int8` does: the default
"x86" engine), by oneDNN for every linear map, or by oneDNN for the feed-forward's widening map only (fc1), against
ONNX Runtime int8, alternated in one process (0.1 s pause before each run, order reversed every round), the
benchmark's own models and batches. Prints the medians, and each variant against the first: the ratio of medians and
the median of the per-round ratios, with the rounds the first won.

    python benchmarks/results/serving-paired-2026-11-29/int8_engines.py ROUNDS SIZE fixed|variable VARIANT,VARIANT,...

VARIANT: fbgemm, fc1-onednn, onednn, ort. Outputs of the runs quoted in the README: int8_engines_output.txt."""

import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.ao.nn.quantized.dynamic as nnqd

path = Path(__file__).resolve().parents[2] / "benchmark.py"
spec = importlib.util.spec_from_file_location("benchmark", path)
bm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bm)
torch.manual_seed(0)
rounds, size, workload, variants = int(sys.argv[1]), bm.SIZES[sys.argv[2]], sys.argv[3], sys.argv[4].split(",")


def repack(model, engine, chosen):
    """Pack the chosen dynamic int8 linear maps' weights again, for `engine`'s kernels (the packing picks them)."""
    torch.backends.quantized.engine = engine
    for module in model.modules():
        if isinstance(module, nnqd.Linear) and chosen(module):
            module.set_weight_bias(module.weight(), module.bias())
    torch.backends.quantized.engine = "x86"
    return model


build = {
    "fbgemm": lambda: bm.ours_int8(size, 128),
    "fc1-onednn": lambda: repack(bm.ours_int8(size, 128), "onednn", lambda m: m.out_features > m.in_features),
    "onednn": lambda: repack(bm.ours_int8(size, 128), "onednn", lambda m: True),
    "ort": lambda: bm.OnnxRuntimeModel(bm.bert(size, 128), int8=True),
}
models = {name: build[name]() for name in variants}
if workload == "fixed":
    batches = bm.fixed_batches(size["vocab"], "cpu", 16, 128, 2)
else:
    batches = bm.variable_batches(bm.sentence_lengths(size["vocab"], Path(bm.DATA)), size["vocab"], "cpu")
tokens = sum(mask.sum().item() for _, mask in batches)
runners = {name: bm.make_runner(name, model, "inference", batches, "cpu", torch.float32) for name, model in models.items()}
seconds = bm.time_alternating(runners, rounds, "cpu")
median = {name: statistics.median(times) for name, times in seconds.items()}
print(sys.argv[2], workload, {name: f"{tokens / m:.0f} tok/s" for name, m in median.items()})
first = variants[0]
for name in variants[1:]:
    ratio, won = bm.speedup({"seconds": seconds[first], "tokens_per_s": 1}, {"seconds": seconds[name], "tokens_per_s": 1})
    print(f"  {first} / {name}: medians {median[name] / median[first]:.3f}, paired {ratio:.3f}, {first} won {won}")

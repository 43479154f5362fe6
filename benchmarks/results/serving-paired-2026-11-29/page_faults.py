"""Our model alone, the benchmark's fixed-length workload (2 batches of 16×128) run N times in a row after one
warm-up run: tokens per second of each run, with the minor page faults it caused (thousands) in brackets. Run it
under glibc's default malloc and under GLIBC_TUNABLES that keep freed memory (see the README's "Serving on CPU:
the allocator"); output of the runs quoted there: page_faults_output.txt.

    python benchmarks/results/serving-paired-2026-11-29/page_faults.py base int8|fp32 N"""

import importlib.util
import resource
import sys
import time
from pathlib import Path

import torch

path = Path(__file__).resolve().parents[2] / "benchmark.py"
spec = importlib.util.spec_from_file_location("benchmark", path)
bm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bm)
torch.manual_seed(0)
size = bm.SIZES[sys.argv[1]]
model = bm.ours_int8(size, 128) if sys.argv[2] == "int8" else bm.ours(size, 128)
batches = bm.fixed_batches(size["vocab"], "cpu", 16, 128, 2)
run = bm.make_runner(sys.argv[2], model, "fixed", batches, "cpu", torch.float32)
run()
tokens = sum(mask.sum().item() for _, mask in batches)
results = []
for _ in range(int(sys.argv[3])):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    time.sleep(0.1)
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    results.append(f"{tokens / seconds:.0f} ({(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // 1000}k)")
print(sys.argv[2], bm.allocator(), "|", " ".join(results))

"""The operators ours and BERT sdpa run at fixed length (16×128, fp32, CPU), as two `torch.profiler` tables: the
same kernels on the same shapes, in the same counts. Usage: python benchmarks/results/base-fixed-2026-11-29/same_kernels.py base"""

import importlib.util
import sys
from pathlib import Path

import torch

spec = importlib.util.spec_from_file_location("benchmark", Path(__file__).resolve().parents[2] / "benchmark.py")
bm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bm)
torch.manual_seed(0)
size = bm.SIZES[sys.argv[1]]
models = {"ours": bm.ours(size, 128).eval(), "bert": bm.bert(size, 128).eval()}
ids = torch.randint(1, size["vocab"], (16, 128))
am = torch.ones_like(ids)
with torch.inference_mode():
    for name, model in models.items():
        for _ in range(2):
            model(input_ids=ids, attention_mask=am)
        with torch.profiler.profile() as profiler:
            for _ in range(2):
                model(input_ids=ids, attention_mask=am)
        print(name)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))

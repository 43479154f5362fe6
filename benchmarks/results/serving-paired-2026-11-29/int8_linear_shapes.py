"""One dynamic int8 linear map, fbgemm's packing against oneDNN's, over the shapes of the tiny (d 256 / 1024) and
base (d 768 / 3072) models and a middle one, at 64, 390 (a 16-sentence batch's real tokens) and 2,048 rows; best of
5 repeats, 2 threads. Output: int8_linear_shapes_output.txt.

    python benchmarks/results/serving-paired-2026-11-29/int8_linear_shapes.py"""

import time

import torch
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn

torch.set_num_threads(2)
torch.manual_seed(0)


def quantized(engine, k, n):
    torch.backends.quantized.engine = engine
    linear = nn.Linear(k, n)
    linear.qconfig = torch.ao.quantization.default_dynamic_qconfig
    module = nnqd.Linear.from_float(linear)
    torch.backends.quantized.engine = "x86"
    return module


def microseconds(fn, n):
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


with torch.inference_mode():
    for k, n in ((256, 256), (256, 1024), (1024, 256), (384, 384), (384, 1536), (1536, 384), (768, 768), (768, 3072),
                 (3072, 768)):
        for m in (64, 390, 2048):
            x = torch.randn(m, k)
            fbgemm, onednn = quantized("fbgemm", k, n), quantized("onednn", k, n)
            repeats = max(5, int(2e8 / (m * k * n)))
            a = min(microseconds(lambda: fbgemm(x), repeats) for _ in range(5))
            b = min(microseconds(lambda: onednn(x), repeats) for _ in range(5))
            print(f"in {k:4} out {n:4} rows {m:4}: fbgemm {a:7.0f} us, oneDNN {b:7.0f} us, fbgemm / oneDNN {a / b:.2f}")

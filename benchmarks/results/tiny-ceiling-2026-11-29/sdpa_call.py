"""What one call of torch's SDPA costs on CPU for one short sequence (batch 1, 4 heads of d_k 64: the tiny size),
against the same attention written as matmul → softmax → matmul, medians of 15 × 500 calls.
Usage: python benchmarks/results/tiny-ceiling-2026-11-29/sdpa_call.py"""

import statistics
import time

import torch

torch.manual_seed(0)
for threads in (2, 1):
    torch.set_num_threads(threads)
    for length in (10, 25, 50):
        q, k, v = (torch.randn(1, 4, length, 64) for _ in range(3))

        def sdpa():
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

        def math():
            return torch.matmul(torch.softmax(torch.matmul(q[0], k[0].transpose(-1, -2)) * 0.125, -1), v[0])

        medians = {}
        with torch.inference_mode():
            for name, f in (("sdpa", sdpa), ("math", math)):
                times = []
                for _ in range(15):
                    start = time.perf_counter()
                    for _ in range(500):
                        f()
                    times.append((time.perf_counter() - start) / 500)
                medians[name] = statistics.median(times) * 1e6
        print(f"{threads} threads, L {length}: sdpa {medians['sdpa']:.1f} us, matmul-softmax-matmul {medians['math']:.1f} us")

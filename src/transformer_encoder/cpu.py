"""What this CPU computes natively, detected, never assumed: training and serving choose a precision from it.

`TRANSFORMER_ENCODER_CPU_BF16=1` (or `0`) overrides the detection. The test suite runs once with the detection
flipped this way, so that nothing in it depends on the CPU it runs on; a user can also keep fp32 on a bf16 CPU.
"""

import os

import torch

BF16_OVERRIDE = "TRANSFORMER_ENCODER_CPU_BF16"


def detects_native_bf16() -> bool:
    """Whether torch's own dispatch finds native bf16 products on this CPU (AVX512-BF16 or AMX). Elsewhere torch
    emulates bf16: the same numbers, more slowly than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def cpu_computes_bf16() -> bool:
    """Whether to treat this CPU as one that computes bf16 natively: the detection, unless `BF16_OVERRIDE` says."""
    forced = os.environ.get(BF16_OVERRIDE)
    if forced is None or forced == "":
        return detects_native_bf16()
    if forced not in ("0", "1"):
        raise ValueError(f"{BF16_OVERRIDE}={forced!r}: set it to 1 (use bf16), 0 (use fp32) or leave it unset (detect)")
    return forced == "1"


def cpu_has_vnni() -> bool:
    """Whether this CPU has AVX512-VNNI, whose int8 dot products accumulate in 32 bits: without it fbgemm's 8-bit
    activation products can saturate 16-bit sums, and int8 keeps 7-bit activations (`quantization.py`)."""
    return torch.cpu._is_vnni_supported()

"""Lower precision for CPU serving: int8 weights everywhere, bf16 where the CPU computes it natively.

    from transformer_encoder.quantization import quantize_int8, to_bf16_where_native
    int8_model = quantize_int8(model)         # same forward, same outputs (within int8 rounding)
    model = to_bf16_where_native(model)       # bf16 on AVX512-BF16 / AMX CPUs, fp32 (unchanged) elsewhere

int8 is dynamic quantization of every linear map (`torch.ao.quantization.quantize_dynamic`): weights stored as
int8 with one scale per matrix, activations quantized on the fly per batch, products in int8 by fbgemm / oneDNN,
so no calibration data is needed. torch marks `torch.ao.quantization` deprecated in favour of torchao, and it is
still what runs fastest on CPU: torchao's int8 dynamic scheme (`Int8DynamicActivationInt8WeightConfig`), measured
on this project's Xeon in eager mode, ran a BERT-base FFN stack 2x slower than fp32, where `quantize_dynamic` ran
1.5-1.8x faster. The ONNX side quantizes with ONNX Runtime's own quantizer (`export --quantize int8`).
"""

import copy
import logging
import warnings

import torch
from torch import nn

from .cpu import cpu_computes_bf16

logger = logging.getLogger(__name__)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model`, in inference mode, whose linear maps compute with int8 weights and activations.

    The forward and its outputs are those of `model` (same classes of outputs, same shapes), up to int8 rounding.
    CPU only: the quantized kernels have no GPU implementation. `model` itself is left as it was."""
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device.type != "cpu":
        raise ValueError(f"int8 dynamic quantization runs on CPU; the model is on {parameter.device}: "
                         "call model.cpu() first.")
    if parameter is not None and parameter.dtype != torch.float32:
        raise ValueError(f"quantize_int8 takes a float32 model; this one is {parameter.dtype}: call model.float().")
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as error:  # announced for removal; torchao replaces it
        raise RuntimeError(f"This torch ({torch.__version__}) has no torch.ao.quantization.quantize_dynamic; "
                           "use torch <= 2.13 for int8, or the ONNX route (export --quantize int8).") from error
    with warnings.catch_warnings():  # its deprecation notices, said once in this module's docstring instead
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        quantized = quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    return quantized


def to_bf16_where_native(model: nn.Module) -> nn.Module:
    """`model` in bf16 (weights and compute) where the CPU computes bf16 natively, otherwise unchanged in fp32.
    Detected, never assumed: `cpu_computes_bf16()`. Softmax runs in fp32 inside attention either way."""
    if not cpu_computes_bf16():
        logger.info("This CPU has neither AVX512-BF16 nor AMX: the model stays in float32.")
        return model
    return model.to(torch.bfloat16)


"""Lower precision for CPU serving: int8 weights everywhere, bf16 where the CPU computes it natively.

    from transformer_encoder.quantization import quantize_int8, to_bf16_where_native
    int8_model = quantize_int8(model)         # same forward, same outputs (within int8 rounding)
    model = to_bf16_where_native(model)       # bf16 on AVX512-BF16 / AMX CPUs, fp32 (unchanged) elsewhere

int8 is dynamic quantization of every linear map: weights stored as int8, activations quantized on the fly, the
products in int8, so no calibration data is needed. The scheme was chosen by measurement on a real checkpoint
(all-MiniLM-L6-v2, mean-pooled embeddings of 96 SST-2 dev sentences: cosine to fp32, median / min; STS-B
validation Spearman, fp32 0.8848; 2-core Xeon with AMX, 2026-12-06; the record is in benchmarks/):

| scheme | median | min | Spearman |
|---|---|---|---|
| one scale per weight matrix, 7-bit activations (`quantize_dynamic`'s default) | 0.935 | 0.791 | 0.8781 |
| one scale per output channel, 7-bit activations | 0.974 | 0.908 | 0.8826 |
| per output channel, 8-bit activations | 0.992 | 0.963 | 0.8860 |
| the same, and `fc2` with one activation scale per token (this module) | 0.996 | 0.980 | 0.8854 |

So: a scale per output channel of every weight matrix (one per matrix lets the largest row decide the others'
resolution); activations in 8 bits, one scale per batch, by fbgemm (`torch.ops.quantized.linear_dynamic`), except
`fc2`, whose input (the FFN's activation) spreads over very different ranges from token to token and gets one scale
per token (`PerTokenInt8Linear`, `torch._int_mm`).

That needs AVX512-VNNI (`cpu_has_vnni()`), whose dot products accumulate in 32 bits. Without it fbgemm's 8-bit
activation products can saturate 16-bit sums, and `torch._int_mm` gave inexact products (checked here with oneDNN
held to AVX2 and AVX512 by ONEDNN_MAX_CPU_ISA). There every map, `fc2` included, runs in fbgemm with 7-bit
activations (`reduce_range`, fbgemm's own guard): the second row of the table (median 0.974), with a warning.
ONNX Runtime's int8 keeps its fidelity on every CPU. On CPUs with AMX, bf16 (`to_bf16_where_native`) is faster
than this int8 on sentence batches and at fixed length (fbgemm does not reach AMX; 1.29x and 2.20x on
all-MiniLM-L6-v2, benchmarks/results/bf16-prepacked-2026-12-06/): use int8 where the CPU has VNNI but no bf16.

torch marks `torch.ao.quantization` deprecated in favour of torchao, and it is still what runs fastest on CPU:
torchao's int8 dynamic scheme (`Int8DynamicActivationInt8WeightConfig`), measured on this project's Xeon in eager
mode, ran a BERT-base FFN stack 2x slower than fp32, where `quantize_dynamic` ran 1.5-1.8x faster. The ONNX side
quantizes with ONNX Runtime's own quantizer, per output channel too (`export --quantize int8`).
"""

import copy
import logging
import warnings

import torch
from torch import nn

from .cpu import cpu_computes_bf16, cpu_has_vnni

logger = logging.getLogger(__name__)


PER_TOKEN_MAPS = ("fc2",)  # the linear maps whose input gets one scale per token (see the module docstring)


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
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as error:  # announced for removal; torchao replaces it
        raise RuntimeError(f"This torch ({torch.__version__}) has no torch.ao.quantization.quantize_dynamic; "
                           "use torch <= 2.13 for int8, or the ONNX route (export --quantize int8).") from error
    quantized = copy.deepcopy(model).eval()
    vnni = cpu_has_vnni()
    if not vnni:
        logger.warning("This CPU has no AVX512-VNNI: int8 keeps 7-bit activations here and follows fp32 less "
                       "closely (see transformer_encoder.quantization); ONNX Runtime's int8 (export --quantize int8) "
                       "does not lose this.")
    per_token = {name for name, module in quantized.named_modules() if vnni and isinstance(module, nn.Linear)
                 and name.rsplit(".", 1)[-1] in PER_TOKEN_MAPS}
    for name in per_token:
        parent, _, child = name.rpartition(".")
        setattr(quantized.get_submodule(parent), child, PerTokenInt8Linear(quantized.get_submodule(name)))
    per_batch = {name: per_channel_dynamic_qconfig for name, module in quantized.named_modules()
                 if type(module) is nn.Linear}
    with warnings.catch_warnings():  # its deprecation notices, said once in this module's docstring instead
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return quantize_dynamic(quantized, per_batch, dtype=torch.qint8,
                                mapping={nn.Linear: _int8_linear_class(reduce_range=not vnni)}, inplace=True)


def _int8_linear_class(reduce_range: bool):
    """fbgemm's dynamic int8 linear map, with 7-bit activations if `reduce_range` (see the module docstring)."""
    from torch.ao.nn.quantized.dynamic import Linear

    class Int8Linear(Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=reduce_range)

    return Int8Linear


class PerTokenInt8Linear(nn.Module):
    """y = x W^T + b with both factors in int8: W with one scale per output channel (row), x with one per token.

        W ≈ s_W ⊙ W_8 (per row),   x ≈ s_x ⊙ x_8 (per token),   y ≈ s_x ⊙ (x_8 W_8^T) ⊙ s_W + b
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        largest = largest_per_row(weight)
        scale = largest.squeeze(1) / 127
        self.register_buffer("weight_t", to_int8(weight / scale[:, None]).t())  # (in, out): what _int_mm takes
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        largest = largest_per_row(rows)  # one float temporary below, rounded in place: few large buffers per call
        y = torch._int_mm(to_int8(rows * (127 / largest)), self.weight_t) * (largest / 127)  # int32 → float
        y.mul_(self.weight_scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per token x per channel"


def largest_per_row(x: torch.Tensor) -> torch.Tensor:
    """max |x| of each row, (rows, 1), kept above 0 (an all-zero row quantizes to zeros). As max(max x, -min x): no
    |x| copy, and 10x faster than an inf-norm on CPU (5.7 against 0.6 ms at 2,048 × 1,536)."""
    largest = torch.maximum(x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True).neg_())
    return largest.clamp_(min=torch.finfo(torch.float32).tiny)


def to_int8(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer in [-127, 127] (symmetric: -128 left out so that both signs have one range).
    Overwrites `x`, a temporary of the caller's."""
    return x.round_().clamp_(-127, 127).to(torch.int8)


def to_bf16_where_native(model: nn.Module) -> nn.Module:
    """`model` in bf16 (weights and compute) where the CPU computes bf16 natively, otherwise unchanged in fp32.
    Detected, never assumed: `cpu_computes_bf16()`. Softmax runs in fp32 inside attention either way.

    In bf16, inference reads each weight from a copy that oneDNN reordered once: every linear map becomes a
    `PrepackedLinear` (the feed-forward network's first one applying its ReLU or GELU as it writes), and each
    attention block computes q, k, v as one product (`FusedProjections`). The parameters stay as they were: state
    dict, `save_pretrained` and training are unchanged."""
    if not cpu_computes_bf16():
        logger.info("This CPU has neither AVX512-BF16 nor AMX: the model stays in float32.")
        return model
    model.to(torch.bfloat16)
    if not can_prepack(torch.bfloat16):
        return model
    for module in list(model.modules()):
        if getattr(module, "gated", True) is False and fused_activation(module.act) is not None:  # act(x W_1 + b_1)
            module.fc1, module.act = PrepackedLinear(module.fc1, module.act), nn.Identity()
        if hasattr(module, "fused_qkv"):  # an attention block of this package's model
            module.fused_qkv = FusedProjections()
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, PrepackedLinear(module))
    return model


def can_prepack(dtype: torch.dtype) -> bool:
    """Whether oneDNN (torch's mkldnn backend) runs linear maps in `dtype` on this CPU."""
    if not torch.backends.mkldnn.is_available():
        return False
    return dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def fused_activation(activation: nn.Module | None) -> tuple[str, str] | None:
    """oneDNN's name and algorithm for an activation it can apply inside the linear map; None if it cannot."""
    if activation is None:
        return "none", ""
    if isinstance(activation, nn.ReLU):
        return "relu", ""
    if getattr(activation, "act", None) is nn.functional.gelu:  # transformers' "gelu": the exact (erf) GELU
        return "gelu", "none"
    return None


def reads_prepacked(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a call may read the reordered copy: inference on CPU in the weight's dtype, not traced. Training,
    autograd, torch.compile and export take the plain maps."""
    return not (
        torch.is_grad_enabled()
        or x.device.type != "cpu"
        or x.dtype != weight.dtype
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )


class ReorderedWeight:
    """oneDNN's reordered copy of a weight (or of several, side by side), made again at the first call after any of
    them changed: a new state dict or an optimizer step writes in place, `.to()` swaps the storage. Copies and
    pickles (copy.deepcopy, torch.save) leave it out: the opaque tensor has no storage to copy. It doubles the
    memory the weights take."""

    def __init__(self):
        self.tensor, self.made_from = None, None

    def __getstate__(self) -> dict:
        return {"tensor": None, "made_from": None}

    def of(self, *weights: torch.Tensor) -> torch.Tensor:
        state = tuple((w.data_ptr(), w._version) for w in weights)
        if state != self.made_from:
            weight = torch.cat(weights) if len(weights) > 1 else weights[0]
            self.tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
            self.made_from = state
        return self.tensor


class PrepackedLinear(nn.Linear):
    """act(x W^T + b) for inference with the weight in oneDNN's blocked layout, reordered once (as torch.compile's
    CPU freezing does), where F.linear reorders it at every call in bf16. Same outputs, bit for bit; at the row
    counts of sentence batches (hundreds of real tokens) this matters: in bf16 on a 2-core Xeon with AMX, 1.3-1.8x
    faster per map at 400 rows, 1.1-1.4x at 2,048 (benchmarks/README.md, "int8 and bf16 on CPU"). Elsewhere
    (`reads_prepacked`) it is nn.Linear followed by the activation module."""

    def __init__(self, linear: nn.Linear, activation: nn.Module | None = None):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight, self.bias = linear.weight, linear.bias
        self.activation = activation
        self._attribute, self._algorithm = fused_activation(activation)
        self.reordered = ReorderedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not reads_prepacked(x, self.weight):
            y = super().forward(x)
            return y if self.activation is None else self.activation(y)
        weight = self.reordered.of(self.weight)
        return torch.ops.mkldnn._linear_pointwise(x, weight, self.bias, self._attribute, [], self._algorithm)


class FusedProjections(nn.Module):
    """q, k, v = X W_Q, X W_K, X W_V as one product, X [W_Q; W_K; W_V]^T, the three matrices reordered side by side
    once: one call instead of three, 2.2x faster than three prepacked calls at 370 rows in bf16 on the AMX Xeon,
    1.05x at 2,048. It is handed the attention's own three maps at each call (it holds no parameters, so the state
    dict does not change); where the reordered copy does not apply, or a map is no longer a plain linear one (an
    adapter such as LoRA wrapping it), it calls them."""

    def __init__(self):
        super().__init__()
        self.reordered = ReorderedWeight()

    def forward(self, x: torch.Tensor, *maps: nn.Linear) -> tuple[torch.Tensor, ...]:
        plain = all(type(m) in (nn.Linear, PrepackedLinear) and m.bias is not None for m in maps)
        if not plain or not reads_prepacked(x, maps[0].weight):
            return tuple(m(x) for m in maps)
        weight = self.reordered.of(*(m.weight for m in maps))
        qkv = torch.ops.mkldnn._linear_pointwise(x, weight, torch.cat([m.bias for m in maps]), "none", [], "")
        return qkv.split([m.out_features for m in maps], dim=-1)

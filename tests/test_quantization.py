"""int8 and bf16 for CPU serving: the same forward and outputs, within their rounding, checked against the fp32
model; bf16 is chosen from the CPU's features, as Linux reports them."""

from pathlib import Path

import pytest
import torch
from helpers import padded_batch, tiny_config
from torch import nn

from transformer_encoder import (
    TransformerEncoderForMaskedLM,
    TransformerEncoderForSequenceClassification,
    TransformerEncoderForTokenClassification,
    TransformerEncoderModel,
)
from transformer_encoder import quantization
from transformer_encoder.cpu import BF16_OVERRIDE, cpu_computes_bf16, detects_native_bf16
from transformer_encoder.quantization import quantize_int8, to_bf16_where_native


def outputs(model, input_ids, attention_mask):
    with torch.no_grad():
        return model(input_ids, attention_mask=attention_mask)


def real(tensor, attention_mask):
    return tensor[attention_mask.bool()] if tensor.shape[:2] == attention_mask.shape else tensor


@pytest.mark.parametrize("model_class", [TransformerEncoderModel, TransformerEncoderForMaskedLM,
                                         TransformerEncoderForSequenceClassification,
                                         TransformerEncoderForTokenClassification], ids=lambda c: c.__name__)
def test_int8_model_has_the_same_forward_and_close_outputs(model_class):
    model = model_class(tiny_config(num_labels=3, hidden_size=64, intermediate_size=128)).eval()
    quantized = quantize_int8(model)
    assert type(quantized) is model_class and quantized is not model
    assert not any(type(m) is nn.Linear for m in quantized.modules())  # every linear map quantized
    assert any(type(m) is nn.Linear for m in model.modules())  # the original untouched
    input_ids, attention_mask = padded_batch()
    expected, got = outputs(model, input_ids, attention_mask), outputs(quantized, input_ids, attention_mask)
    assert list(got.keys()) == list(expected.keys())
    for name in expected.keys():
        target, value = real(expected[name], attention_mask), real(got[name], attention_mask)
        assert value.shape == target.shape and value.dtype == torch.float32
        error = (value - target).abs().max()
        assert 0 < error < 0.05 * target.abs().max(), name  # int8 rounding: close, and really quantized


def test_int8_refuses_a_model_it_cannot_quantize():
    model = TransformerEncoderModel(tiny_config())
    with pytest.raises(ValueError, match="float32"):
        quantize_int8(model.to(torch.bfloat16))


def test_bf16_detection_agrees_with_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("needs Linux's /proc/cpuinfo as the independent reference")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    assert detects_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.parametrize("setting, expected", [("1", True), ("0", False), ("", None), (None, None)])
def test_the_environment_overrides_the_detection(monkeypatch, setting, expected):
    if setting is None:
        monkeypatch.delenv(BF16_OVERRIDE, raising=False)
    else:
        monkeypatch.setenv(BF16_OVERRIDE, setting)
    assert cpu_computes_bf16() == (detects_native_bf16() if expected is None else expected)


def test_a_bad_override_is_named(monkeypatch):
    monkeypatch.setenv(BF16_OVERRIDE, "yes")
    with pytest.raises(ValueError, match=f"{BF16_OVERRIDE}='yes'"):
        cpu_computes_bf16()


@pytest.mark.parametrize("native", [True, False])
def test_bf16_where_native_and_fp32_elsewhere(monkeypatch, native):
    monkeypatch.setattr(quantization, "cpu_computes_bf16", lambda: native)
    model = TransformerEncoderModel(tiny_config(hidden_size=64, intermediate_size=128)).eval()
    input_ids, attention_mask = padded_batch()
    expected = outputs(model, input_ids, attention_mask).last_hidden_state
    chosen = to_bf16_where_native(model)
    assert next(chosen.parameters()).dtype == (torch.bfloat16 if native else torch.float32)
    got = outputs(chosen, input_ids, attention_mask).last_hidden_state
    mask = attention_mask.bool()
    if native:  # bf16 keeps 8 bits of mantissa: ~1e-2 relative on unit-scale hidden states (emulated if not native)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float()[mask], expected[mask], atol=0.1, rtol=0.05)
    else:
        torch.testing.assert_close(got[mask], expected[mask], atol=0, rtol=0)

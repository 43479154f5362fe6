"""The fast paths on a GPU, against eager on the same GPU. Skipped where there is no CUDA device (CI); run on a
GPU machine with `python -m pytest tests/test_cuda.py`."""

import pytest
import torch
from helpers import padded_batch, tiny_config

from transformer_encoder import TransformerEncoderForMaskedLM, TransformerEncoderModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = "cuda"
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def implementations():
    found = ["sdpa", "flex_attention"]
    try:
        import flash_attn  # noqa: F401

        found.append("flash_attention_2")
    except ImportError:
        pass
    return found


SMALL = (33, 17, 5, 0)  # kept padded on a GPU
LARGE = tuple(range(64, 0, -1)) * 2 + (0, 3)  # 130 x 64 positions: the real tokens are gathered


@pytest.mark.parametrize("implementation", implementations())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("position", ["sinusoidal", "rotary"])
@pytest.mark.parametrize("lengths", [SMALL, LARGE], ids=["small-batch", "large-batch"])
def test_fast_paths_match_eager_on_gpu(implementation, dtype, position, lengths):
    if implementation == "flash_attention_2" and dtype == torch.float32:
        pytest.skip("flash attention runs in half precision only")
    config = tiny_config(position_embedding_type=position, hidden_size=64, num_attention_heads=4)
    model = TransformerEncoderModel(config).to(CUDA, dtype).eval()
    input_ids, attention_mask = padded_batch(lengths=lengths)
    assert (model._real_positions(attention_mask.to(CUDA)) is None) == (lengths is SMALL)
    input_ids, attention_mask = input_ids.to(CUDA), attention_mask.to(CUDA)
    with torch.no_grad():
        model.set_attn_implementation("eager")
        expected = model(input_ids, attention_mask=attention_mask).last_hidden_state
        model.set_attn_implementation(implementation)
        got = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert torch.isfinite(got).all()  # the fully padded row too
    real = attention_mask.bool()
    torch.testing.assert_close(got[real].float(), expected[real].float(), rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_compiled_training_step_on_gpu_matches_eager_step():
    config = tiny_config(hidden_size=64, num_attention_heads=4, attn_implementation="sdpa")
    input_ids, attention_mask = padded_batch(lengths=(33, 17, 5))
    input_ids, attention_mask = input_ids.to(CUDA), attention_mask.to(CUDA)
    labels = torch.where(attention_mask.bool(), input_ids, -100)
    losses = []
    for compile_model in (False, True):
        torch.manual_seed(0)
        model = TransformerEncoderForMaskedLM(config).to(CUDA)
        step = torch.compile(model, fullgraph=True) if compile_model else model
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step(input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        losses.append((loss.item(), model.lm_head.dense.weight.grad.float().norm().item()))
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)

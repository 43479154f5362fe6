"""The encoder against independent references: the paper's equations written out in float64, torch's own
multi-head attention, and the padding-invariance every encoder owes its users."""

import math

import pytest
import torch
from helpers import padded_batch, tiny_config

from transformer_encoder import TransformerEncoderModel
from transformer_encoder.modeling.modeling_transformer_encoder import (
    RealTokenPositions,
    TransformerEncoderAttention,
    row_count_for,
)


# ---------------------------------------------------------------------------------------------------------------------
# The equations, in float64, one head and one position at a time where the paper speaks of them that way
# ---------------------------------------------------------------------------------------------------------------------


def reference_positional_encoding(seq: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)), by loops."""
    pe = torch.zeros(seq, d_model, dtype=torch.float64)
    for pos in range(seq):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            pe[pos, 2 * i] = math.sin(angle)
            pe[pos, 2 * i + 1] = math.cos(angle)
    return pe


def reference_rotary(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i + d/2}) at position pos by the angle pos · θ^(-2i/d): x is (seq, d)."""
    seq, d = x.shape
    out = x.clone()
    for pos in range(seq):
        for i in range(d // 2):
            angle = pos * theta ** (-2 * i / d)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[pos, i], x[pos, i + d // 2]
            out[pos, i], out[pos, i + d // 2] = a * c - b * s, a * s + b * c
    return out


def layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()


def linear(x, layer):
    return x @ layer.weight.double().T + layer.bias.double()


def reference_encoder(model: TransformerEncoderModel, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One sequence (seq,) with its mask (seq,), through the whole encoder, in float64."""
    config = model.config
    d, h, d_k = config.hidden_size, config.num_attention_heads, config.head_dim
    x = model.embeddings.token_embeddings.weight.double()[input_ids] * math.sqrt(d)
    if config.position_embedding_type == "sinusoidal":
        x = x + reference_positional_encoding(len(input_ids), d)
    elif config.position_embedding_type == "learned":
        x = x + model.embeddings.position_embeddings.weight.double()[: len(input_ids)]
    real = mask.bool()

    def self_attention(x, attention):
        heads = []
        for j in range(h):
            cols = slice(j * d_k, (j + 1) * d_k)
            q = x @ attention.q_proj.weight.double()[cols].T + attention.q_proj.bias.double()[cols]
            k = x @ attention.k_proj.weight.double()[cols].T + attention.k_proj.bias.double()[cols]
            v = x @ attention.v_proj.weight.double()[cols].T + attention.v_proj.bias.double()[cols]
            if config.position_embedding_type == "rotary":
                q, k = reference_rotary(q, config.rope_theta), reference_rotary(k, config.rope_theta)
            head = torch.zeros(len(x), d_k, dtype=torch.float64)
            for t in range(len(x)):  # A(q, K, V) = Σ_i softmax(q · k_i / √d_k) v_i over the real keys i
                scores = torch.stack([q[t] @ k[i] / math.sqrt(d_k) for i in range(len(x)) if real[i]])
                weights = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
                head[t] = sum(w * v[i] for w, i in zip(weights, torch.nonzero(real).flatten()))
            heads.append(head)
        return linear(torch.cat(heads, dim=-1), attention.out_proj)  # Concat(head_1, …, head_h) W_O

    def feed_forward(x, ffn):
        return linear(torch.relu(linear(x, ffn.fc1)), ffn.fc2)  # max(0, x W_1 + b_1) W_2 + b_2

    for layer in model.layers:
        if config.norm_first:
            x = x + self_attention(layer_norm(x, layer.attention_norm), layer.attention)
            x = x + feed_forward(layer_norm(x, layer.feed_forward_norm), layer.feed_forward)
        else:
            x = layer_norm(x + self_attention(x, layer.attention), layer.attention_norm)
            x = layer_norm(x + feed_forward(x, layer.feed_forward), layer.feed_forward_norm)
    if config.norm_first:
        x = layer_norm(x, model.final_norm)
    return x


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_eager_path_matches_the_equations_in_float64(position, norm_first):
    config = tiny_config(position_embedding_type=position, norm_first=norm_first, attn_implementation="eager")
    model = TransformerEncoderModel(config).eval()
    input_ids, attention_mask = padded_batch(lengths=(7, 4))
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        with torch.no_grad():
            ours = model.to(dtype)(input_ids, attention_mask=attention_mask).last_hidden_state
        for row, length in enumerate(attention_mask.sum(-1).tolist()):
            expected = reference_encoder(model, input_ids[row], attention_mask[row])
            torch.testing.assert_close(ours[row, :length].double(), expected[:length], rtol=0, atol=tolerance)


# ---------------------------------------------------------------------------------------------------------------------
# Faster paths against eager
# ---------------------------------------------------------------------------------------------------------------------


def outputs_by_implementation(config, implementations, input_ids, attention_mask):
    model = TransformerEncoderModel(config).eval()
    outputs = {}
    with torch.no_grad():
        for implementation in implementations:
            model.set_attn_implementation(implementation)
            outputs[implementation] = model(input_ids, attention_mask=attention_mask).last_hidden_state
    return outputs


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
@pytest.mark.parametrize("act", ["relu", "geglu"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_sdpa_matches_eager(position, act, norm_first, padding):
    config = tiny_config(position_embedding_type=position, hidden_act=act, norm_first=norm_first)
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 2) if padding else (9, 9, 9))
    outputs = outputs_by_implementation(config, ["eager", "sdpa"], input_ids, attention_mask if padding else None)
    real = attention_mask.bool()
    torch.testing.assert_close(outputs["sdpa"][real], outputs["eager"][real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "each_sequence, round_rows",
    [(True, False), (True, True), (False, False)],
    ids=["each-sequence", "each-sequence-rows-rounded", "re-padded"],
)
@pytest.mark.parametrize("position", ["sinusoidal", "rotary"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_both_ways_of_attending_over_real_tokens_match_eager(monkeypatch, each_sequence, round_rows, position,
                                                             norm_first):
    """The real tokens are gathered once for the whole stack; attention then runs sequence by sequence (CPU), there
    with spare rows that round the row count (bf16, forced here in fp32), or on the tokens re-padded (a GPU's large
    batches, forced here on CPU). All against eager, with a fully padded row and a left-padded one."""
    config = tiny_config(position_embedding_type=position, hidden_act="swiglu", norm_first=norm_first)
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 0, 3))
    attention_mask[1] = attention_mask[1].flip(0)
    model = TransformerEncoderModel(config).eval()
    with torch.no_grad():
        model.set_attn_implementation("eager")
        expected = model(input_ids, attention_mask=attention_mask).last_hidden_state
        model.set_attn_implementation("sdpa")
        made = []

        def real_positions(mask, recording_hidden_states, dtype):
            made.append(RealTokenPositions(mask, each_sequence, round_rows))
            return made[-1]

        monkeypatch.setattr(model, "_real_positions", real_positions)
        got = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert len(made) == 1 and made[0].each_sequence == each_sequence
    # 26 real tokens (the fully padded row attends to its 9 positions), rounded up to 32 rows
    assert made[0].spare == (6 if round_rows else 0)
    assert torch.isfinite(got).all()
    real = attention_mask.bool()
    real[2] = True  # the fully padded row attends to all its positions: its outputs are defined, and compared
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)


def test_row_counts_are_few_and_close_to_the_real_count():
    """Rounded row counts: eight an octave (16 below 256 rows), each at most 1/8 above the real count."""
    counts = {n: row_count_for(n) for n in range(1, 4097)}
    assert all(n <= rows <= n + max(15, n // 8) and rows % 16 == 0 for n, rows in counts.items())
    assert len(set(counts.values())) == 16 + 8 * 4  # 16 up to 256 rows, then 8 in each octave to 4,096
    assert [row_count_for(n) for n in (1, 16, 17, 255, 257, 378, 2047, 2048)] == [16, 16, 32, 256, 288, 384, 2048, 2048]


@pytest.mark.parametrize("dtype, rounded", [(torch.float32, False), (torch.bfloat16, True), (torch.float16, True)])
def test_half_precision_rounds_the_rows_and_matches_float32(dtype, rounded):
    """bf16 and fp16 on CPU round the row count (oneDNN builds a kernel for each); the outputs at real positions
    stay those of the float32 model, within the precision."""
    model = TransformerEncoderModel(tiny_config()).eval()
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 3))
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask).last_hidden_state
        positions = model._real_positions(attention_mask, False, dtype)
        got = model.to(dtype)(input_ids, attention_mask=attention_mask).last_hidden_state.float()
    assert positions.each_sequence and positions.spare == (32 - 17 if rounded else 0)
    real = attention_mask.bool()
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got[real], expected[real], rtol=tolerance, atol=tolerance)


def test_recorded_hidden_states_keep_the_batch_shape():
    """Recording every block's output keeps the padding, so that each is (batch, seq, d_model) as users expect."""
    config = tiny_config()
    model = TransformerEncoderModel(config).eval()
    input_ids, attention_mask = padded_batch(lengths=(7, 4))
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        plain = model(input_ids, attention_mask=attention_mask)
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 7, config.hidden_size)] * (config.num_hidden_layers + 1)
    real = attention_mask.bool()
    torch.testing.assert_close(out.last_hidden_state[real], plain.last_hidden_state[real], rtol=1e-5, atol=1e-5)


def test_flex_attention_matches_eager():
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 2))
    outputs = outputs_by_implementation(tiny_config(), ["eager", "flex_attention"], input_ids, attention_mask)
    real = attention_mask.bool()
    torch.testing.assert_close(outputs["flex_attention"][real], outputs["eager"][real], rtol=1e-5, atol=1e-5)


def test_no_attention_is_causal():
    """A later token must change an earlier token's output: nothing in an encoder is causal."""
    input_ids, _ = padded_batch(lengths=(6,))
    changed = input_ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 99
    for implementation in ("eager", "sdpa"):
        model = TransformerEncoderModel(tiny_config(attn_implementation=implementation)).eval()
        with torch.no_grad():
            before = model(input_ids).last_hidden_state[0, 0]
            after = model(changed).last_hidden_state[0, 0]
        assert (before - after).abs().max() > 1e-4, implementation


# ---------------------------------------------------------------------------------------------------------------------
# Against torch.nn.MultiheadAttention with the same weights
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_layer_matches_torch_multihead_attention(implementation):
    config = tiny_config(attn_implementation=implementation)
    ours = TransformerEncoderAttention(config).eval()
    torch_mha = torch.nn.MultiheadAttention(config.hidden_size, config.num_attention_heads, batch_first=True).eval()
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        torch_mha.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        torch_mha.out_proj.weight.copy_(ours.out_proj.weight)
        torch_mha.out_proj.bias.copy_(ours.out_proj.bias)

    x = torch.randn(3, 8, config.hidden_size)
    _, attention_mask = padded_batch(lengths=(8, 5, 3))
    additive = (1 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    mask = attention_mask[:, None, None, :].bool() if implementation == "sdpa" else additive
    with torch.no_grad():
        out, weights = ours(x, mask)
        expected, expected_weights = torch_mha(
            x, x, x, key_padding_mask=~attention_mask.bool(), average_attn_weights=False
        )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if implementation == "eager":
        torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Padding
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
def test_padding_does_not_change_real_positions(implementation, position):
    model = TransformerEncoderModel(
        tiny_config(position_embedding_type=position, attn_implementation=implementation)
    ).eval()
    input_ids, attention_mask = padded_batch(lengths=(10, 6, 3))
    with torch.no_grad():
        padded = model(input_ids, attention_mask=attention_mask)
        for row, length in enumerate(attention_mask.sum(-1).tolist()):
            alone = model(input_ids[row : row + 1, :length])
            torch.testing.assert_close(
                padded.last_hidden_state[row, :length], alone.last_hidden_state[0], rtol=1e-5, atol=1e-5
            )
            torch.testing.assert_close(padded.pooler_output[row], alone.pooler_output[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_fully_padded_row_is_finite_and_leaves_other_rows_alone(implementation):
    model = TransformerEncoderModel(tiny_config(attn_implementation=implementation))
    input_ids, attention_mask = padded_batch(lengths=(6, 3, 0))
    out = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        without_empty_row = model(input_ids[:2], attention_mask=attention_mask[:2]).last_hidden_state
    torch.testing.assert_close(out[:2].detach(), without_empty_row, rtol=1e-5, atol=1e-5)

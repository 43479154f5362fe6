"""The encoder against independent references: the paper's equations written out in float64, torch's own
multi-head attention, and the padding-invariance every encoder owes its users."""

import math

import pytest
import torch
from helpers import padded_batch, tiny_config

from transformer_encoder import TransformerEncoderModel
from transformer_encoder.modeling import modeling_transformer_encoder as modeling
from transformer_encoder.modeling.modeling_transformer_encoder import RealTokenPositions, TransformerEncoderAttention


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


@pytest.mark.parametrize("each_sequence", [True, False], ids=["each-sequence", "re-padded"])
@pytest.mark.parametrize("position", ["sinusoidal", "rotary"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("tile_rows", [8, 32], ids=["two-tiles", "one-tile"])
def test_both_ways_of_attending_over_real_tokens_match_eager(monkeypatch, each_sequence, position, norm_first,
                                                             tile_rows):
    """The real tokens are gathered once for the whole stack; attention then runs within each sequence over tiles
    of packed sequences (CPU; here in one tile, and, with smaller tiles, in several) or on the tokens re-padded (a
    GPU's large batches, forced here on CPU). Both against eager, with a fully padded row and a left-padded one."""
    monkeypatch.setattr(modeling, "TILE_ROWS", tile_rows)
    config = tiny_config(position_embedding_type=position, hidden_act="swiglu", norm_first=norm_first)
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 0, 3))
    attention_mask[1] = attention_mask[1].flip(0)
    model = TransformerEncoderModel(config).eval()
    with torch.no_grad():
        model.set_attn_implementation("eager")
        expected = model(input_ids, attention_mask=attention_mask).last_hidden_state
        model.set_attn_implementation("sdpa")
        made = []

        def real_positions(mask, recording_hidden_states):
            made.append(RealTokenPositions(mask, each_sequence))
            return made[-1]

        monkeypatch.setattr(model, "_real_positions", real_positions)
        got = model(input_ids, attention_mask=attention_mask).last_hidden_state
    assert len(made) == 1 and made[0].each_sequence == each_sequence
    if each_sequence:  # 9, 5, 9 (the fully padded row attends to its 9 positions) and 3 tokens
        assert (made[0].tile, len(made[0].gather)) == ((16, 2 * 16) if tile_rows == 8 else (32, 32))  # 9+5, 9+3
    assert torch.isfinite(got).all()
    real = attention_mask.bool()
    real[2] = True  # the fully padded row attends to all its positions: its outputs are defined, and compared
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)


def test_first_fit_decreasing_packs_longest_first_into_the_first_bin_with_room():
    assert modeling.first_fit_decreasing([30, 40, 20, 50, 10, 0], 64) == [[3, 4], [1, 2], [0]]
    assert modeling.first_fit_decreasing([64, 1], 64) == [[0], [1]]


@pytest.mark.parametrize(
    "lengths, tile, bins",
    [
        ((9, 5, 1), 16, [[0, 1, 2]]),  # a few short sequences: one tight tile, not 64 rows
        ((30, 30, 30, 30), 64, [[0, 1], [2, 3]]),  # as many rows in tiles of 32: TILE_ROWS
        ((40, 40), 48, [[0], [1]]),  # 96 rows, not 128
        ((100, 20), 112, [[0], [1]]),  # longer than TILE_ROWS: the tight tile
    ],
)
def test_tiling_takes_tile_rows_unless_a_tight_tile_leaves_fewer_rows(lengths, tile, bins):
    assert modeling.tiling(list(lengths)) == (tile, bins)


@pytest.mark.parametrize("lengths", [(9, 5, 3), (1, 60, 5, 2, 64, 30), (65, 3), (20,) * 12])
def test_tiles_hold_whole_sequences_and_each_token_sees_its_own(lengths):
    """Every real token gets one row, which reads its position; a token's row sees exactly the rows of its own
    sequence; a filler row sees only itself; no sequence spans two tiles."""
    _, attention_mask = padded_batch(lengths=lengths)
    attention_mask[0] = attention_mask[0].roll(2)  # not only right padding
    positions = RealTokenPositions(attention_mask, each_sequence=True)
    tile, rows = positions.tile, len(positions.gather)
    assert tile >= max(lengths) and tile % 16 == 0 and rows % tile == 0
    assert torch.equal(positions.gather[positions.real_rows], positions.indices)
    sequence = torch.full((rows,), -1)
    sequence[positions.real_rows] = torch.arange(len(lengths)).repeat_interleave(torch.tensor(lengths))
    sees = (sequence[:, None] == sequence[None, :]) & (sequence[:, None] >= 0)
    sees |= torch.eye(rows, dtype=torch.bool) & (sequence[:, None] < 0)
    blocks = [sees[t:t + tile, t:t + tile] for t in range(0, rows, tile)]
    assert torch.equal(positions.tile_mask, torch.stack(blocks)[:, None])
    assert sum(block.sum() for block in blocks) == sees.sum()  # no sequence spans two tiles


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_over_tiles_matches_float32(dtype):
    """The tiled path in bf16 and fp16 (their CPU serving precisions) against the float32 model, within the
    precision."""
    model = TransformerEncoderModel(tiny_config()).eval()
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 3))
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask).last_hidden_state
        got = model.to(dtype)(input_ids, attention_mask=attention_mask).last_hidden_state.float()
    assert model._real_positions(attention_mask).each_sequence
    real = attention_mask.bool()
    torch.testing.assert_close(got[real], expected[real], rtol=5e-2, atol=5e-2)


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

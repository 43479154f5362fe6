# Copyright 2026 The transformer-encoder authors. Licensed under the Apache License, Version 2.0.
"""The Transformer encoder of *Attention Is All You Need* (Vaswani et al., 2017), as a transformers model.

The file reads in the paper's order:

    positional encoding (§3.5) → embeddings (§3.4)
    → scaled dot-product attention, Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V   (§3.2.1, `eager_attention_forward`)
    → multi-head attention, Concat(head_1, …, head_h) W_O                          (§3.2.2, `TransformerEncoderAttention`)
    → position-wise feed-forward, FFN(x) = max(0, x W_1 + b_1) W_2 + b_2          (§3.3, `TransformerEncoderFeedForward`)
    → encoder block, LayerNorm(x + Sublayer(x)) twice                              (§3.1, `TransformerEncoderLayer`)
    → N blocks (`TransformerEncoderModel`) → task heads.

`eager_attention_forward` is the equation, written once; `attn_implementation="sdpa"` (the default),
`"flash_attention_2"` and `"flex_attention"` are transformers' kernels for the same function, reached through
`ALL_ATTENTION_FUNCTIONS`, and tested against it.

`save_pretrained` copies this file and `configuration_transformer_encoder.py` flat into the checkpoint, so that
it loads with `trust_remote_code=True` where this package is not installed: it imports only torch, transformers
and its sibling configuration file.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_transformer_encoder import GATED_ACTIVATIONS, TransformerEncoderConfig


# ---------------------------------------------------------------------------------------------------------------------
# Positional encoding (§3.5)
# ---------------------------------------------------------------------------------------------------------------------


def _angles(position_ids: torch.Tensor, dim: int, base: float, dtype: torch.dtype) -> torch.Tensor:
    """pos / base^(2i / dim) for i < dim / 2, in float32 at least (half precision would blur long positions)."""
    compute_dtype = torch.promote_types(dtype, torch.float32)
    exponents = torch.arange(0, dim, 2, device=position_ids.device, dtype=compute_dtype) / dim
    return position_ids.to(compute_dtype)[..., None] * base**-exponents


def sinusoidal_position_encoding(position_ids: torch.Tensor, d_model: int, dtype: torch.dtype) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i / d_model)),  PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model)).

    Computed from the positions rather than read from a table, so there is no length limit and no buffer to
    restore on load. Returns (batch or 1, seq, d_model), as position_ids is (batch or 1, seq).
    """
    angles = _angles(position_ids, d_model, 10000.0, dtype)  # (batch, seq, d_model / 2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)  # sin, cos, sin, cos, …


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos and sin of the rotary angles pos · θ^(-2i / d_k) (Su et al., 2021), each (batch or 1, seq, d_k)."""
    angles = _angles(position_ids, head_dim, theta, dtype)  # (batch, seq, d_k / 2)
    angles = torch.cat((angles, angles), dim=-1)  # (batch, seq, d_k): dimension i pairs with i + d_k / 2
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i + d_k/2}) of x (batch, heads, seq, d_k) by its position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated_half = torch.cat((-x2, x1), dim=-1)
    return x * cos[:, None] + rotated_half * sin[:, None]


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings (§3.4)
# ---------------------------------------------------------------------------------------------------------------------


class TransformerEncoderEmbeddings(nn.Module):
    """Token embeddings (scaled by √d_model, as the paper does) + positions (+ segments), then dropout; BERT-family
    checkpoints add a layer norm before the dropout and read learned positions from an offset."""

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__()
        self.position_embedding_type = config.position_embedding_type
        self.hidden_size = config.hidden_size
        self.scale = math.sqrt(config.hidden_size) if config.scale_embeddings else 1.0
        self.token_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size)
            if config.position_embedding_type == "learned"
            else None
        )
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size > 0 else None
        )
        self.position_offset = config.position_offset
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.embedding_layer_norm else None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        position_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.token_embeddings(input_ids)
        embeddings = inputs_embeds * self.scale
        if self.position_embedding_type == "sinusoidal":
            embeddings = embeddings + sinusoidal_position_encoding(position_ids, self.hidden_size, embeddings.dtype)
        elif self.position_embedding_type == "learned":
            embeddings = embeddings + self.position_embeddings(position_ids + self.position_offset)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(position_ids)
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        if self.norm is not None:
            embeddings = self.norm(embeddings)
        return self.dropout(embeddings)


# ---------------------------------------------------------------------------------------------------------------------
# Real tokens: where a padded batch holds them, to skip the padding in the fast paths
# ---------------------------------------------------------------------------------------------------------------------


# batch × sequence positions below which a GPU batch keeps its padding: measured on an H200, where skipping the
# padding of small batches made them slower (benchmarks/results/gpu-unpad-threshold.md)
GPU_UNPAD_MIN_POSITIONS = 8192


# The tile size (see RealTokenPositions) where sequences are shorter: on SST-2 sentences attention over tiles of 64
# rows took 0.28 ms a block, of 32 or 128 rows 0.39
TILE_ROWS = 64


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """The rows of a batch in bins whose lengths add up to `capacity` at most: longest first, each into the first
    bin with room for it. Rows of length 0 go in none."""
    bins, room = [], []
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        if lengths[row] == 0:
            continue
        fits = next((b for b, free in enumerate(room) if lengths[row] <= free), len(bins))
        if fits == len(bins):
            bins.append([])
            room.append(capacity)
        bins[fits].append(row)
        room[fits] -= lengths[row]
    return bins


def tiling(lengths: list[int]) -> tuple[int, list[list[int]]]:
    """The tile size and the rows of the batch packed into tiles of that size: TILE_ROWS, unless the longest
    sequence rounded up to 16 rows leaves fewer rows (a few short sequences, or sequences longer than TILE_ROWS)."""
    tight = -(-max(lengths) // 16) * 16
    packings = [(size, first_fit_decreasing(lengths, size)) for size in (TILE_ROWS, tight) if size >= tight]
    return min(packings, key=lambda packing: len(packing[1]) * packing[0])  # the first of equals: TILE_ROWS


class RealTokenPositions:
    """Where the real (non-padding) tokens of a padded (batch, seq) batch are. They are gathered once, before the first
    block, into a (rows, …) tensor; every linear map, activation and layer norm runs on those rows alone, and they
    are scattered back once, after the last block. On sentence-length data most of a padded batch is padding, so
    this saves most of the work.

    Only attention looks across positions. With `each_sequence` (CPU inference) the rows are tiles of `tile` rows
    (`tiling`: TILE_ROWS, or the longest sequence rounded up to 16 where that leaves fewer rows), each holding whole
    sequences, packed by first-fit decreasing, and filler rows after them (about 10 % of the rows on SST-2);
    attention runs in one call over the tiles, each token seeing its own sequence only (`tile_mask`,
    block-diagonal; a filler row sees itself). One call instead of one per sequence: on CPU a call costs ~30 µs
    whatever its size, and sentences are short (SST-2: 0.28 against 0.72 ms a block). The row count is then a
    multiple of the tile: oneDNN builds a bf16 kernel for every new row count (2-12 ms a map), so the fewer counts
    the better. Otherwise (GPU, training) attention sees the tokens re-padded into their (batch, seq) places, one
    call with a padding mask, as measured on an H200; the tiles have not been timed on a GPU."""

    def __init__(self, attention_mask: torch.Tensor, each_sequence: bool):
        self.shape = tuple(attention_mask.shape)
        self.indices = attention_mask.flatten().nonzero().squeeze(-1)  # flat positions of the real tokens
        self.gather, self.real_rows, self.tile_mask = self.indices, None, None
        if each_sequence:
            self._tile(attention_mask.sum(-1))

    def _tile(self, lengths: torch.Tensor):
        """The tiled rows: `gather` (the flat position each row reads; filler rows read position 0), `real_rows`
        (the row of each real token, in `indices` order) and `tile_mask`."""
        counts = lengths.tolist()
        self.tile, bins = tiling(counts)
        first_row = [0] * len(counts)  # where each sequence starts in the tiled rows
        for b, members in enumerate(bins):
            offset = b * self.tile
            for row in members:
                first_row[row], offset = offset, offset + counts[row]
        sequence = torch.arange(len(counts)).repeat_interleave(lengths)  # each real token's sequence
        starts = lengths.cumsum(0) - lengths  # each sequence's first token among the real tokens
        self.real_rows = torch.tensor(first_row)[sequence] + torch.arange(len(sequence)) - starts[sequence]
        n_rows = len(bins) * self.tile
        self.gather = self.indices.new_zeros(n_rows).index_copy_(0, self.real_rows, self.indices)
        owner = torch.arange(len(counts), len(counts) + n_rows).index_copy_(0, self.real_rows, sequence)
        owner = owner.view(len(bins), self.tile)  # each row's sequence; each filler row its own
        self.tile_mask = (owner[:, :, None] == owner[:, None, :])[:, None]  # (tiles, 1, tile, tile)

    @property
    def each_sequence(self) -> bool:
        """Whether attention runs within each sequence on the tiled real tokens (else on them re-padded)."""
        return self.tile_mask is not None

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, …) → (rows, …). A (1, seq, …) tensor, the same for every row (the default positions'
        rotary angles), is read at each real token's position, without first copying it out to every row."""
        if x.shape[0] == 1 < self.shape[0]:
            return x[0][self.gather % self.shape[1]]
        return x.flatten(0, 1)[self.gather]

    def pad(self, x: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
        """(rows, …) → (batch, seq, …), padding positions taken from `fill` (zeros by default)."""
        padded = fill.flatten(0, 1) if fill is not None else x.new_zeros(self.shape[0] * self.shape[1], *x.shape[1:])
        real = x if self.real_rows is None else x[self.real_rows]
        return padded.index_copy(0, self.indices, real).view(*self.shape, *x.shape[1:])


# ---------------------------------------------------------------------------------------------------------------------
# Attention (§3.2)
# ---------------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, every head and every token at once:

        Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

    query, key, value: (batch, heads, seq, d_k). attention_mask: additive, (batch, 1, seq, seq), holding the
    dtype's minimum at padded keys so that they get zero weight. Returns the output as (batch, seq, heads, d_k)
    and the weights as (batch, heads, seq, seq).
    """
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling  # q · k_i / √d_k for every pair
    if attention_mask is not None:
        scores = scores + attention_mask
    # softmax in float32 at least: in bf16/fp16 the sum over keys loses the small weights.
    weights = scores.softmax(dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # Σ_i softmax(q · k_i / √d_k) v_i
    return output.transpose(1, 2).contiguous(), weights


class TransformerEncoderAttention(nn.Module):
    """Multi-head self-attention:

        MultiHead(X) = Concat(head_1, …, head_h) W_O,   head_j = Attention(X W_Q^j, X W_K^j, X W_V^j)

    The h projections W_Q^j (d_model × d_k each) are the column blocks of one d_model × d_model matrix, `q_proj`;
    likewise `k_proj`, `v_proj`. `out_proj` is W_O.
    """

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.d_k = config.head_dim
        self.scaling = self.d_k**-0.5
        self.dropout = config.attention_probs_dropout_prob
        # An encoder: every token attends to every other. SDPA and flash attention read this flag and would
        # otherwise apply a causal mask whenever there is no padding.
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        # Serving may compute X W_Q, X W_K, X W_V as one product with the three matrices side by side (set by
        # transformer_encoder.quantization.to_bf16_where_native): the same maps, one call, in inference; otherwise
        # it calls the three maps.
        self.fused_qkv = None

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v = X W_Q, X W_K, X W_V."""
        if self.fused_qkv is not None:
            return self.fused_qkv(x, self.q_proj, self.k_proj, self.v_proj)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        real_positions: RealTokenPositions | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states: (batch, seq, d_model), or with `real_positions` the real tokens' rows, (rows, d_model):
        the projections then skip padding, and attention sees each sequence's real tokens (see RealTokenPositions)."""
        q, k, v = self.project(hidden_states)
        if real_positions is not None and real_positions.each_sequence:
            return self.out_proj(self.attend_each_sequence(q, k, v, position_embeddings, real_positions)), None

        batch, seq = real_positions.shape if real_positions is not None else hidden_states.shape[:2]

        def split_heads(x):  # (batch, seq, d_model) → (batch, h, seq, d_k)
            x = real_positions.pad(x) if real_positions is not None else x
            return x.view(batch, seq, self.num_heads, self.d_k).transpose(1, 2)

        q, k, v = split_heads(q), split_heads(k), split_heads(v)
        if position_embeddings is not None:  # rotary positions act on queries and keys only
            cos, sin = position_embeddings
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = output.reshape(batch, seq, -1)  # Concat(head_1, …, head_h): (batch, seq, h · d_k)
        if real_positions is not None:
            output = real_positions.unpad(output)
        return self.out_proj(output), weights

    def attend_each_sequence(self, q, k, v, position_embeddings, real_positions: RealTokenPositions) -> torch.Tensor:
        """Attention within each sequence's real tokens, by torch's SDPA kernel, one call over the tiles of
        `real_positions` (see RealTokenPositions), each token's keys its own sequence's. Inference only (no
        dropout). q, k, v: (rows, d_model) → (rows, d_model); the rotary cos and sin come gathered at the same
        rows, (rows, d_k), once for every block."""
        tile = real_positions.tile

        def split_heads(x):  # (rows, d_model) → (tiles, h, tile, d_k)
            return x.view(-1, tile, self.num_heads, self.d_k).transpose(1, 2)

        q, k, v = split_heads(q), split_heads(k), split_heads(v)
        if position_embeddings is not None:
            cos, sin = (t.view(-1, tile, self.d_k) for t in position_embeddings)  # (tiles, tile, d_k)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        output = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=real_positions.tile_mask, scale=self.scaling
        )
        return output.transpose(1, 2).flatten(0, 1).flatten(1)  # (rows, h · d_k): Concat(head_1, …, head_h)


# ---------------------------------------------------------------------------------------------------------------------
# Position-wise feed-forward network (§3.3) and the encoder block (§3.1)
# ---------------------------------------------------------------------------------------------------------------------


class TransformerEncoderFeedForward(nn.Module):
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2, the same two linear maps at every position (act = ReLU in the paper).

    Gated variants (`"geglu"`, `"swiglu"`, `"reglu"`) compute (x W_1 ⊙ act(x W_g)) W_2: `fc1` holds W_1 and W_g
    side by side.
    """

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__()
        self.gated = config.is_gated
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size * (2 if self.gated else 1))  # W_1
        self.act = ACT2FN[GATED_ACTIVATIONS.get(config.hidden_act, config.hidden_act)]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)  # W_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            h, gate = self.fc1(x).chunk(2, dim=-1)
            return self.fc2(h * self.act(gate))
        return self.fc2(self.act(self.fc1(x)))


class TransformerEncoderLayer(GradientCheckpointingLayer):
    """One encoder block: multi-head self-attention, then the feed-forward network, each wrapped as

        LayerNorm(x + Dropout(Sublayer(x)))        (the paper: post-norm)
        x + Dropout(Sublayer(LayerNorm(x)))        (config.norm_first: pre-norm)
    """

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__()
        self.norm_first = config.norm_first
        self.attention = TransformerEncoderAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = TransformerEncoderFeedForward(config)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def residual(self, x: torch.Tensor, sublayer, norm: nn.LayerNorm) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        real_positions: RealTokenPositions | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        """(batch, seq, d_model) in and out, or with `real_positions` (rows, d_model): the real tokens' rows."""

        def self_attention(x):
            return self.attention(x, attention_mask, position_embeddings, real_positions, **kwargs)[0]

        x = self.residual(hidden_states, self_attention, self.attention_norm)
        return self.residual(x, self.feed_forward, self.feed_forward_norm)


class TransformerEncoderPooler(nn.Module):
    """tanh(W h_0 + b) over the first token, as BERT: the sequence summary the classification head reads."""

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


# ---------------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------------

class TransformerEncoderPreTrainedModel(PreTrainedModel):
    config: TransformerEncoderConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerEncoderEmbeddings", "TransformerEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": TransformerEncoderLayer, "attentions": TransformerEncoderAttention}

    def __init__(self, config: TransformerEncoderConfig, *args, **kwargs):
        config.validate_architecture()  # a config edited after construction is checked again here
        super().__init__(config, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:  # safetensors' message names neither the folder nor the file
            bad = _unreadable_safetensors(pretrained_model_name_or_path) or ["its model.safetensors"]
            raise OSError(
                f"Cannot load the weights of {pretrained_model_name_or_path}: {', '.join(bad)} is truncated or "
                f"corrupt ({error}). Save or download the checkpoint again."
            ) from error

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as transformers does (config.json, model.safetensors) plus this model's code and an `auto_map` that
        names every Auto class, so the folder, and a Hub repo made from it, load with `trust_remote_code=True`."""
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


class TransformerEncoderModel(TransformerEncoderPreTrainedModel):
    """The encoder: embeddings, then N blocks; returns every token's final representation and, with the pooling
    layer, a summary of the first token (`pooler_output`)."""

    def __init__(self, config: TransformerEncoderConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = TransformerEncoderEmbeddings(config)
        self.layers = nn.ModuleList([TransformerEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        # Pre-norm blocks leave the residual stream unnormalised; post-norm blocks end in a layer norm already.
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm_first else None
        self.pooler = TransformerEncoderPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.token_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.embeddings.token_embeddings = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch, seq)`): token ids, below `config.vocab_size`.
        attention_mask (`torch.Tensor` of shape `(batch, seq)`): 1 for real tokens, 0 for padding.
        token_type_ids (`torch.LongTensor` of shape `(batch, seq)`): segment ids, below `config.type_vocab_size`.
        position_ids (`torch.LongTensor` of shape `(batch, seq)`): positions; `0 … seq - 1` by default.
        inputs_embeds (`torch.Tensor` of shape `(batch, seq, hidden_size)`): token embeddings, instead of input_ids.
        """
        self._check_inputs(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        seq = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        if position_ids is None:  # (1, seq): the positions are looked up or computed once and broadcast over the batch
            position_ids = torch.arange(seq, device=device)[None]

        hidden_states = self.embeddings(input_ids, inputs_embeds, position_ids, token_type_ids)
        position_embeddings = None
        if self.config.position_embedding_type == "rotary":
            position_embeddings = rotary_cos_sin(
                position_ids, self.config.head_dim, self.config.rope_theta, hidden_states.dtype
            )

        if attention_mask is not None and attention_mask.dim() == 2:
            # A row with no real token has no key to attend to: softmax over nothing is NaN. Such a row attends to
            # all its positions instead, so its (meaningless, padding) outputs stay finite.
            attention_mask = attention_mask.masked_fill(~attention_mask.bool().any(-1, keepdim=True), 1)
        recording = kwargs.get("output_hidden_states", self.config.output_hidden_states)  # as capture_outputs reads it
        real_positions = self._real_positions(attention_mask, recording)
        if real_positions is not None and real_positions.each_sequence:
            attention_mask = None  # attention runs on each sequence's real tokens alone: there is nothing to mask
            if position_embeddings is not None:  # the real tokens' rotary angles, gathered once for every block
                position_embeddings = tuple(real_positions.unpad(t) for t in position_embeddings)
        else:
            attention_mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
            )

        embeddings = hidden_states
        if real_positions is not None:  # the real tokens, gathered once for the whole stack: (rows, d_model)
            hidden_states = real_positions.unpad(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, position_embeddings, real_positions, **kwargs)
        if real_positions is not None:
            # Scattered back once. The padding positions keep their embeddings: they mean nothing, but losses that
            # read every position (extractive QA's) see what they saw before the blocks skipped padding.
            hidden_states = real_positions.pad(hidden_states, fill=embeddings)
        if self.final_norm is not None:
            hidden_states = self.final_norm(hidden_states)

        pooled = self.pooler(hidden_states) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled)

    def _real_positions(
        self, attention_mask: torch.Tensor | None, recording_hidden_states: bool = False
    ) -> RealTokenPositions | None:
        """Skip the padding in the fast paths: not in eager (the reference, computed as the equations say), not
        under torch.compile, torch.export or ONNX export (the number of real tokens would be a data-dependent
        shape, or a constant baked into the graph), not without padding, not when every block's hidden states are
        recorded (users get them as (batch, seq, d_model) tensors), and not for small batches on a GPU, whose time
        goes to launching kernels, which the gathers add to (measured: benchmarks/results/results-cuda*.md)."""
        if (
            attention_mask is None
            or attention_mask.dim() != 2
            or self.config._attn_implementation == "eager"
            or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export()
            or recording_hidden_states
            or (attention_mask.is_cuda and attention_mask.numel() < GPU_UNPAD_MIN_POSITIONS)
            or attention_mask.bool().all()
        ):
            return None
        # Attention over tiles is torch's SDPA kernel on CPU (see RealTokenPositions), in inference: a training step
        # keeps the re-padded call, which draws its attention dropout as it always has.
        each_sequence = (
            attention_mask.device.type == "cpu" and self.config._attn_implementation == "sdpa" and not self.training
        )
        return RealTokenPositions(attention_mask, each_sequence)

    def _check_inputs(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds):
        """Shape and range errors, raised before any kernel runs (an out-of-range id is a device-side assert on
        CUDA and an IndexError deep in torch on CPU)."""
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"`input_ids` must be (batch, sequence_length), got shape {tuple(input_ids.shape)}.")
            shape = tuple(input_ids.shape)
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
                raise ValueError(
                    f"`inputs_embeds` must be (batch, sequence_length, {config.hidden_size}), "
                    f"got shape {tuple(inputs_embeds.shape)}."
                )
            shape = tuple(inputs_embeds.shape[:2])
        if attention_mask is not None:
            if attention_mask.dim() == 2 and tuple(attention_mask.shape) != shape:
                raise ValueError(
                    f"`attention_mask` has shape {tuple(attention_mask.shape)} but the inputs have shape {shape}: "
                    "pass one mask value per token (1 = real token, 0 = padding)."
                )
            if attention_mask.dim() not in (2, 4):
                raise ValueError(f"`attention_mask` must be (batch, seq) or 4D, got {tuple(attention_mask.shape)}.")
        for name, ids in (("token_type_ids", token_type_ids), ("position_ids", position_ids)):
            if ids is not None and (ids.dim() != 2 or ids.shape[1] != shape[1] or ids.shape[0] not in (1, shape[0])):
                raise ValueError(f"`{name}` has shape {tuple(ids.shape)}; expected {shape} to match the inputs.")
        longest = config.learned_positions
        if config.position_embedding_type == "learned" and shape[1] > longest:
            raise ValueError(
                f"The sequence has {shape[1]} tokens but the learned positions hold {longest} "
                f"(max_position_embeddings={config.max_position_embeddings}): truncate the inputs "
                f"(tokenizer(..., truncation=True, max_length={longest})) or use sinusoidal/rotary positions."
            )
        if torch.compiler.is_compiling():
            return  # the range checks below read tensor values: a graph break under torch.compile
        checks = [("input_ids", input_ids, config.vocab_size, "vocab_size"),
                  ("token_type_ids", token_type_ids, max(config.type_vocab_size, 1), "type_vocab_size")]
        if config.position_embedding_type == "learned":
            checks.append(("position_ids", position_ids, longest, "max_position_embeddings - position_offset"))
        _check_ranges(checks)


def _unreadable_safetensors(folder) -> list[str]:
    """The weight files of a local checkpoint folder that safetensors cannot open."""
    if not os.path.isdir(folder):
        return []
    unreadable = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError:
            unreadable.append(str(path))
    return unreadable


def _check_ranges(checks: list[tuple[str, torch.Tensor | None, int, str]]):
    """Every (name, ids, limit, limit_name) within [0, limit). The bounds of all the ids are read from the device
    in one transfer: on a GPU each read waits for the queue to drain, so one sync per forward instead of six."""
    given = [(name, ids, limit, limit_name) for name, ids, limit, limit_name in checks
             if ids is not None and ids.numel() > 0]
    if not given:
        return
    device = given[0][1].device
    bounds = torch.stack([torch.stack((ids.min(), ids.max())).to(device) for _, ids, _, _ in given]).tolist()
    for (name, _, limit, limit_name), (low, high) in zip(given, bounds):
        if low < 0 or high >= limit:
            raise ValueError(
                f"`{name}` holds values in [{low}, {high}] but the model accepts [0, {limit - 1}] "
                f"(config.{limit_name}={limit}). Check that the tokenizer matches the model, or resize the embeddings."
            )


# ---------------------------------------------------------------------------------------------------------------------
# Task heads
# ---------------------------------------------------------------------------------------------------------------------


class TransformerEncoderLMHead(nn.Module):
    """Masked-LM head: transform (dense, activation, layer norm), then project to the vocabulary. The projection
    is tied to the token embeddings when `config.tie_word_embeddings` is set."""

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[GATED_ACTIVATIONS.get(config.hidden_act, config.hidden_act)]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden_states))))


class TransformerEncoderForMaskedLM(TransformerEncoderPreTrainedModel):
    _tied_weights_keys = {"lm_head.decoder.weight": "model.embeddings.token_embeddings.weight"}

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__(config)
        self.model = TransformerEncoderModel(config, add_pooling_layer=False)
        self.lm_head = TransformerEncoderLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.lm_head.decoder = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch, seq)`): the original ids at masked positions, -100 elsewhere
            (ignored). Pass `num_items_in_batch` to normalise the loss by a count across accumulation steps and
            processes instead of this batch's mean.
        """
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if labels is not None and self.config.sparse_prediction and not torch.compiler.is_compiling():
            labelled = labels != -100  # the vocabulary projection is the costliest layer: run it where it counts
            hidden_states, labels = hidden_states[labelled], labels[labelled]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


@dataclass
class TransformerEncoderForPreTrainingOutput(ModelOutput):
    r"""
    Output of [`TransformerEncoderForPreTraining`] (as transformers' `ElectraForPreTrainingOutput`).

    loss (`torch.FloatTensor` of shape `()`): the replaced-token-detection loss, when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch, seq)`): one score per token; above 0 means "replaced".
    hidden_states, attentions: as every head's, with `output_hidden_states` / `output_attentions`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class TransformerEncoderDiscriminatorHead(nn.Module):
    """ELECTRA's discriminator head: dense, activation, then one logit per token for "this token was replaced"."""

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[GATED_ACTIVATIONS.get(config.hidden_act, config.hidden_act)]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.act(self.dense(hidden_states))).squeeze(-1)


def replaced_token_detection_loss(logits, labels, attention_mask=None, num_items_in_batch=None) -> torch.Tensor:
    """Binary cross-entropy -[y log σ(z) + (1 - y) log(1 - σ(z))] over the tokens that count (real tokens whose
    label is not -100): their mean, or their sum divided by `num_items_in_batch`."""
    counted = labels != -100
    if attention_mask is not None and attention_mask.dim() == 2:
        counted = counted & attention_mask.bool()
    summed = nn.functional.binary_cross_entropy_with_logits(
        logits[counted].float(), labels[counted].float(), reduction="sum"
    )
    if num_items_in_batch is None:
        return summed / counted.sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(summed.device)
    return summed / num_items_in_batch


class TransformerEncoderForPreTraining(TransformerEncoderPreTrainedModel):
    """Replaced-token detection, the discriminator of ELECTRA (Clark et al., 2020): for every token, a logit that
    it was replaced (by a small masked-LM generator's sample) rather than being the original. The encoder it trains
    is a checkpoint like a masked LM's: every other head loads it."""

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__(config)
        self.model = TransformerEncoderModel(config, add_pooling_layer=False)
        self.discriminator_predictions = TransformerEncoderDiscriminatorHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TransformerEncoderForPreTrainingOutput:
        r"""
        labels (`torch.Tensor` of shape `(batch, seq)`): 1 where the token was replaced, 0 where it is the original,
            -100 where it does not count; padding (attention_mask 0) never counts. Pass `num_items_in_batch` to
            normalise the loss by a count across accumulation steps and processes instead of this batch's mean.
        """
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        logits = self.discriminator_predictions(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = replaced_token_detection_loss(logits, labels, attention_mask, kwargs.get("num_items_in_batch"))
        return TransformerEncoderForPreTrainingOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class TransformerEncoderForSequenceClassification(TransformerEncoderPreTrainedModel):
    """Pooled first token → dropout → linear. Loss by `config.problem_type`: regression (num_labels = 1),
    single-label (integer labels) or multi-label (float multi-hot labels)."""

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = TransformerEncoderModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class TransformerEncoderForTokenClassification(TransformerEncoderPreTrainedModel):
    """Every token's representation → dropout → linear; labels of -100 (special tokens, sub-word pieces,
    padding) are ignored."""

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = TransformerEncoderModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config, **kwargs)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class TransformerEncoderForQuestionAnswering(TransformerEncoderPreTrainedModel):
    """Extractive QA: a start and an end logit for every token."""

    def __init__(self, config: TransformerEncoderConfig):
        super().__init__(config)
        self.model = TransformerEncoderModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> QuestionAnsweringModelOutput:
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).unbind(dim=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions, **kwargs)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def _classifier_dropout(config: TransformerEncoderConfig) -> float:
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


# ---------------------------------------------------------------------------------------------------------------------
# The heads and their Auto classes: a new head is one row here
# ---------------------------------------------------------------------------------------------------------------------

HEADS = {  # Auto class → our class
    "AutoModel": TransformerEncoderModel,
    "AutoModelForMaskedLM": TransformerEncoderForMaskedLM,
    "AutoModelForPreTraining": TransformerEncoderForPreTraining,
    "AutoModelForSequenceClassification": TransformerEncoderForSequenceClassification,
    "AutoModelForTokenClassification": TransformerEncoderForTokenClassification,
    "AutoModelForQuestionAnswering": TransformerEncoderForQuestionAnswering,
}

# Every Auto class a saved folder answers to with `trust_remote_code=True` (transformers itself only records the
# class that was saved).
AUTO_MAP = {"AutoConfig": "configuration_transformer_encoder.TransformerEncoderConfig"} | {
    auto_class: f"modeling_transformer_encoder.{model_class.__name__}" for auto_class, model_class in HEADS.items()
}

# Classes register under their Auto class so that `save_pretrained` copies this file next to the weights.
for auto_class, model_class in HEADS.items():
    model_class.register_for_auto_class(auto_class)

__all__ = [
    "HEADS",
    "TransformerEncoderPreTrainedModel",
    "TransformerEncoderForPreTrainingOutput",
    *(model_class.__name__ for model_class in HEADS.values()),
]

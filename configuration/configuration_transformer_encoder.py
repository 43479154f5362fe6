# Copyright 2026 The transformer-encoder authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the Transformer encoder of *Attention Is All You Need* (Vaswani et al., 2017).

The defaults are the paper's base model (Table 3): d_model = 512, N = 6 layers, h = 8 heads, d_ff = 2048,
P_drop = 0.1, ReLU, sinusoidal positions and post-layer-norm sub-layers, `LayerNorm(x + Sublayer(x))`.

This file is copied next to `config.json` by `save_pretrained`, so that a saved folder loads with
`trust_remote_code=True` where this package is not installed: it may import only `transformers`.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN


# Gated feed-forward variants (Shazeer, 2020): FFN(x) = (act(x W_g) * x W_1) W_2.
GATED_ACTIVATIONS = {"geglu": "gelu", "swiglu": "silu", "reglu": "relu"}
POSITION_EMBEDDING_TYPES = ("sinusoidal", "learned", "rotary")


@strict
class TransformerEncoderConfig(PreTrainedConfig):
    r"""
    Configuration of a [`TransformerEncoderModel`]. Instantiating it with no arguments gives the base encoder of
    the paper.

    Args:
        vocab_size (`int`, defaults to 30522): number of token ids the embedding table holds.
        hidden_size (`int`, defaults to 512): d_model, the width of every residual stream.
        num_hidden_layers (`int`, defaults to 6): N, the number of stacked encoder blocks.
        num_attention_heads (`int`, defaults to 8): h, the number of heads; d_k = d_v = d_model / h.
        intermediate_size (`int`, defaults to 2048): d_ff, the inner width of the position-wise feed-forward network.
        hidden_act (`str`, defaults to `"relu"`): the feed-forward activation: any name of
            `transformers.activations.ACT2FN` (`"relu"`, `"gelu"`, ...) or a gated variant (`"geglu"`, `"swiglu"`,
            `"reglu"`).
        hidden_dropout_prob (`float`, defaults to 0.1): P_drop, applied to the embeddings and to every sub-layer
            output before it is added to the residual.
        attention_probs_dropout_prob (`float`, defaults to 0.1): dropout on the attention weights.
        max_position_embeddings (`int`, defaults to 512): the longest sequence the model accepts with
            `"learned"` positions; sinusoidal and rotary positions have no such limit.
        position_embedding_type (`str`, defaults to `"sinusoidal"`): `"sinusoidal"` (the paper, §3.5),
            `"learned"` (absolute, as BERT) or `"rotary"` (RoPE on queries and keys, Su et al. 2021).
        rope_theta (`float`, defaults to 10000.0): base of the rotary frequencies.
        norm_first (`bool`, defaults to `False`): `False` is the paper's post-norm `LayerNorm(x + Sublayer(x))`;
            `True` is pre-norm `x + Sublayer(LayerNorm(x))`, with a final layer norm after the last block.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every layer norm.
        type_vocab_size (`int`, defaults to 0): number of segment (token type) ids; 0 means no segment embeddings.
        scale_embeddings (`bool`, defaults to `True`): multiply token embeddings by sqrt(d_model), as the paper does.
        embedding_layer_norm (`bool`, defaults to `False`): a layer norm over the summed embeddings, as BERT and
            RoBERTa have.
        position_offset (`int`, defaults to 0): added to every position id before the learned position table is
            read (RoBERTa numbers positions from pad_token_id + 1 = 2).
        pad_token_id (`int`, defaults to 0): id of the padding token.
        initializer_range (`float`, defaults to 0.02): standard deviation of the normal weight initialisation.
        tie_word_embeddings (`bool`, defaults to `True`): share the masked-LM output projection with the token
            embeddings.
        classifier_dropout (`float`, *optional*): dropout of the classification heads; `hidden_dropout_prob` if unset.
        sparse_prediction (`bool`, defaults to `False`): masked LM with labels computes the vocabulary projection
            only where a label is set (about 15 % of the tokens), and returns the logits of those tokens alone,
            (n_labelled, vocab_size). Training is faster; leave it off where full-shape logits are needed.

    Example:

    ```python
    >>> from transformer_encoder import TransformerEncoderConfig, TransformerEncoderModel
    >>> config = TransformerEncoderConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4)
    >>> model = TransformerEncoderModel(config)
    ```
    """

    model_type = "transformer_encoder"
    attribute_map = {"d_model": "hidden_size", "d_ff": "intermediate_size"}

    vocab_size: int = 30522
    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    hidden_act: str = "relu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    position_embedding_type: str = "sinusoidal"
    rope_theta: float | int = 10000.0
    norm_first: bool = False
    layer_norm_eps: float = 1e-5
    type_vocab_size: int = 0
    scale_embeddings: bool = True
    embedding_layer_norm: bool = False
    position_offset: int = 0
    pad_token_id: int | None = 0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    classifier_dropout: float | int | None = None
    sparse_prediction: bool = False

    def __post_init__(self, **kwargs):
        # `@strict` re-raises validator errors as its own exception type; checking here first gives users the
        # plain `ValueError` they catch for any other bad argument.
        self.validate_architecture()
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        """d_k = d_v = d_model / h."""
        return self.hidden_size // self.num_attention_heads

    @property
    def learned_positions(self) -> int:
        """How many positions the learned table holds past `position_offset`: the longest sequence it accepts."""
        return self.max_position_embeddings - self.position_offset

    @property
    def is_gated(self) -> bool:
        return self.hidden_act in GATED_ACTIVATIONS

    def validate_architecture(self):
        """Part of `@strict` validation: runs at construction, so a config that cannot work never reaches a model."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"The hidden size ({self.hidden_size}) is not a multiple of the number of attention heads "
                f"({self.num_attention_heads}): each head gets d_k = hidden_size / num_attention_heads dimensions. "
                f"Choose a hidden_size divisible by {self.num_attention_heads} or another number of heads."
            )
        if self.hidden_act not in ACT2FN and self.hidden_act not in GATED_ACTIVATIONS:
            raise ValueError(
                f"Unknown `hidden_act` {self.hidden_act!r}. Use one of transformers' activations "
                f"({', '.join(sorted(ACT2FN))}) or a gated variant ({', '.join(GATED_ACTIVATIONS)})."
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"Unknown `position_embedding_type` {self.position_embedding_type!r}; "
                f"use one of {', '.join(map(repr, POSITION_EMBEDDING_TYPES))}."
            )
        if self.position_embedding_type == "sinusoidal" and self.hidden_size % 2:
            raise ValueError(f"Sinusoidal positions pair sines and cosines: hidden_size ({self.hidden_size}) must be even.")
        if self.position_embedding_type == "rotary" and self.head_dim % 2:
            raise ValueError(f"Rotary positions rotate pairs of dimensions: the head size ({self.head_dim}) must be even.")
        if self.position_offset < 0 or self.position_offset >= self.max_position_embeddings:
            raise ValueError(
                f"`position_offset` ({self.position_offset}) must lie in [0, max_position_embeddings="
                f"{self.max_position_embeddings})."
            )
        if self.type_vocab_size < 0:
            raise ValueError(f"`type_vocab_size` must be >= 0 (0 disables segment embeddings), got {self.type_vocab_size}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` is a probability in [0, 1), got {value}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"`pad_token_id` ({self.pad_token_id}) must be a token id below vocab_size ({self.vocab_size}).")


# Registered so that `save_pretrained` copies this file next to config.json and records it in `auto_map`.
TransformerEncoderConfig.register_for_auto_class()

__all__ = ["TransformerEncoderConfig"]

"""`transformer_encoder.configuration`: every option of the encoder, validated, with the paper's defaults."""

from .configuration_transformer_encoder import TransformerEncoderConfig

__all__ = ["TransformerEncoderConfig"]

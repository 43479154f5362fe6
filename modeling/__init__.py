"""`transformer_encoder.modeling`: embeddings and positions, attention, encoder blocks and task heads."""

import sys

from ..configuration import configuration_transformer_encoder

# A saved checkpoint holds the configuration and modeling files side by side (the Hub's flat layout), so the
# modeling file imports its configuration as a sibling module. Inside the package that sibling is the module of
# `transformer_encoder.configuration`: aliasing it keeps one config class. The file
# `modeling/configuration_transformer_encoder.py` is a link to it, for `save_pretrained` to copy.
sys.modules[f"{__name__}.configuration_transformer_encoder"] = configuration_transformer_encoder

from . import modeling_transformer_encoder  # noqa: E402
from .modeling_transformer_encoder import *  # noqa: E402,F403  (the heads table names every class)

__all__ = modeling_transformer_encoder.__all__

"""transformer-encoder: the Transformer encoder of *Attention Is All You Need* as a Hugging Face model.

Importing the package registers the configuration and every model class with transformers' Auto classes, so
`AutoConfig`, `AutoModel` and `AutoModelFor…` `.from_pretrained(folder)` load a saved checkpoint.
"""

import transformers

from . import modeling
from .configuration import TransformerEncoderConfig
from .modeling import *  # noqa: F403  (every class of the heads table, and the pretrained-model base class)
from .modeling import HEADS

__version__ = "0.1.0"

transformers.AutoConfig.register(TransformerEncoderConfig.model_type, TransformerEncoderConfig, exist_ok=True)
for auto_class, model_class in HEADS.items():
    getattr(transformers, auto_class).register(TransformerEncoderConfig, model_class, exist_ok=True)

__all__ = ["TransformerEncoderConfig", *modeling.__all__]

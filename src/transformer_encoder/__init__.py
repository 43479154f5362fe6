"""transformer-encoder: the Transformer encoder of *Attention Is All You Need* as a Hugging Face model.

Importing the package registers the configuration and every model class with transformers' Auto classes, so
`AutoConfig`, `AutoModel` and `AutoModelFor…` `.from_pretrained(folder)` load a saved checkpoint.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration import TransformerEncoderConfig
from .modeling import (
    TransformerEncoderForMaskedLM,
    TransformerEncoderForQuestionAnswering,
    TransformerEncoderForSequenceClassification,
    TransformerEncoderForTokenClassification,
    TransformerEncoderModel,
    TransformerEncoderPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(TransformerEncoderConfig.model_type, TransformerEncoderConfig, exist_ok=True)
for auto_class, model_class in (
    (AutoModel, TransformerEncoderModel),
    (AutoModelForMaskedLM, TransformerEncoderForMaskedLM),
    (AutoModelForSequenceClassification, TransformerEncoderForSequenceClassification),
    (AutoModelForTokenClassification, TransformerEncoderForTokenClassification),
    (AutoModelForQuestionAnswering, TransformerEncoderForQuestionAnswering),
):
    auto_class.register(TransformerEncoderConfig, model_class, exist_ok=True)

__all__ = [
    "TransformerEncoderConfig",
    "TransformerEncoderPreTrainedModel",
    "TransformerEncoderModel",
    "TransformerEncoderForMaskedLM",
    "TransformerEncoderForSequenceClassification",
    "TransformerEncoderForTokenClassification",
    "TransformerEncoderForQuestionAnswering",
]

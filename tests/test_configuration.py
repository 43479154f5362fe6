import json

import pytest
from transformers import AutoConfig

from transformer_encoder import TransformerEncoderConfig


def test_defaults_are_the_papers_base_model():
    config = TransformerEncoderConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        512,
        6,
        8,
        2048,
    )
    assert config.head_dim == 64  # d_k = d_model / h
    assert config.hidden_dropout_prob == 0.1
    assert config.hidden_act == "relu"
    assert config.position_embedding_type == "sinusoidal"
    assert config.norm_first is False  # post-norm: LayerNorm(x + Sublayer(x))
    assert config.scale_embeddings is True
    assert config.type_vocab_size == 0


def test_paper_names_alias_the_hugging_face_names():
    config = TransformerEncoderConfig(d_model=64, d_ff=128, num_attention_heads=4)
    assert (config.hidden_size, config.intermediate_size) == (64, 128)
    assert config.d_model == 64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "not a multiple of the number of attention heads"),
        ({"hidden_act": "tanhh"}, "Unknown `hidden_act`"),
        ({"position_embedding_type": "alibi"}, "Unknown `position_embedding_type`"),
        ({"num_hidden_layers": 0}, "`num_hidden_layers` must be a positive integer"),
        ({"vocab_size": -1}, "`vocab_size` must be a positive integer"),
        ({"intermediate_size": 0}, "`intermediate_size` must be a positive integer"),
        ({"hidden_dropout_prob": 1.5}, "probability"),
        ({"type_vocab_size": -2}, "type_vocab_size"),
        ({"pad_token_id": 500, "vocab_size": 100}, "pad_token_id"),
        ({"hidden_size": 36, "num_attention_heads": 12, "position_embedding_type": "rotary"}, "head size (3)"),
    ],
)
def test_a_config_that_cannot_work_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TransformerEncoderConfig(**kwargs)


@pytest.mark.parametrize("act", ["relu", "gelu", "geglu", "swiglu"])
@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
def test_valid_options_build(act, position):
    config = TransformerEncoderConfig(hidden_act=act, position_embedding_type=position, norm_first=True)
    assert config.is_gated == act.endswith("glu")


def test_round_trip_through_json_and_auto_config(tmp_path):
    config = TransformerEncoderConfig(
        hidden_size=64, num_attention_heads=4, position_embedding_type="rotary", norm_first=True, num_labels=3
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "transformer_encoder"
    assert saved["auto_map"]["AutoConfig"] == "configuration_transformer_encoder.TransformerEncoderConfig"
    assert (tmp_path / "configuration_transformer_encoder.py").exists()

    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, TransformerEncoderConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.num_labels == 3

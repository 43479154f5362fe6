"""Saving, loading and sharing: safetensors round trips through every Auto class, the Hub-ready folder loaded with
remote code where the package is absent, bad checkpoints, and what `push_to_hub` uploads."""

import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import pytest
import torch
from helpers import commit_into, padded_batch, tiny_config
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import EntryNotFoundError
import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)

import transformer_encoder
from transformer_encoder import (
    TransformerEncoderForMaskedLM,
    TransformerEncoderForSequenceClassification,
    TransformerEncoderModel,
)

AUTO_CLASSES = {getattr(transformers, auto): head for auto, head in transformer_encoder.HEADS.items()}
CHECKPOINT_FILES = {
    "config.json",
    "model.safetensors",
    "configuration_transformer_encoder.py",
    "modeling_transformer_encoder.py",
}


def first_output(model, input_ids, attention_mask):
    with torch.no_grad():
        return model(input_ids, attention_mask=attention_mask).to_tuple()[0]


@pytest.mark.parametrize("auto_class, model_class", AUTO_CLASSES.items(), ids=lambda c: c.__name__)
def test_round_trip_through_auto_class(tmp_path, auto_class, model_class):
    model = model_class(tiny_config(num_labels=3, position_embedding_type="rotary")).eval()
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == CHECKPOINT_FILES  # safetensors only, never a pickle

    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    input_ids, attention_mask = padded_batch()
    torch.testing.assert_close(
        first_output(loaded, input_ids, attention_mask), first_output(model, input_ids, attention_mask), rtol=0, atol=0
    )
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig"} | {c.__name__ for c in AUTO_CLASSES}


def test_tied_weights_are_saved_once_and_retied(tmp_path):
    model = TransformerEncoderForMaskedLM(tiny_config())
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
    assert "lm_head.decoder.weight" not in keys and "model.embeddings.token_embeddings.weight" in keys
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert loaded.lm_head.decoder.weight is loaded.model.embeddings.token_embeddings.weight


def test_a_head_loads_from_a_base_checkpoint(tmp_path):
    base = TransformerEncoderModel(tiny_config(num_labels=2)).eval()
    base.save_pretrained(tmp_path)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            classifier.model(input_ids, attention_mask=attention_mask).last_hidden_state,
            base(input_ids, attention_mask=attention_mask).last_hidden_state,
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_on_load_and_device_map(tmp_path, dtype):
    TransformerEncoderForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    model = AutoModelForMaskedLM.from_pretrained(tmp_path, dtype=dtype, device_map="cpu")
    assert {p.dtype for p in model.parameters()} == {dtype}
    input_ids, attention_mask = padded_batch()
    logits = first_output(model, input_ids, attention_mask)
    assert logits.dtype == dtype and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------------------------------
# Remote code: the folder alone, in a Python where transformer_encoder cannot be imported
# ---------------------------------------------------------------------------------------------------------------------

REMOTE_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["transformer_encoder"] = None  # any `import transformer_encoder` now raises ImportError
    try:
        import transformer_encoder
        raise SystemExit("transformer_encoder is importable: the test would prove nothing")
    except ImportError:
        pass
    import torch, transformers
    folder, inputs_file = sys.argv[1], sys.argv[2]
    inputs = torch.load(inputs_file)
    results = {}
    for name in inputs["auto_classes"]:
        model = getattr(transformers, name).from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            results[name] = model(inputs["input_ids"], attention_mask=inputs["attention_mask"]).to_tuple()[0]
    torch.save(results, inputs_file + ".out")
    """
)


def test_saved_folder_loads_with_remote_code_without_the_package(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    model = TransformerEncoderForMaskedLM(tiny_config(num_labels=3, type_vocab_size=2)).eval()
    model.save_pretrained(checkpoint)
    input_ids, attention_mask = padded_batch()
    inputs_file = str(tmp_path / "inputs.pt")
    names = [c.__name__ for c in AUTO_CLASSES]
    torch.save({"input_ids": input_ids, "attention_mask": attention_mask, "auto_classes": names}, inputs_file)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(checkpoint), inputs_file], cwd=tmp_path, env=env, check=True
    )
    results = torch.load(inputs_file + ".out")
    for auto_class in AUTO_CLASSES:  # the same weights give the same outputs through the copied code
        expected = first_output(auto_class.from_pretrained(checkpoint).eval(), input_ids, attention_mask)
        if auto_class in (AutoModel, AutoModelForMaskedLM):  # heads other than MLM are freshly initialised
            torch.testing.assert_close(results[auto_class.__name__], expected, rtol=0, atol=0)
        else:
            assert results[auto_class.__name__].shape == expected.shape


def test_remote_code_model_saves_a_folder_that_loads_again(tmp_path):
    """A model loaded from remote code, fine-tuned and saved, is as shareable as the original."""
    TransformerEncoderModel(tiny_config()).save_pretrained(tmp_path / "a")
    script = textwrap.dedent(
        """
        import sys
        sys.modules["transformer_encoder"] = None
        from transformers import AutoModelForTokenClassification
        model = AutoModelForTokenClassification.from_pretrained(sys.argv[1], trust_remote_code=True, num_labels=4)
        model.save_pretrained(sys.argv[2])
        again = AutoModelForTokenClassification.from_pretrained(sys.argv[2], trust_remote_code=True)
        assert again.config.num_labels == 4
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "a"), str(tmp_path / "b")], env=env, check=True)
    assert CHECKPOINT_FILES <= {p.name for p in (tmp_path / "b").iterdir()}


# ---------------------------------------------------------------------------------------------------------------------
# Bad checkpoints
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # an interrupted copy
        lambda data: data[:-7],  # header intact, tensors short
        lambda data: b"\x00not safetensors" * 64,  # something else under the name
    ],
    ids=["truncated", "short-tensors", "garbage"],
)
def test_corrupt_weights_give_an_error_naming_the_file(tmp_path, damage):
    TransformerEncoderModel(tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(OSError, match=r"model\.safetensors is truncated or corrupt"):
        AutoModel.from_pretrained(tmp_path)


def test_missing_weights_give_an_error_naming_the_file(tmp_path):
    TransformerEncoderModel(tiny_config()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModel.from_pretrained(tmp_path)


def test_missing_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="nothing-here"):
        AutoConfig.from_pretrained(tmp_path / "nothing-here")


# ---------------------------------------------------------------------------------------------------------------------
# push_to_hub, with the network replaced by a folder
# ---------------------------------------------------------------------------------------------------------------------


def test_push_to_hub_uploads_a_folder_that_loads_with_remote_code(tmp_path):
    uploaded = tmp_path / "uploaded"
    model = TransformerEncoderForSequenceClassification(tiny_config(num_labels=2)).eval()
    with (
        mock.patch.object(HfApi, "create_repo", return_value=mock.MagicMock(repo_id="me/tiny-encoder")),
        mock.patch.object(HfApi, "create_commit", commit_into(uploaded)),
        mock.patch.object(ModelCard, "load", side_effect=EntryNotFoundError("no card")),
    ):
        model.push_to_hub("me/tiny-encoder", tags=["transformer-encoder"])

    assert {p.name for p in uploaded.iterdir()} == CHECKPOINT_FILES | {"README.md"}
    card = ModelCard.load(uploaded / "README.md")
    assert "transformer-encoder" in card.data.tags

    input_ids, attention_mask = padded_batch()
    inputs_file = str(tmp_path / "inputs.pt")
    names = ["AutoModelForSequenceClassification"]
    torch.save({"input_ids": input_ids, "attention_mask": attention_mask, "auto_classes": names}, inputs_file)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", REMOTE_LOAD, str(uploaded), inputs_file], cwd=tmp_path, env=env, check=True)
    got = torch.load(inputs_file + ".out")["AutoModelForSequenceClassification"]
    torch.testing.assert_close(got, first_output(model, input_ids, attention_mask), rtol=0, atol=0)

"""Start from pretrained weights: turn a BERT or RoBERTa checkpoint into a native transformer_encoder checkpoint.

    python -m transformer_encoder.convert SRC DST

SRC is a transformers checkpoint folder (safetensors or PyTorch weights) with its tokenizer; DST receives
config.json, model.safetensors, the tokenizer, the model code (it loads with `trust_remote_code=True`) and, where
SRC is a sentence-transformers model, its pooling modules. The BERT family maps onto the encoder exactly: learned
absolute positions (RoBERTa's offset too), segment embeddings, the embedding layer norm, post-norm blocks, GELU,
the layer-norm epsilon, the pooler, and the masked-LM / classification / token-classification / QA heads.

Anything that cannot be represented exactly (another architecture, relative positions, a decoder, a weight that is
missing or left over) is refused with a message naming it, and nothing is written.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from . import HEADS, TransformerEncoderConfig, TransformerEncoderForMaskedLM, TransformerEncoderModel

SUPPORTED = ("bert", "roberta")
# The source architecture's suffix → our class: the same name (BertForMaskedLM → …ForMaskedLM), except BERT's
# pretraining model, whose masked-LM head is ours and whose next-sentence head is dropped.
CONVERTIBLE = {model_class.__name__.removeprefix("TransformerEncoder"): model_class for model_class in HEADS.values()}
CONVERTIBLE["ForPreTraining"] = TransformerEncoderForMaskedLM
DROPPED = (r"^cls\.seq_relationship\.", r"\.position_ids$", r"\.token_type_ids$")  # NSP head and buffers
# sentence-transformers' modules beside the transformer: copied so that SentenceTransformer(DST) pools alike
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


class ConversionError(ValueError):
    """The source checkpoint cannot be represented exactly."""


def our_name(key: str) -> str:
    """A BERT/RoBERTa weight name (without its bert./roberta. prefix) → ours."""
    rules = [
        (r"^embeddings\.word_embeddings\.", "model.embeddings.token_embeddings."),
        (r"^embeddings\.position_embeddings\.", "model.embeddings.position_embeddings."),
        (r"^embeddings\.token_type_embeddings\.", "model.embeddings.token_type_embeddings."),
        (r"^embeddings\.LayerNorm\.", "model.embeddings.norm."),
        (r"^encoder\.layer\.(\d+)\.attention\.self\.query\.", r"model.layers.\1.attention.q_proj."),
        (r"^encoder\.layer\.(\d+)\.attention\.self\.key\.", r"model.layers.\1.attention.k_proj."),
        (r"^encoder\.layer\.(\d+)\.attention\.self\.value\.", r"model.layers.\1.attention.v_proj."),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"model.layers.\1.attention.out_proj."),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"model.layers.\1.attention_norm."),
        (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"model.layers.\1.feed_forward.fc1."),
        (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"model.layers.\1.feed_forward.fc2."),
        (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"model.layers.\1.feed_forward_norm."),
        (r"^pooler\.dense\.", "model.pooler.dense."),
        # masked-LM heads: BERT's cls.predictions, RoBERTa's lm_head
        (r"^cls\.predictions\.transform\.dense\.", "lm_head.dense."),
        (r"^cls\.predictions\.transform\.LayerNorm\.", "lm_head.norm."),
        (r"^cls\.predictions\.decoder\.weight$", "lm_head.decoder.weight"),
        (r"^cls\.predictions\.bias$", "lm_head.decoder.bias"),
        (r"^lm_head\.layer_norm\.", "lm_head.norm."),
        (r"^lm_head\.bias$", "lm_head.decoder.bias"),
        # RoBERTa's classification head is a pooler (dense, tanh over <s>) and a linear map: ours exactly
        (r"^classifier\.dense\.", "model.pooler.dense."),
        (r"^classifier\.out_proj\.", "classifier."),
    ]
    for pattern, replacement in rules:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return key  # lm_head.dense, lm_head.decoder, classifier, qa_outputs keep their names


def our_config(source) -> TransformerEncoderConfig:
    """The configuration that reproduces `source` (a BertConfig or RobertaConfig) exactly, or ConversionError."""
    if source.model_type not in SUPPORTED:
        raise ConversionError(
            f"Cannot convert a {source.model_type!r} checkpoint: only BERT and RoBERTa checkpoints map exactly onto "
            "this encoder."
        )
    if getattr(source, "position_embedding_type", "absolute") != "absolute":
        raise ConversionError(
            f"Cannot convert {source.position_embedding_type!r} position embeddings: only learned absolute positions "
            "map exactly (relative attention biases have no counterpart here)."
        )
    if getattr(source, "is_decoder", False) or getattr(source, "add_cross_attention", False):
        raise ConversionError("Cannot convert a decoder (causal or cross-attention) checkpoint: this is an encoder.")
    offset = source.pad_token_id + 1 if source.model_type == "roberta" else 0
    labels = {}
    if source.id2label is not None and getattr(source, "architectures", None) and any(
        a.endswith(("ForSequenceClassification", "ForTokenClassification")) for a in source.architectures
    ):
        labels = {"id2label": source.id2label, "label2id": source.label2id, "problem_type": source.problem_type}
    return TransformerEncoderConfig(
        vocab_size=source.vocab_size,
        hidden_size=source.hidden_size,
        num_hidden_layers=source.num_hidden_layers,
        num_attention_heads=source.num_attention_heads,
        intermediate_size=source.intermediate_size,
        hidden_act=source.hidden_act,
        hidden_dropout_prob=source.hidden_dropout_prob,
        attention_probs_dropout_prob=source.attention_probs_dropout_prob,
        max_position_embeddings=source.max_position_embeddings,
        position_embedding_type="learned",
        position_offset=offset,
        norm_first=False,
        layer_norm_eps=source.layer_norm_eps,
        type_vocab_size=source.type_vocab_size,
        scale_embeddings=False,
        embedding_layer_norm=True,
        pad_token_id=source.pad_token_id,
        initializer_range=source.initializer_range,
        tie_word_embeddings=getattr(source, "tie_word_embeddings", True),
        classifier_dropout=getattr(source, "classifier_dropout", None),
        **labels,
    )


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The source state dict, from safetensors (sharded or not) or PyTorch weights (loaded without pickled code)."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        weights = {}
        for file in files:
            weights.update(load_file(file))
        return weights
    files = sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ConversionError(f"{folder} holds no model.safetensors or pytorch_model.bin weights.")
    weights = {}
    for file in files:
        weights.update(torch.load(file, map_location="cpu", weights_only=True))
    return weights


def convert_state_dict(weights: dict, model_type: str, expected: set[str], base: bool) -> dict[str, torch.Tensor]:
    """Renamed weights; `base`: for a TransformerEncoderModel, whose own names have no `model.` prefix."""
    prefix = f"{model_type}."
    converted, left_over = {}, []
    for key, tensor in weights.items():
        if any(re.search(pattern, key) for pattern in DROPPED):
            continue
        name = our_name(key.removeprefix(prefix))
        if base:
            name = name.removeprefix("model.")
        if name in expected:
            converted[name] = tensor
        else:
            left_over.append(key)
    if left_over:
        raise ConversionError(f"These weights have no place in the converted model: {', '.join(sorted(left_over))}.")
    return converted


def convert(src, dst) -> Path:
    """Convert the checkpoint folder `src` into a transformer_encoder checkpoint in `dst`; returns `dst`."""
    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise ConversionError(f"{src} is not a checkpoint folder: it has no config.json.")
    if dst.exists() and any(dst.iterdir()):
        raise ConversionError(f"{dst} already holds files: choose an empty or new folder.")
    source = AutoConfig.from_pretrained(src)
    config = our_config(source)
    architecture = (source.architectures or [f"{source.model_type.title()}Model"])[0]
    model_class = next((cls for suffix, cls in CONVERTIBLE.items() if architecture.endswith(suffix)), None)
    if model_class is None:
        raise ConversionError(f"Cannot convert the {architecture} head: no counterpart here.")
    model = model_class(config)
    expected = set(model.state_dict())
    weights = convert_state_dict(read_weights(src), source.model_type, expected, model_class is TransformerEncoderModel)
    tied = {"lm_head.decoder.weight"} if config.tie_word_embeddings else set()  # the token embeddings
    missing = sorted(expected - set(weights) - tied)
    if missing:
        raise ConversionError(f"The checkpoint lacks weights the model needs: {', '.join(missing)}.")
    shapes = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} (expected {tuple(shapes[k].shape)})" for k, v in weights.items()
                  if v.shape != shapes[k].shape]
    if mismatched:
        raise ConversionError(f"These weights do not fit the converted model: {', '.join(mismatched)}.")
    model.load_state_dict(weights, strict=False)
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(src)

    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))  # renamed into place when whole
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for name in SENTENCE_TRANSFORMERS_FILES:
            if (src / name).is_file():
                shutil.copy(src / name, staging / name)
        for pooling in src.glob("[0-9]_*"):
            if pooling.is_dir() and not any(pooling.glob("*.safetensors")):
                shutil.copytree(pooling, staging / pooling.name)
        if dst.exists():
            dst.rmdir()
        os.replace(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dst


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m transformer_encoder.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="a BERT or RoBERTa checkpoint folder with its tokenizer")
    parser.add_argument("dst", help="the folder to write (new or empty)")
    args = parser.parse_args(argv)
    try:
        convert(args.src, args.dst)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    main()

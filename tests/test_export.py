"""Export for serving: ONNX graphs run by ONNX Runtime and ExportedPrograms give the PyTorch model's outputs at
real positions, on batches of other shapes than the one traced; the command's self-check refuses a wrong graph."""

import subprocess
import sys

import onnx
import onnxruntime
import pytest
import torch
from datasets import Dataset
from helpers import padded_batch, run_in_process, tiny_config

from transformer_encoder import TransformerEncoderForTokenClassification, TransformerEncoderModel
from transformer_encoder import export as export_module
from transformer_encoder.export import ExportError, export
from transformer_encoder.sentence_embeddings import mean_pooling
from transformer_encoder.training.tokenizer import train_tokenizer

TEXTS = ["the cat sat on the mat", "a dog", "the mat sat on the cat and the dog sat on the mat too"]


def bert_tokenizer():
    """A BERT tokenizer (it gives token_type_ids) over the words of TEXTS."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(" ".join(TEXTS).split()))]
    return BertTokenizer(vocab={word: i for i, word in enumerate(words)})


@pytest.fixture(scope="module", params=[(TransformerEncoderModel, "bert"),
                                        (TransformerEncoderForTokenClassification, "wordpiece")],
                ids=lambda p: p[0].__name__)
def checkpoint(request, tmp_path_factory):
    """A saved model (learned positions, segments) with its tokenizer: BERT's gives segments, ours does not."""
    model_class, tokenizer = request.param
    folder = tmp_path_factory.mktemp("checkpoint")
    config = tiny_config(num_labels=3, type_vocab_size=2, position_embedding_type="learned", vocab_size=60)
    model = model_class(config).eval()
    model.save_pretrained(folder)
    tokenizer = bert_tokenizer() if tokenizer == "bert" else train_tokenizer(Dataset.from_dict({"text": TEXTS * 5}), "text", "wordpiece", 60, 32)
    tokenizer.save_pretrained(folder)
    return folder, model, "token_type_ids" in tokenizer.model_input_names


def reference(model, input_ids, attention_mask, token_type_ids=None):
    with torch.no_grad():
        return list(model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).values())


def assert_close_at_real_positions(outputs, expected, attention_mask):
    real = attention_mask.bool()
    assert len(outputs) == len(expected)
    for output, target in zip(outputs, expected):
        output = torch.as_tensor(output)
        assert output.shape == target.shape
        if output.shape[:2] == real.shape:
            output, target = output[real], target[real]
        torch.testing.assert_close(output, target, atol=1e-5, rtol=1e-5)


def longer_batch(segments: bool):
    """Longer than the 16 positions the export traces, with padding and a one-token row; two segments where the
    graph reads them (else none, as the model defaults)."""
    input_ids, attention_mask = padded_batch(vocab_size=60, lengths=(31, 7, 1), seed=3)
    token_type_ids = (torch.arange(31) >= 20).long().expand(3, 31) * attention_mask if segments else None
    return input_ids, attention_mask, token_type_ids


def graph_inputs(input_ids, attention_mask, token_type_ids) -> dict:
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    return {name: value.numpy() for name, value in inputs.items() if value is not None}


def test_onnx_graph_in_onnx_runtime_matches_pytorch(checkpoint, tmp_path):
    folder, model, segments = checkpoint
    differences = export(folder, tmp_path / "onnx")
    assert differences["model.onnx"] < 1e-5
    graph = onnx.load(tmp_path / "onnx" / "model.onnx")
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"] + ["token_type_ids"] * segments
    for graph_input in graph.graph.input:  # batch and sequence are named dimensions, not the traced sizes
        assert all(d.dim_param for d in graph_input.type.tensor_type.shape.dim)

    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    input_ids, attention_mask, token_type_ids = longer_batch(segments)
    outputs = session.run(None, graph_inputs(input_ids, attention_mask, token_type_ids))
    assert [o.name for o in session.get_outputs()] == list(model(input_ids[:1]).keys())
    assert_close_at_real_positions(outputs, reference(model, input_ids, attention_mask, token_type_ids),
                                   attention_mask)

    # the folder serves on its own: its tokenizer's batch, through the graph, gives the model's outputs
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(tmp_path / "onnx")(TEXTS, padding=True, return_tensors="np")
    outputs = session.run(None, dict(encoded))
    tensors = {k: torch.from_numpy(v) for k, v in encoded.items()}
    assert_close_at_real_positions(outputs, reference(model, **tensors), tensors["attention_mask"])


def test_exported_program_matches_pytorch(checkpoint, tmp_path):
    folder, model, segments = checkpoint
    export(folder, tmp_path / "program", format="exported-program")
    program = torch.export.load(str(tmp_path / "program" / "model.pt2")).module()
    input_ids, attention_mask, token_type_ids = longer_batch(segments)
    with torch.no_grad():
        outputs = program(**{k: torch.from_numpy(v) for k, v in graph_inputs(input_ids, attention_mask,
                                                                            token_type_ids).items()})
    assert_close_at_real_positions(outputs, reference(model, input_ids, attention_mask, token_type_ids),
                                   attention_mask)


def test_legacy_onnx_exporter_takes_the_padded_path(checkpoint, tmp_path):
    """torch.onnx.export(dynamo=False) traces one run: skipping padding there would bake the traced batch's real
    token positions into the graph."""
    folder, model, segments = checkpoint
    traced = padded_batch(vocab_size=60, lengths=(9, 4), seed=1)
    torch.onnx.export(model, traced, tmp_path / "legacy.onnx", dynamo=False,
                      input_names=["input_ids", "attention_mask"],
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask")})
    session = onnxruntime.InferenceSession(str(tmp_path / "legacy.onnx"), providers=["CPUExecutionProvider"])
    input_ids, attention_mask, _ = longer_batch(segments=False)
    outputs = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
    assert_close_at_real_positions(outputs, reference(model, input_ids, attention_mask, None), attention_mask)


def test_command_writes_int8_graph_close_to_fp32(checkpoint, tmp_path):
    folder, model, segments = checkpoint
    command = [str(folder), str(tmp_path / "out"), "--quantize", "int8"]
    if isinstance(model, TransformerEncoderModel):  # once through `python -m`, as a user runs it
        result = subprocess.run([sys.executable, "-m", "transformer_encoder.export", *command], capture_output=True,
                                text=True)
    else:  # the same `main`, without a fresh interpreter's imports
        result = run_in_process(export_module.main, command)
    assert result.returncode == 0, result.stderr
    assert "model_quantized.onnx" in result.stdout
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"model.onnx", "model_quantized.onnx", "config.json", "tokenizer.json"} <= names
    graph = onnx.load(tmp_path / "out" / "model_quantized.onnx")
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in graph.graph.node)
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model_quantized.onnx"),
                                           providers=["CPUExecutionProvider"])
    input_ids, attention_mask, token_type_ids = longer_batch(segments)
    outputs = session.run(None, graph_inputs(input_ids, attention_mask, token_type_ids))
    expected = reference(model, input_ids, attention_mask, token_type_ids)
    real = attention_mask.bool()
    for output, target in zip(outputs, expected):
        output = torch.from_numpy(output)
        if output.shape[:2] == real.shape:
            output, target = output[real], target[real]
        assert (output - target).abs().max() < 0.1 * target.abs().max()  # int8: close, not equal
        assert (output - target).abs().max() > 0  # and really quantized


@pytest.mark.parametrize("checkpoint", [(TransformerEncoderModel, "bert")], indirect=True, ids=["base"])
def test_self_check_refuses_a_graph_that_differs(checkpoint, tmp_path, monkeypatch):
    folder, model, segments = checkpoint
    traced_export = export_module.export_onnx

    def export_another_model(signature, inputs, shapes, path):
        with torch.no_grad():
            signature.model.get_input_embeddings().weight.add_(0.1)
        traced_export(signature, inputs, shapes, path)

    monkeypatch.setattr(export_module, "export_onnx", export_another_model)
    with pytest.raises(ExportError, match="differs from the PyTorch model"):
        export(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("checkpoint", [(TransformerEncoderModel, "bert")], indirect=True, ids=["base"])
def test_refusals_write_nothing(checkpoint, tmp_path):
    folder, model, segments = checkpoint
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="already holds files"):
        export(folder, tmp_path / "full")
    bare = tmp_path / "bare"
    model.save_pretrained(bare)  # no tokenizer
    with pytest.raises(ExportError, match="has no tokenizer"):
        export(bare, tmp_path / "out")
    with pytest.raises(ExportError, match="applies to ONNX"):
        export(folder, tmp_path / "out", format="exported-program", quantize="int8")
    assert not (tmp_path / "out").exists()


def test_int8_export_of_a_real_checkpoint_holds_its_self_check(minilm, tmp_path):
    """all-MiniLM-L6-v2 failed the int8 check with one weight scale per matrix (relative error 0.31 on the check
    batch); per output channel it holds (0.17), and its graph reproduces the embeddings of real sentences."""
    from test_convert import SENTENCES
    from transformers import AutoModel, AutoTokenizer

    _, folder = minilm
    differences = export(folder, tmp_path / "out", quantize="int8")
    assert 0 < differences["model_quantized.onnx"] <= export_module.INT8_TOLERANCE
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model_quantized.onnx"),
                                           providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    hidden = torch.from_numpy(session.run(["last_hidden_state"], {n: batch[n] for n in names})[0])
    mask = torch.from_numpy(batch["attention_mask"])
    with torch.no_grad():
        expected = AutoModel.from_pretrained(folder)(**{n: torch.from_numpy(batch[n]) for n in names}).last_hidden_state
    cosine = torch.nn.functional.cosine_similarity(mean_pooling(hidden, mask), mean_pooling(expected, mask), dim=-1)
    assert cosine.median() >= 0.99 and cosine.min() >= 0.97, (cosine.median(), cosine.min())


@pytest.mark.parametrize("checkpoint", [(TransformerEncoderModel, "bert")], indirect=True, ids=["base"])
def test_self_check_refuses_an_int8_graph_of_another_model(checkpoint, tmp_path, monkeypatch):
    folder, model, segments = checkpoint
    quantize = export_module.quantize_onnx

    def quantize_another_model(source, target):
        graph = onnx.load(source).graph  # the same inputs and outputs, from a model with other random weights
        with torch.random.fork_rng():
            torch.manual_seed(12345)
            other = TransformerEncoderModel(model.config).eval()
        assert not torch.equal(other.embeddings.token_embeddings.weight, model.embeddings.token_embeddings.weight)
        signature = export_module.ServingSignature(other, [o.name for o in graph.output]).eval()
        inputs, _ = export_module.traced_and_check_inputs(model.config)
        inputs = {i.name: inputs[i.name] for i in graph.input}
        export_module.export_onnx(signature, inputs, export_module.dynamic_shapes(model.config, list(inputs)),
                                  source.with_name("other.onnx"))
        quantize(source.with_name("other.onnx"), target)

    monkeypatch.setattr(export_module, "quantize_onnx", quantize_another_model)
    with pytest.raises(ExportError, match="model_quantized.onnx differs from the PyTorch model by a relative error"):
        export(folder, tmp_path / "out", quantize="int8")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []

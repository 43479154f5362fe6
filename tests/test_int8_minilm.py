"""benchmarks/int8_minilm.py: its contenders run, and OpenVINO's gives the PyTorch model's outputs (skipped where
the `openvino` package, in the `[bench]` extra, is absent). The measurement itself is a benchmark, run by hand."""

import pytest
import torch
from helpers import padded_batch, tiny_config
from test_export import bert_tokenizer

from transformer_encoder import TransformerEncoderModel
from transformer_encoder.benchmarks import int8_minilm
from transformer_encoder.export import export


def test_openvino_runs_the_exported_graph_in_both_precisions(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is in the [bench] extra, not installed here")
    model = TransformerEncoderModel(tiny_config(vocab_size=60, type_vocab_size=2)).eval()
    model.save_pretrained(tmp_path / "model")
    bert_tokenizer().save_pretrained(tmp_path / "model")
    export(tmp_path / "model", tmp_path / "onnx")
    runners = int8_minilm.openvino_runners(tmp_path / "onnx" / "model.onnx")
    assert len(runners) == 2 and any("(f32)" in name for name in runners), list(runners)
    input_ids, attention_mask = padded_batch(vocab_size=60)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}
    with torch.no_grad():
        expected = model(**batch).last_hidden_state[attention_mask.bool()]
    f32 = next(run for name, run in runners.items() if "(f32)" in name)
    got = torch.from_numpy(f32(batch)[0])  # the graph's first output, last_hidden_state
    torch.testing.assert_close(got[attention_mask.bool()], expected, atol=1e-4, rtol=1e-4)


def test_each_pass_of_the_stream_serves_sentences_no_other_pass_served():
    sentences = [" ".join(["a"] * (1 + i % 7)) for i in range(100)]  # lengths 1…7 words, each sentence its index
    passes = int8_minilm.new_batches_each_pass(bert_tokenizer(), sentences, passes=3, per_pass=2)
    assert [len(batches) for batches in passes] == [2, 2, 2]
    lengths = [n for batches in passes for b in batches for n in b["attention_mask"].sum(-1).tolist()]
    assert lengths == [3 + i % 7 for i in range(96)]  # in order, once each ([CLS] and [SEP] added)


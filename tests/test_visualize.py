"""Attention heatmaps and training curves: the weights drawn are the ones the model computes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from helpers import run_in_process, tiny_config

from transformer_encoder import TransformerEncoderForMaskedLM
from transformer_encoder.training.tokenizer import train_tokenizer
from transformer_encoder.visualize import attention_figure, attention_weights, curves_figure
from transformer_encoder.visualize import main as visualize_main

pytest.importorskip("matplotlib")
TEXT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("viz")
    tokenizer = train_tokenizer(Dataset.from_dict({"text": [TEXT, "a dog ran under the tree"] * 20}), "text", "wordpiece", 60, 32)
    model = TransformerEncoderForMaskedLM(tiny_config(vocab_size=len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def test_weights_are_the_models_own_softmax_rows(checkpoint):
    _, model, tokenizer = checkpoint
    model.set_attn_implementation("sdpa")
    tokens, weights = attention_weights(model, tokenizer, TEXT)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert weights.shape == (2, 4, len(tokens), len(tokens))  # layers x heads x queries x keys
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, len(tokens)))
    assert model.config._attn_implementation == "sdpa"  # switched back after the extraction
    # the same numbers as the eager model's own output_attentions
    model.set_attn_implementation("eager")
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.stack(model(ids, output_attentions=True).attentions)[:, 0]
    torch.testing.assert_close(weights, expected)


class PaddingTokenizer:
    """A tokenizer that pads every text to 16 tokens, as a batch would."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, **kwargs):
        return self.tokenizer(text, padding="max_length", max_length=16, **kwargs)

    def convert_ids_to_tokens(self, ids):
        return self.tokenizer.convert_ids_to_tokens(ids)


def test_padding_is_excluded(checkpoint):
    _, model, tokenizer = checkpoint
    tokens, weights = attention_weights(model, PaddingTokenizer(tokenizer), TEXT)
    assert "[PAD]" not in tokens and weights.shape[-1] == len(tokens) < 16
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    unpadded_tokens, unpadded = attention_weights(model, tokenizer, TEXT)
    assert tokens == unpadded_tokens
    torch.testing.assert_close(weights, unpadded)


def test_figures(checkpoint, tmp_path):
    _, model, tokenizer = checkpoint
    grid = attention_figure(model, tokenizer, TEXT)
    assert len(grid.axes) == 2 * 4 + 1  # every head, and the colour bar
    one = attention_figure(model, tokenizer, TEXT, layer=1, head=3)
    assert len(one.axes) == 2 and one.axes[0].get_title() == "layer 1, head 3"
    with pytest.raises(ValueError, match="heads 0–3"):
        attention_figure(model, tokenizer, TEXT, layer=0, head=4)

    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": s, "loss": 5 - s / 10, "learning_rate": 1e-3} for s in range(1, 11)]
    lines += [{"step": 10, "eval_loss": 4.2, "perplexity": 66.7}]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
    curves = curves_figure(run)
    assert [ax.get_title() for ax in curves.axes] == ["loss", "learning rate", "evaluation"]


def run_cli(*args, env=None):
    """The command's `main` in this process; with `env`, `python -m transformer_encoder.visualize` in a fresh one."""
    if env is None:
        return run_in_process(visualize_main, args)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "transformer_encoder.visualize", *map(str, args)],
                          capture_output=True, text=True, env=environment)


def test_command_line_writes_pngs(checkpoint, tmp_path):
    folder, _, _ = checkpoint
    for extra, name in (([], "grid.png"), (["--layer", 0, "--head", 1], "head.png")):
        result = run_cli("attention", "--model", folder, "--text", TEXT, "--output", tmp_path / name, *extra)
        assert result.returncode == 0, result.stderr[-2000:]
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 3.0, "learning_rate": 1e-4}))
    result = run_cli("curves", tmp_path / "run", "--output", tmp_path / "curves.png")
    assert result.returncode == 0 and (tmp_path / "curves.png").stat().st_size > 1000
    missing = run_cli("curves", tmp_path / "nowhere")
    assert missing.returncode != 0 and "metrics.jsonl does not exist" in missing.stderr


def test_without_matplotlib_the_command_says_how_to_install(tmp_path):
    blocker = tmp_path / "sitecustomize.py"  # runs at start-up: make `import matplotlib` fail
    blocker.write_text("import sys\nsys.modules['matplotlib'] = None\n")
    result = run_cli("curves", tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0 and 'pip install "transformer-encoder[viz]"' in result.stderr


def test_library_functions_leave_the_backend_and_raise_errors_not_exits(tmp_path):
    """A notebook keeps its matplotlib backend, and a mistake is an exception it can catch, not SystemExit."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 3.0, "learning_rate": 1e-4}))
        curves_figure(tmp_path)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    with pytest.raises(FileNotFoundError, match="metrics.jsonl does not exist"):
        curves_figure(tmp_path / "nowhere")

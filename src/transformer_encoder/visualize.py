"""See the attention: every head's softmax weights over a text, and a training run's curves.

    python -m transformer_encoder.visualize attention --model DIR --text "The cat sat on the mat." --output attention.png
    python -m transformer_encoder.visualize attention --model DIR --text "…" --layer 2 --head 0 --output head.png
    python -m transformer_encoder.visualize curves RUN_DIR --output curves.png

In a notebook, `attention_figure(model, tokenizer, text)` and `curves_figure(run_dir)` return matplotlib figures.
Each row of an attention map is one query token's weights softmax(q · k_i / √d_k) over the keys i: it sums to 1.
Needs matplotlib: `pip install "transformer-encoder[viz]"`.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

INSTALL_HINT = 'matplotlib is needed to draw: pip install "transformer-encoder[viz]" (or pip install matplotlib)'


def _pyplot():
    """matplotlib's pyplot, on whatever backend the caller chose (a notebook keeps its own)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return plt


# ---------------------------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def attention_weights(model, tokenizer, text: str) -> tuple[list[str], torch.Tensor]:
    """The tokens of `text` and the attention weights the model computes over them, (layers, heads, n, n), with
    padding removed. Fused kernels (SDPA, flash) never form the weights, so the model runs the eager path for
    this, the equation itself, and goes back to its own implementation afterwards."""
    encoded = tokenizer(text, return_tensors="pt")
    encoded = {k: v.to(model.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    implementation = model.config._attn_implementation
    was_training = model.training
    model.eval()
    try:
        if implementation != "eager":
            model.set_attn_implementation("eager")
        outputs = model(**encoded, output_attentions=True)
    finally:
        if implementation != "eager":
            model.set_attn_implementation(implementation)
        model.train(was_training)
    weights = torch.stack(outputs.attentions)[:, 0].float().cpu()  # (layers, heads, seq, seq)
    real = encoded.get("attention_mask", torch.ones_like(encoded["input_ids"]))[0].bool().cpu()
    weights = weights[:, :, real][:, :, :, real]
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0][real].tolist())
    return tokens, weights


def attention_figure(model, tokenizer, text: str, layer: int | None = None, head: int | None = None):
    """A grid of heatmaps, layers down and heads across; or one head at full size with `layer` and `head`."""
    plt = _pyplot()
    tokens, weights = attention_weights(model, tokenizer, text)
    layers, heads = weights.shape[:2]
    if (layer is None) != (head is None):
        raise ValueError("Give both a layer and a head to draw one head, or neither to draw them all.")
    if layer is not None:
        if not (0 <= layer < layers and 0 <= head < heads):
            raise ValueError(f"The model has layers 0–{layers - 1} and heads 0–{heads - 1}; got layer {layer}, head {head}.")
        cells, titles = [[weights[layer, head]]], [[f"layer {layer}, head {head}"]]
    else:
        cells = [[weights[i, j] for j in range(heads)] for i in range(layers)]
        titles = [[f"layer {i}, head {j}" for j in range(heads)] for i in range(layers)]
    rows, cols = len(cells), len(cells[0])
    size = max(3.0, 0.35 * len(tokens)) if layer is not None else max(1.8, 0.2 * len(tokens))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 2, size * rows + 1), squeeze=False)
    top = max(float(c.max()) for row in cells for c in row)  # one colour scale for every map
    fontsize = 9 if layer is not None else 6
    positions = range(len(tokens))
    for i in range(rows):
        for j in range(cols):
            ax = axes[i][j]
            image = ax.imshow(cells[i][j].numpy(), cmap="viridis", vmin=0.0, vmax=top)
            ax.set_title(titles[i][j], fontsize=fontsize + 2)
            # token labels on the outer edge only: keys under the last row, queries left of the first column
            ax.set_xticks(positions, tokens if i == rows - 1 else [], rotation=90, fontsize=fontsize)
            ax.set_yticks(positions, tokens if j == 0 else [], fontsize=fontsize)
    fig.supxlabel("key (attended to)")
    fig.supylabel("query (attending)")
    fig.colorbar(image, ax=axes, shrink=0.6, label="softmax(q · k / √d_k)")
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------------------------------


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give the --output_dir of a training run.")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves_figure(run_dir):
    """Loss (training and evaluation), learning rate, and the evaluation metrics, against the optimizer step."""
    plt = _pyplot()
    entries = read_metrics(run_dir)
    train = [e for e in entries if "loss" in e]
    evals = [e for e in entries if "eval_loss" in e]
    metrics = [m for m in ("perplexity", "accuracy", "f1") if any(m in e for e in evals)]
    panels = 2 + bool(metrics)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
    loss_ax, lr_ax = axes[0][0], axes[0][1]
    loss_ax.plot([e["step"] for e in train], [e["loss"] for e in train], label="training loss")
    if evals:
        loss_ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="evaluation loss")
    loss_ax.set_title("loss")
    loss_ax.legend()
    lr_ax.plot([e["step"] for e in train], [e["learning_rate"] for e in train])
    lr_ax.set_title("learning rate")
    if metrics:
        ax = axes[0][2]
        for metric in metrics:
            points = [(e["step"], e[metric]) for e in evals if metric in e]
            ax.plot(*zip(*points), "o-", label=metric)
        if metrics == ["perplexity"]:
            ax.set_yscale("log")
        ax.set_title("evaluation")
        ax.legend()
    for ax in axes[0]:
        ax.set_xlabel("optimizer step")
    fig.suptitle(Path(run_dir).resolve().name, fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def load_model(path: str):
    """Any checkpoint the package loads, in eager attention (the weights are formed there)."""
    from transformers import AutoModel, AutoTokenizer

    import transformer_encoder  # noqa: F401  (registers the Auto classes)

    try:
        model = AutoModel.from_pretrained(path, attn_implementation="eager")
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise OSError(f"cannot load a model and tokenizer from {path}: {error}") from error
    return model, tokenizer


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m transformer_encoder.visualize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    attention = commands.add_parser("attention", help="heatmaps of every head's attention weights over a text")
    attention.add_argument("--model", required=True, help="a checkpoint folder (or Hub id) with its tokenizer")
    attention.add_argument("--text", required=True)
    attention.add_argument("--layer", type=int, help="draw one head at full size: its layer (from 0)")
    attention.add_argument("--head", type=int, help="… and its head (from 0)")
    attention.add_argument("--output", default="attention.png")
    curves = commands.add_parser("curves", help="loss, learning rate and evaluation metrics of a training run")
    curves.add_argument("run_dir", help="the --output_dir of a training run (it holds metrics.jsonl)")
    curves.add_argument("--output", default="curves.png")
    args = parser.parse_args(argv)

    try:
        import matplotlib
    except ImportError as error:  # before loading anything: say at once if matplotlib is missing
        raise SystemExit(f"error: {INSTALL_HINT}") from error
    matplotlib.use("Agg")  # the command draws into files, never a window
    try:
        if args.command == "attention":
            model, tokenizer = load_model(args.model)
            fig = attention_figure(model, tokenizer, args.text, args.layer, args.head)
        else:
            fig = curves_figure(args.run_dir)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from error
    fig.savefig(args.output, dpi=120, bbox_inches="tight")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""`transformer-encoder`: one command, a subcommand per job, as `accelerate launch | config | env` has.

    transformer-encoder train mlm --output_dir runs/mlm-default      # = python -m transformer_encoder.training
    transformer-encoder export runs/sst2 serve/sst2 --quantize int8  # = python -m transformer_encoder.export
    transformer-encoder SUBCOMMAND --help

Each subcommand is the `main` of its module, given the rest of the command line; the `python -m` forms stay.
"""

import importlib
import sys

# subcommand: (module whose main(argv) runs it, what it does)
SUBCOMMANDS = {
    "train": ("transformer_encoder.training.run", "pretrain or fine-tune: train TASK [options] (mlm, rtd, ...)"),
    "convert": ("transformer_encoder.convert", "convert a BERT or RoBERTa checkpoint into this package's format"),
    "export": ("transformer_encoder.export", "export a checkpoint to ONNX (optionally int8) or an ExportedProgram"),
    "visualize": ("transformer_encoder.visualize", "draw attention heatmaps or a training run's curves"),
    "downstream": ("transformer_encoder.benchmarks.downstream", "fine-tune a checkpoint on SST-2, STS-B, CoNLL-2003"),
    "benchmark": ("transformer_encoder.benchmarks.benchmark",
                  "speed and memory against BERT, ModernBERT, ONNX Runtime, OpenVINO"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in SUBCOMMANDS.items()]
    return "usage: transformer-encoder SUBCOMMAND [options]\n\nsubcommands:\n" + "\n".join(lines) + (
        "\n\n`transformer-encoder SUBCOMMAND --help` gives a subcommand's options.\n")


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        sys.exit(f"transformer-encoder: unknown subcommand {name!r}; choose one of {', '.join(SUBCOMMANDS)} (see --help)")
    importlib.import_module(SUBCOMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    main()

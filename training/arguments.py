"""Command-line options of `python -m transformer_encoder.training <task>`.

Names follow transformers' `run_mlm_no_trainer.py` / `run_glue_no_trainer.py` / `run_ner_no_trainer.py` where they
overlap. The same options can come from a JSON or YAML file given in place of the task (it names the task with
`task:`); options on the command line after it override the file.
"""

import argparse
import json
import sys
from pathlib import Path

import yaml

TASKS = ("mlm", "sequence-classification", "token-classification")
SCHEDULERS = ("linear", "cosine", "inverse_sqrt", "constant", "constant_with_warmup", "polynomial")
# Model size options for `mlm` from scratch, mapped onto TransformerEncoderConfig fields of the same name.
MODEL_OPTIONS = {
    "hidden_size": int,
    "num_hidden_layers": int,
    "num_attention_heads": int,
    "intermediate_size": int,
    "hidden_act": str,
    "position_embedding_type": str,
    "norm_first": lambda v: str(v).lower() in ("1", "true", "yes"),
    "hidden_dropout_prob": float,
    "attention_probs_dropout_prob": float,
    "max_position_embeddings": int,
}
# With no dataset named, `mlm` trains this small model on the embedded corpus, in minutes on 2 CPU cores.
EMBEDDED_DEFAULT_MODEL = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 128,
}
EMBEDDED_DEFAULT_TRAINING = {
    "max_seq_length": 128,
    "vocab_size": 4000,
    "num_train_epochs": 40,
    "learning_rate": 1e-3,
    "num_warmup_steps": 100,
    "eval_steps": 200,
}
TRAINING_DEFAULTS = {
    "max_seq_length": 128,
    "vocab_size": 8000,
    "num_train_epochs": 3,
    "learning_rate": 5e-4,
    "num_warmup_steps": 0,
    "eval_steps": None,
}


class UsageError(ValueError):
    """Bad options or data, found before any training step: reported as one paragraph, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m transformer_encoder.training",
        description="Train the Transformer encoder with accelerate: masked-LM pretraining or fine-tuning. Runs "
        "unchanged under `accelerate launch` on one CPU, one or many GPUs, or several nodes.",
    )
    parser.add_argument(
        "task",
        help=f"one of {', '.join(TASKS)}; or a JSON/YAML file holding `task` and any options below",
    )

    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", help="a dataset on the Hub (or a datasets builder such as 'csv')")
    data.add_argument("--dataset_config_name", help="the configuration of --dataset_name")
    data.add_argument("--train_file", help="local training data: .txt, .csv, .json/.jsonl or .parquet")
    data.add_argument("--validation_file", help="local validation data, same formats as --train_file")
    data.add_argument(
        "--validation_split_percentage",
        type=int,
        default=5,
        help="percent of the training data held out for validation when there is no validation split",
    )
    data.add_argument(
        "--text_column_name",
        help="the text column ('text' for mlm, 'sentence' or 'text' for sequence classification, "
        "'tokens' for token classification)",
    )
    data.add_argument(
        "--label_column_name", help="the label column ('label' for sequence, 'ner_tags' for token classification)"
    )
    data.add_argument("--max_train_samples", type=int, help="keep only the first N training examples")
    data.add_argument("--max_eval_samples", type=int, help="keep only the first N validation examples")
    data.add_argument("--streaming", action="store_true", help="stream the data (needs --max_train_steps)")
    data.add_argument("--preprocessing_num_workers", type=int, help="processes for datasets.map")
    data.add_argument("--overwrite_cache", action="store_true", help="recompute the datasets.map caches")
    data.add_argument(
        "--max_seq_length", type=int, help="tokens per sequence (mlm: per packed block); default 128"
    )
    data.add_argument("--mlm_probability", type=float, default=0.15, help="share of tokens masked for mlm")
    data.add_argument(
        "--label_all_tokens",
        action="store_true",
        help="token classification: label every sub-word piece, not only the first of each word",
    )

    model = parser.add_argument_group("model and tokenizer")
    model.add_argument(
        "--model_name_or_path", help="a checkpoint to start from; without it, mlm trains a model from scratch"
    )
    model.add_argument("--config_name", help="a config (folder or config.json) for a model from scratch")
    model.add_argument("--tokenizer_name", help="a tokenizer folder; without it, mlm from scratch trains one")
    model.add_argument(
        "--tokenizer_type", choices=("wordpiece", "bpe"), default="wordpiece", help="the tokenizer to train"
    )
    model.add_argument(
        "--vocab_size", type=int, help="vocabulary of a trained tokenizer; default 8000 (4000 on the built-in corpus)"
    )
    for name, kind in MODEL_OPTIONS.items():
        model.add_argument(f"--{name}", type=kind, help=f"model from scratch: config.{name}")
    model.add_argument(
        "--attn_implementation", default="sdpa", help="eager, sdpa, flash_attention_2 or flex_attention"
    )
    model.add_argument(
        "--ignore_mismatched_sizes",
        action="store_true",
        help="fine-tuning: re-initialise a head whose number of labels differs from the checkpoint's",
    )

    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", help="where checkpoints, logs and the final model go (required)")
    train.add_argument("--per_device_train_batch_size", type=int, default=32)
    train.add_argument("--per_device_eval_batch_size", type=int, default=64)
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument(
        "--learning_rate", type=float, help="peak learning rate; default 5e-4 (1e-3 on the built-in corpus)"
    )
    train.add_argument("--weight_decay", type=float, default=0.01, help="AdamW decay (none on biases and norms)")
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.98, help="0.98 as in the paper")
    train.add_argument("--adam_epsilon", type=float, default=1e-9, help="1e-9 as in the paper")
    train.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping; 0 disables it")
    train.add_argument(
        "--lr_scheduler_type",
        choices=SCHEDULERS,
        default="linear",
        help="inverse_sqrt is the paper's schedule: linear warmup, then decay with 1/sqrt(step)",
    )
    train.add_argument(
        "--num_warmup_steps", type=int, help="optimizer steps of linear warmup; default 0 (100 on the built-in corpus)"
    )
    train.add_argument("--num_train_epochs", type=int, help="default 3 (40 on the built-in corpus)")
    train.add_argument("--max_train_steps", type=int, help="optimizer steps; overrides --num_train_epochs")
    train.add_argument(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        help="defaults to what `accelerate launch`/`accelerate config` says (bf16 is the one that runs on CPU)",
    )
    train.add_argument("--seed", type=int, default=42)
    train.add_argument(
        "--checkpointing_steps", help="save a checkpoint every N optimizer steps, or 'epoch' after each epoch"
    )
    train.add_argument(
        "--checkpoints_total_limit", type=int, default=2, help="keep only the newest N checkpoints (0 = keep all)"
    )
    train.add_argument(
        "--resume_from_checkpoint", help="a checkpoint folder, or 'latest' for the newest whole one in output_dir"
    )
    train.add_argument(
        "--overwrite_output_dir", action="store_true", help="allow an output_dir that holds another run"
    )
    train.add_argument(
        "--eval_steps", type=int, help="also evaluate every N optimizer steps (200 on the built-in corpus)"
    )
    train.add_argument("--logging_steps", type=int, default=10, help="log loss and learning rate every N steps")

    track = parser.add_argument_group("tracking and sharing")
    track.add_argument("--with_tracking", action="store_true", help="log metrics through accelerate's trackers")
    track.add_argument("--report_to", default="tensorboard", help="tracker(s): tensorboard, wandb, all, ...")
    track.add_argument("--push_to_hub", action="store_true", help="upload the final folder to the Hub")
    track.add_argument("--hub_model_id", help="the Hub repository; defaults to the output_dir's name")
    track.add_argument("--hub_token", help="a Hub token (else the logged-in one)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and Path(argv[0]).suffix in (".json", ".yaml", ".yml"):
        argv = _options_from_file(Path(argv[0]), parser) + argv[1:]
    args = parser.parse_args(argv)
    if args.task not in TASKS:
        parser.error(f"unknown task {args.task!r}: choose one of {', '.join(TASKS)} or give a JSON/YAML file")
    return args


def _options_from_file(path: Path, parser: argparse.ArgumentParser) -> list[str]:
    """A JSON/YAML mapping of options, turned into command-line words so that argparse checks them as usual."""
    if not path.is_file():
        parser.error(f"options file {path} does not exist")
    options = (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text()) or {}
    if not isinstance(options, dict) or "task" not in options:
        parser.error(f"{path} must hold a mapping with a `task` key and options, e.g. task: mlm")
    argv = [str(options.pop("task"))]
    for key, value in options.items():
        if value is True:
            argv.append(f"--{key}")
        elif value not in (None, False):
            argv += [f"--{key}", str(value)]
    return argv

"""Command-line options of `transformer-encoder train <task>` (= `python -m transformer_encoder.training <task>`).

Names follow transformers' `run_mlm_no_trainer.py` / `run_glue_no_trainer.py` / `run_ner_no_trainer.py` where they
overlap. The same options can come from a JSON or YAML file given in place of the task (it names the task with
`task:`); options on the command line after it override the file.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import yaml

from ..cpu import cpu_computes_bf16
from . import data
from .errors import UsageError
from .option_types import (
    non_negative_float,
    non_negative_int,
    percentage,
    positive_float,
    positive_int,
    unit_interval,
)
from .tasks import TASKS

SCHEDULERS = ("linear", "cosine", "inverse_sqrt", "constant", "constant_with_warmup", "polynomial")
# Model size options for `mlm` from scratch, mapped onto TransformerEncoderConfig fields of the same name.
MODEL_OPTIONS = {
    "hidden_size": positive_int,
    "num_hidden_layers": positive_int,
    "num_attention_heads": positive_int,
    "intermediate_size": positive_int,
    "hidden_act": str,
    "position_embedding_type": str,
    "norm_first": lambda v: str(v).lower() in ("1", "true", "yes"),
    "hidden_dropout_prob": unit_interval,
    "attention_probs_dropout_prob": unit_interval,
    "max_position_embeddings": positive_int,
}
DROPOUT_OPTIONS = ("hidden_dropout_prob", "attention_probs_dropout_prob")  # also apply to a loaded checkpoint
# The defaults that depend on the run, in one table. A pretraining task with no dataset and no checkpoint named
# trains a small model on the built-in corpus, in minutes on 2 CPU cores (second column): 20 epochs of batches of
# 16 at a peak learning rate of 2e-3, without dropout, which at so few epochs slowed learning more than it
# regularised and cost a quarter of each step (benchmarks/README.md, "The main job's length"). Any other run takes
# the first column, where a task may put its own value (Task.defaults). None leaves the value to the checkpoint or
# the config. Every other option's default is on its argparse line; `--help` shows them all.
#                                (with data, on the built-in corpus)
RUN_DEFAULTS = {
    "max_seq_length":               (128, 128),
    "vocab_size":                   (8000, 4000),
    "per_device_train_batch_size":  (32, 16),
    "num_train_epochs":             (3, 20),
    "learning_rate":                (5e-4, 2e-3),
    "num_warmup_steps":             (0, 100),
    "eval_steps":                   (None, 200),
    "hidden_size":                  (None, 128),
    "num_hidden_layers":            (None, 2),
    "num_attention_heads":          (None, 4),
    "intermediate_size":            (None, 256),
    "max_position_embeddings":      (None, 128),
    "hidden_dropout_prob":          (None, 0.0),
    "attention_probs_dropout_prob": (None, 0.0),
}  # fmt: skip


def run_default(name: str, task, builtin_corpus: bool):
    with_data, on_builtin_corpus = RUN_DEFAULTS[name]
    return on_builtin_corpus if builtin_corpus else task.defaults.get(name, with_data)


class OneLineParser(argparse.ArgumentParser):
    """Bad options are reported in one line (and exit code 2), not after a usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _default(name: str) -> str:
    """The default of an option that depends on the run, as `--help` shows it."""
    general, builtin = RUN_DEFAULTS[name]
    special = "".join(f", {t.defaults[name]} for {t.name}" for t in TASKS.values() if name in t.defaults)
    if general is None:
        return f"{builtin} on the built-in corpus"
    if builtin == general:
        return f"default {general}{special}"
    return f"default {general} ({builtin} on the built-in corpus{special})"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's fixed default in its help line; options without one say when they apply."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="transformer-encoder train",
        usage="%(prog)s TASK [options]   (TASK: " + " | ".join(TASKS) + ")",
        description="Train the Transformer encoder with accelerate: pretraining or fine-tuning. Runs unchanged "
        "under `accelerate launch` on one CPU, one or many GPUs, or several nodes.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "task",
        help=f"one of {', '.join(TASKS)}; or a JSON/YAML file holding `task` and any options below",
    )

    group = parser.add_argument_group("data")
    group.add_argument("--dataset_name", help="a dataset on the Hub (or a datasets builder such as 'csv')")
    group.add_argument("--dataset_config_name", help="the configuration of --dataset_name")
    group.add_argument("--train_file", help=f"local training data: {', '.join(data.FILE_BUILDERS)}")
    group.add_argument("--validation_file", help="local validation data, same formats as --train_file")
    group.add_argument(
        "--validation_split_percentage",
        type=percentage,
        default=5,
        help="percent of the training data held out for validation when there is no validation split",
    )
    text_defaults = "; ".join(f"{t.name}: {'/'.join(t.text_columns)}" for t in TASKS.values() if t.text_columns)
    group.add_argument("--text_column_name", help=f"the text column (looked for: {text_defaults})")
    group.add_argument("--label_column_name", help="the label column ('label'; 'ner_tags' for token classification)")
    group.add_argument("--max_train_samples", type=positive_int, help="keep only the first N training examples")
    group.add_argument("--max_eval_samples", type=positive_int, help="keep only the first N validation examples")
    group.add_argument("--streaming", action="store_true", help="pretraining: stream the data (needs --max_train_steps)")
    group.add_argument("--preprocessing_num_workers", type=positive_int, help="processes for datasets.map")
    group.add_argument("--overwrite_cache", action="store_true", help="recompute the datasets.map caches")
    group.add_argument(
        "--max_seq_length", type=positive_int, help=f"tokens per sequence (mlm: per packed block); {_default('max_seq_length')}"
    )

    group = parser.add_argument_group("model and tokenizer")
    group.add_argument(
        "--model_name_or_path", help="a checkpoint to start from; without it, pretraining trains a model from scratch"
    )
    group.add_argument("--config_name", help="a config (folder or config.json) for a model from scratch")
    group.add_argument("--tokenizer_name", help="a tokenizer folder; without it, pretraining from scratch trains one")
    group.add_argument(
        "--tokenizer_type", choices=("wordpiece", "bpe"), default="wordpiece", help="the tokenizer to train"
    )
    group.add_argument("--vocab_size", type=positive_int, help=f"vocabulary of a trained tokenizer; {_default('vocab_size')}")
    for name, kind in MODEL_OPTIONS.items():
        extra = f" ({_default(name)})" if name in RUN_DEFAULTS else ""
        scope = "any model" if name in DROPOUT_OPTIONS else "model from scratch"
        group.add_argument(f"--{name}", type=kind, help=f"{scope}: config.{name}{extra}")
    group.add_argument(
        "--attn_implementation", default="sdpa", help="eager, sdpa, flash_attention_2 or flex_attention"
    )
    group.add_argument(
        "--ignore_mismatched_sizes",
        action="store_true",
        help="fine-tuning: re-initialise a head whose number of labels differs from the checkpoint's",
    )

    group = parser.add_argument_group("training")
    group.add_argument("--output_dir", help="where checkpoints, logs and the final model go (required)")
    group.add_argument(
        "--per_device_train_batch_size",
        type=positive_int,
        help=f"examples per process; {_default('per_device_train_batch_size')}",
    )
    group.add_argument("--per_device_eval_batch_size", type=positive_int, default=64, help="examples per process")
    group.add_argument(
        "--gradient_accumulation_steps", type=positive_int, default=1, help="micro-batches per optimizer step"
    )
    group.add_argument("--learning_rate", type=positive_float, help=f"peak learning rate; {_default('learning_rate')}")
    group.add_argument(
        "--weight_decay", type=non_negative_float, default=0.01, help="AdamW decay (none on biases and norms)"
    )
    group.add_argument("--adam_beta1", type=unit_interval, default=0.9, help="AdamW β1")
    group.add_argument("--adam_beta2", type=unit_interval, default=0.98, help="AdamW β2, 0.98 as in the paper")
    group.add_argument("--adam_epsilon", type=positive_float, default=1e-9, help="AdamW ε, 1e-9 as in the paper")
    group.add_argument(
        "--max_grad_norm", type=non_negative_float, default=1.0, help="gradient clipping; 0 disables it"
    )
    group.add_argument(
        "--lr_scheduler_type",
        choices=SCHEDULERS,
        default="linear",
        help="inverse_sqrt is the paper's schedule: linear warmup, then decay with 1/sqrt(step)",
    )
    group.add_argument(
        "--num_warmup_steps", type=non_negative_int, help=f"optimizer steps of linear warmup; {_default('num_warmup_steps')}"
    )
    group.add_argument("--num_train_epochs", type=positive_int, help=_default("num_train_epochs"))
    group.add_argument("--max_train_steps", type=positive_int, help="optimizer steps; overrides --num_train_epochs")
    group.add_argument(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        help="defaults to what `accelerate launch`/`accelerate config` says; with neither, pretraining on a CPU "
        "that computes bf16 natively (AVX512-BF16, AMX) uses bf16, and fp32 elsewhere",
    )
    group.add_argument("--seed", type=non_negative_int, default=42, help="seeds weights, shuffling, masking, dropout")
    group.add_argument(
        "--checkpointing_steps", help="save a checkpoint every N optimizer steps, or 'epoch' after each epoch"
    )
    group.add_argument(
        "--checkpoints_total_limit", type=non_negative_int, default=2, help="keep only the newest N checkpoints (0 = all)"
    )
    group.add_argument(
        "--resume_from_checkpoint", help="a checkpoint folder, or 'latest' for the newest whole one in output_dir"
    )
    group.add_argument(
        "--overwrite_output_dir", action="store_true", help="allow an output_dir that holds another run"
    )
    group.add_argument("--eval_steps", type=positive_int, help=f"also evaluate every N optimizer steps ({_default('eval_steps')})")
    group.add_argument(
        "--logging_steps", type=positive_int, default=10, help="log loss and learning rate every N steps"
    )

    group = parser.add_argument_group("tracking and sharing")
    group.add_argument("--with_tracking", action="store_true", help="log metrics through accelerate's trackers")
    group.add_argument("--report_to", default="tensorboard", help="tracker(s): tensorboard, wandb, all, ...")
    group.add_argument("--push_to_hub", action="store_true", help="upload the final folder to the Hub")
    group.add_argument("--hub_model_id", help="the Hub repository; defaults to the output_dir's name")
    group.add_argument("--hub_token", help="a Hub token (else the logged-in one)")

    for task in TASKS.values():
        task.add_arguments(parser.add_argument_group(f"{task.name} ({task.title.lower()})"))
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of one run, with every default resolved and every check that needs no data made."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and Path(argv[0]).suffix in (".json", ".yaml", ".yml"):
        argv = _options_from_file(Path(argv[0]), parser) + argv[1:]
    args = parser.parse_args(argv)
    if args.task not in TASKS:
        parser.error(f"unknown task {args.task!r}: choose one of {', '.join(TASKS)} or give a JSON/YAML file")
    try:
        resolve_defaults(args)
        check(args, TASKS[args.task])
    except UsageError as error:
        parser.error(str(error))
    return args


def resolve_defaults(args):
    """The defaults that depend on the data: a pretraining task with no data and no checkpoint named trains a
    small model on the built-in corpus."""
    args.builtin_corpus = TASKS[args.task].pretraining and not (
        args.dataset_name or args.train_file or args.model_name_or_path
    )
    task = TASKS[args.task]
    for name in RUN_DEFAULTS:
        if getattr(args, name) is None:
            setattr(args, name, run_default(name, task, args.builtin_corpus))
    args.dataset_label = data.EMBEDDED_CORPUS if args.builtin_corpus else (args.dataset_name or args.train_file)
    args.precision_note = None
    if args.mixed_precision is None:
        args.mixed_precision, args.precision_note = default_precision(task, args.builtin_corpus)


def default_precision(task, builtin_corpus: bool) -> tuple[str | None, str | None]:
    """Pretraining on a CPU that computes bf16 natively runs under bf16 autocast: about twice the steps in the same
    minutes at the sizes pretraining uses. Not the built-in corpus's small model, whose matrices are too small for
    bf16 to pay for its conversions: it ran 1.4× slower under bf16 autocast than in fp32 on a Xeon with AMX
    (benchmarks/README.md, "The main job's length"). Detected, never assumed; a precision set by `accelerate
    launch` / `accelerate config` is left to accelerate, and so is any machine with a GPU."""
    if not task.pretraining or "ACCELERATE_MIXED_PRECISION" in os.environ or torch.cuda.is_available():
        return None, None
    if builtin_corpus:
        return None, "fp32: the built-in corpus's small model runs faster in fp32 than under bf16 autocast"
    if cpu_computes_bf16():
        return "bf16", "bf16 autocast: this CPU computes bf16 natively (AVX512-BF16 or AMX)"
    return None, "fp32: this CPU has no native bf16 (neither AVX512-BF16 nor AMX), where bf16 would run slower"


def check(args, task):
    """Checks between options (single numbers are checked as they are parsed)."""
    if not args.output_dir:
        raise UsageError("--output_dir is required: it receives checkpoints and the trained model")
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise UsageError(f"--output_dir {args.output_dir} is a file, not a folder")
    if args.streaming and not args.max_train_steps:
        raise UsageError("--streaming reads data of unknown length: give --max_train_steps")
    if args.streaming and not task.pretraining:
        raise UsageError("--streaming is for pretraining corpora; fine-tuning data is read whole")
    if args.checkpointing_steps not in (None, "epoch") and not (
        str(args.checkpointing_steps).isdigit() and int(args.checkpointing_steps) > 0
    ):
        raise UsageError(f"--checkpointing_steps takes a number of steps or 'epoch', got {args.checkpointing_steps!r}")
    if args.max_seq_length < 8:
        raise UsageError(f"--max_seq_length={args.max_seq_length} is too short to hold any text")
    task.check_arguments(args)
    if not task.pretraining and not (args.model_name_or_path or args.tokenizer_name):
        raise UsageError(f"{task.name} fine-tunes a model: give --model_name_or_path (or at least --tokenizer_name)")


def _options_from_file(path: Path, parser: argparse.ArgumentParser) -> list[str]:
    """A JSON/YAML mapping of options, turned into command-line words so that argparse checks them as usual."""
    if not path.is_file():
        parser.error(f"options file {path} does not exist")
    options = (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text()) or {}
    if not isinstance(options, dict) or "task" not in options:
        parser.error(f"{path} must hold a mapping with a `task` key and options, e.g. task: mlm")
    argv = [str(options.pop("task"))]
    for key, value in options.items():
        action = parser._option_string_actions.get(f"--{key}")
        is_flag = action is not None and action.nargs == 0  # such as --streaming
        if value is None or (is_flag and value is False):
            continue
        if is_flag and value is True:
            argv.append(f"--{key}")
        else:  # a YAML true/false for an option that takes a value (norm_first: true) is passed as that value
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv

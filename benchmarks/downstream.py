"""What a pretrained checkpoint is worth downstream: fine-tune it on the local GLUE and CoNLL sets with fixed budgets
and write one line per task.

    transformer-encoder downstream runs/mlm-default                    # SST-2, STS-B and CoNLL-2003
    transformer-encoder downstream runs/rtd --tasks sst2 --mixed_precision bf16
    transformer-encoder downstream --table runs/downstream/*/downstream.json   # one table for many checkpoints

Each task runs the training CLI in its own process, as a user would, with the budget of `TASKS` (steps, batch,
learning rate, sequence length, seed): two pretraining recipes compared with this script then differ only in the
checkpoint. Scores are on the validation files of `../shared/data/` (STS-B: the train re-split, see its README).
Options the script does not know are passed on to the CLI (`--mixed_precision bf16`, `--attn_implementation eager`).

Writes `<output_dir>/downstream.json` and `downstream.md`, and each fine-tuned model in `<output_dir>/<task>/`.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from transformer_encoder.benchmarks import DATA_DIR

DATA = DATA_DIR  # --data_dir moves it


@dataclass(frozen=True)
class Task:
    cli_task: str
    train_file: str
    validation_file: str
    metric: str  # the headline key of the run's all_results.json
    max_train_steps: int
    max_seq_length: int
    learning_rate: float
    batch_size: int = 32
    num_warmup_steps: int = 100


# The budgets: about 1 epoch of SST-2, 4 of STS-B and 2 of CoNLL-2003; a few minutes each for a d-256 model on 2 cores.
TASKS = {
    "sst2": Task("sequence-classification", "sst2/train.csv", "sst2/validation.csv", "accuracy", 2000, 64, 1e-4),
    "stsb": Task("sequence-classification", "stsb/train.csv", "stsb/validation.csv", "spearmanr", 500, 128, 1e-4),
    "conll2003": Task(
        "token-classification", "conll2003/train.jsonl", "conll2003/validation.jsonl", "f1", 900, 128, 1e-4
    ),
}


def cli_arguments(task: Task, checkpoint: str, output_dir: Path, data: Path, max_train_steps: int | None) -> list[str]:
    return [
        task.cli_task,
        "--model_name_or_path", checkpoint,
        "--train_file", str(data / task.train_file),
        "--validation_file", str(data / task.validation_file),
        "--output_dir", str(output_dir),
        "--max_train_steps", str(max_train_steps or task.max_train_steps),
        "--max_seq_length", str(task.max_seq_length),
        "--learning_rate", str(task.learning_rate),
        "--per_device_train_batch_size", str(task.batch_size),
        "--num_warmup_steps", str(min(task.num_warmup_steps, (max_train_steps or task.max_train_steps) // 10)),
        "--seed", "42",
    ]  # fmt: skip


def command_line(arguments: list[str]) -> str:
    """The training command a run stands for, as a user would type it."""
    return " ".join(["transformer-encoder train", *arguments])


def run_training(arguments: list[str]) -> subprocess.CompletedProcess:
    """`transformer-encoder train ARGUMENTS` in a process of its own, as a user runs it; its stderr is
    kept for the error message."""
    command = [sys.executable, "-m", "transformer_encoder.training", *arguments]
    return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def fine_tune(name: str, checkpoint: str, args, passthrough: list[str]) -> dict:
    task = TASKS[name]
    output_dir = Path(args.output_dir) / name
    arguments = cli_arguments(task, checkpoint, output_dir, args.data, args.max_train_steps) + passthrough
    if output_dir.exists():
        arguments.append("--overwrite_output_dir")
    command = command_line(arguments)
    print(f"[{name}] {command}", flush=True)
    started = time.time()
    result = run_training(arguments)
    wall = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"[{name}] the fine-tuning run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    metrics = json.loads((output_dir / "all_results.json").read_text())
    row = {
        "task": name,
        "metric": task.metric,
        "score": metrics[task.metric],
        "steps": metrics["train_steps"],
        "wall_s": round(wall, 1),
        "metrics": metrics,
        "command": command,
    }
    print(f"[{name}] {task.metric} {row['score']:.4f} after {row['steps']} steps, {wall:.0f} s", flush=True)
    return row


def markdown(reports: list[dict]) -> str:
    lines = ["| checkpoint | task | metric | score | steps | wall (s) |", "|---|---|---|---|---|---|"]
    for report in reports:
        for row in report["rows"]:
            lines.append(
                f"| {report['checkpoint']} | {row['task']} | {row['metric']} | {row['score']:.4f} | {row['steps']} "
                f"| {row['wall_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", help="a pretrained checkpoint folder (or Hub name)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--output_dir", help="default: runs/downstream/<checkpoint folder name>")
    parser.add_argument("--data_dir", "--data", dest="data", type=Path, default=DATA, help=f"the shared data folder (default {DATA})")
    parser.add_argument("--max_train_steps", type=int, help="override every task's budget (quick looks, tests)")
    parser.add_argument("--table", nargs="+", type=Path, help="only print one table from these downstream.json files")
    args, passthrough = parser.parse_known_args(argv)

    if args.table:
        print(markdown([json.loads(path.read_text()) for path in args.table]), end="")
        return
    if not args.checkpoint:
        parser.error("give a checkpoint to fine-tune (or --table FILES)")
    if not (args.data / "README.md").is_file():
        parser.error(f"no shared data folder at {args.data}: pass --data_dir")
    args.output_dir = args.output_dir or str(Path("runs") / "downstream" / Path(args.checkpoint).name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [fine_tune(name, args.checkpoint, args, passthrough) for name in args.tasks]
    report = {"checkpoint": args.checkpoint, "passthrough": passthrough, "rows": rows}
    output_dir = Path(args.output_dir)
    (output_dir / "downstream.json").write_text(json.dumps(report, indent=2))
    (output_dir / "downstream.md").write_text(markdown([report]))
    print(markdown([report]), end="")
    return report


if __name__ == "__main__":
    main()

"""Which pretraining recipe learns most for the minutes it costs: every recipe pretrains a model from scratch for the
same wall time on the same text and tokenizer, then `benchmarks/downstream.py` fine-tunes it with its fixed budgets.

    python -m transformer_encoder.benchmarks.recipes --minutes 4                          # every recipe; SST-2 and STS-B downstream
    python -m transformer_encoder.benchmarks.recipes --recipes paper rtd --minutes 4 --tasks sst2

Options it does not know go to every pretraining run, after the common ones (`--hidden_size 128` changes the size).

Pretraining text (issue 12): WikiText-2 `test.txt` and the SST-2 *train* sentences read as plain text, labels
dropped; evaluation text: WikiText-2 `valid.txt`. One WordPiece tokenizer, trained on that text, serves every recipe.
Equal wall time: a short probe run measures each recipe's step time on this machine, and its pretraining gets the
steps that fill `--minutes` (so the learning-rate schedule ends where the time does). The table reports the minutes
each pretraining really took beside the scores.

Writes `<output_dir>/recipes.json` and `recipes.md`; each recipe's checkpoint in `<output_dir>/<recipe>/pretrain/`
and its fine-tuned models under `<output_dir>/<recipe>/downstream/`.
"""

import argparse
import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformer_encoder.benchmarks import downstream  # the fine-tuning budgets


@dataclass(frozen=True)
class Recipe:
    task: str  # mlm or rtd
    options: list[str] = field(default_factory=list)  # what differs from the paper's defaults
    about: str = ""


RECIPES = {
    "paper": Recipe("mlm", [], "post-norm, ReLU, sinusoidal positions, 15 % masking (the config's defaults)"),
    "mask-30": Recipe("mlm", ["--mlm_probability", "0.3"], "the paper's model, 30 % masking (Wettig et al. 2022)"),
    "pre-norm": Recipe("mlm", ["--norm_first", "true"], "the paper's model with pre-norm blocks"),
    "modern": Recipe(
        "mlm",
        ["--hidden_act", "geglu", "--position_embedding_type", "rotary", "--norm_first", "true"],
        "GeGLU, rotary positions, pre-norm (ModernBERT's and cramming's choices)",
    ),
    "rtd": Recipe("rtd", [], "the paper's model as an ELECTRA discriminator (generator 1/4, λ 50)"),
}

# The same for every recipe: a d-256, 4-layer encoder (BERT-Mini's shape), blocks of 128 tokens, batches of 32.
COMMON = [
    "--hidden_size", "256", "--num_hidden_layers", "4", "--num_attention_heads", "4", "--intermediate_size", "1024",
    "--max_seq_length", "128", "--per_device_train_batch_size", "32", "--learning_rate", "5e-4",
    "--max_eval_samples", "256", "--logging_steps", "20", "--seed", "42",
]  # fmt: skip
PROBE_STEPS = 30


def pretraining_text(data: Path, out: Path) -> Path:
    """WikiText-2 test.txt, then the SST-2 train sentences, one a line: unlabelled text for pretraining."""
    path = out / "pretraining.txt"
    if not path.is_file():
        lines = (data / "wikitext-2" / "test.txt").read_text(encoding="utf-8").splitlines()
        with (data / "sst2" / "train.csv").open(encoding="utf-8") as f:
            lines += [row["sentence"].strip() for row in csv.DictReader(f)]
        out.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def shared_tokenizer(text: Path, out: Path) -> Path:
    from datasets import load_dataset

    from transformer_encoder.training.tokenizer import train_tokenizer

    path = out / "tokenizer"
    if not (path / "tokenizer.json").is_file():
        dataset = load_dataset("text", data_files=str(text))["train"]
        train_tokenizer(dataset, "text", "wordpiece", 8000, 128).save_pretrained(path)
    return path


def pretrain(recipe: Recipe, steps: int, output_dir: Path, text: Path, tokenizer: Path, args) -> dict:
    arguments = [
        recipe.task, "--train_file", str(text),
        "--validation_file", str(args.data / "wikitext-2" / "valid.txt"), "--tokenizer_name", str(tokenizer),
        "--output_dir", str(output_dir), "--overwrite_output_dir", "--max_train_steps", str(steps),
        "--num_warmup_steps", str(max(1, steps // 10)), *COMMON, *recipe.options, *args.passthrough,
    ]  # fmt: skip
    started = time.time()
    result = downstream.run_training(arguments)
    if result.returncode != 0:
        raise SystemExit(f"pretraining failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    metrics = json.loads((output_dir / "all_results.json").read_text())
    return {
        "wall_s": round(time.time() - started, 1),
        "metrics": metrics,
        "command": downstream.command_line(arguments),
    }


def steps_for_minutes(recipe: Recipe, minutes: float, probe_dir: Path, text: Path, tokenizer: Path, args) -> int:
    """The steps that fill `minutes`, from the step time of a short probe run of the same recipe (its first steps,
    slower than the rest, make the estimate err on the short side)."""
    probe = pretrain(recipe, PROBE_STEPS, probe_dir, text, tokenizer, args)
    seconds_per_step = probe["metrics"]["train_runtime_s"] / PROBE_STEPS
    return max(PROBE_STEPS, int(minutes * 60 / seconds_per_step))


def run_recipe(name: str, args, text: Path, tokenizer: Path) -> dict:
    recipe, out = RECIPES[name], Path(args.output_dir) / name
    steps = args.steps or steps_for_minutes(recipe, args.minutes, out / "probe", text, tokenizer, args)
    print(f"[{name}] {steps} pretraining steps", flush=True)
    run = pretrain(recipe, steps, out / "pretrain", text, tokenizer, args)
    print(f"[{name}] pretrained: {run['metrics']}", flush=True)
    fine_tuning = [str(out / "pretrain"), "--tasks", *args.tasks, "--output_dir", str(out / "downstream")]
    if args.downstream_steps:
        fine_tuning += ["--max_train_steps", str(args.downstream_steps)]
    scores = downstream.main(fine_tuning)
    return {"recipe": name, "about": recipe.about, "task": recipe.task, "steps": steps, "pretraining": run,
            "downstream": {row["task"]: row for row in scores["rows"]}}  # fmt: skip


def held_out(metrics: dict) -> str:
    """The pretraining objective's own validation figure: MLM perplexity, or the rtd generator's perplexity and the
    discriminator's F1 at spotting replaced tokens."""
    if "generator_perplexity" in metrics:
        return f"generator perplexity {metrics['generator_perplexity']:.0f}, replaced-token F1 {metrics['rtd_f1']:.2f}"
    return f"perplexity {metrics['perplexity']:.0f}"


def markdown(rows: list[dict], tasks: list[str]) -> str:
    head = "| recipe | objective | pretraining steps | pretraining (min) | held-out |"
    head += "".join(f" {t} {downstream.TASKS[t].metric} |" for t in tasks)
    lines = [head, "|" + "---|" * (5 + len(tasks))]
    for row in rows:
        line = f"| {row['recipe']} | {row['task']} | {row['steps']} | {row['pretraining']['wall_s'] / 60:.1f} "
        line += f"| {held_out(row['pretraining']['metrics'])} |"
        line += "".join(f" {row['downstream'][t]['score']:.4f} |" for t in tasks)
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--minutes", type=float, default=4.0, help="pretraining wall time of every recipe")
    parser.add_argument("--tasks", nargs="+", choices=list(downstream.TASKS), default=["sst2", "stsb"])
    parser.add_argument("--output_dir", default="runs/recipes")
    parser.add_argument("--steps", type=int, help="pretraining steps for every recipe instead of --minutes (tests)")
    parser.add_argument("--downstream_steps", type=int, help="override downstream.py's budgets (tests)")
    parser.add_argument("--data_dir", "--data", dest="data", type=Path, default=downstream.DATA, help="the shared data folder")
    args, passthrough = parser.parse_known_args(argv)
    args.passthrough = passthrough  # options for every pretraining run
    if not (args.data / "README.md").is_file():
        parser.error(f"no shared data folder at {args.data}: pass --data_dir")

    out = Path(args.output_dir)
    text = pretraining_text(args.data, out)
    tokenizer = shared_tokenizer(text, out)
    rows = []
    for name in args.recipes:
        rows.append(run_recipe(name, args, text, tokenizer))
        (out / "recipes.json").write_text(json.dumps({"minutes": args.minutes, "rows": rows}, indent=2))
        (out / "recipes.md").write_text(markdown(rows, args.tasks))
    print(markdown(rows, args.tasks), end="")


if __name__ == "__main__":
    main()

"""A teacher and its students side by side: validation score, parameters, and serving speed on CPU.

    python -m transformer_encoder.benchmarks.students --teacher runs/teacher-sst2 \
        --student "distilled=runs/student-sst2" --student "no teacher=runs/student-no-teacher" \
        --out benchmarks/results/distill-sst2-2026-12-06

Each folder is a trained run (its `all_results.json` gives the score). Speed: SST-2 dev sentences in batches of 16
padded to the longest, every model in fp32 and, where the CPU computes it natively, in bf16; models alternate within
each round, and each ratio to the teacher (same precision) is the median over rounds of the ratio within a round
(`benchmark.py`'s timing and pairing). Writes `students.md` and `.json` into --out.
"""

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch
from transformer_encoder.benchmarks import DATA_DIR
from transformer_encoder.benchmarks.benchmark import machine_name, speedup, sst2_sentences, time_alternating
from transformer_encoder.benchmarks.int8_minilm import padded_batches, torch_runner
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from transformer_encoder.cpu import cpu_computes_bf16

SCORES = ("accuracy", "spearmanr")  # the first one a run reports is its row's score


def named_folder(text: str) -> tuple[str, Path]:
    name, _, folder = text.rpartition("=")
    if not name or not (Path(folder) / "all_results.json").is_file():
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER of a trained run (with all_results.json), got {text!r}")
    return name, Path(folder)


def score(folder: Path) -> tuple[str, float]:
    results = json.loads((folder / "all_results.json").read_text())
    metric = next(m for m in SCORES if m in results)
    return metric, results[metric]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=lambda t: named_folder(f"teacher={t}"), required=True)
    parser.add_argument("--student", type=named_folder, action="append", required=True, help="NAME=FOLDER, repeated")
    parser.add_argument("--data_dir", default=str(DATA_DIR), help="folder holding sst2/")
    parser.add_argument("--out", required=True, help="folder for students.md and .json")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sentences", type=int, help="the first N dev sentences only (default: all 872)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sentences_file = Path(args.data_dir) / "sst2" / "validation.csv"
    if not sentences_file.is_file():
        parser.error(f"{sentences_file} not found: give --data_dir, the folder holding sst2/")
    torch.set_num_threads(args.threads)

    folders = dict([args.teacher, *args.student])
    tokenizer = AutoTokenizer.from_pretrained(folders["teacher"])  # the students read the teacher's tokens
    dev = sst2_sentences(sentences_file)[:args.sentences]
    batches = padded_batches(tokenizer, dev)
    models = {name: AutoModelForSequenceClassification.from_pretrained(folder).eval() for name, folder in folders.items()}
    precisions = {"fp32": lambda m: m}
    if cpu_computes_bf16():
        precisions["bf16"] = lambda m: copy.deepcopy(m).to(torch.bfloat16)

    rows = {}
    for precision, cast in precisions.items():
        runners = {name: torch_runner(cast(model)) for name, model in models.items()}
        passes = {name: (lambda run=run: [run(batch) for batch in batches]) for name, run in runners.items()}
        seconds = time_alternating(passes, args.rounds, "cpu")
        timed = {name: {"sentences_per_s": len(dev) / statistics.median(s), "seconds": s} for name, s in seconds.items()}
        for name, row in timed.items():
            row["vs_teacher"], row["rounds_won"] = speedup(row, timed["teacher"])
            rows.setdefault(name, {})[precision] = row
    for name, folder in folders.items():
        metric, value = score(folder)
        config = models[name].config
        rows[name].update(folder=str(folder), metric=metric, score=value,
                          parameters=sum(p.numel() for p in models[name].parameters()),
                          size=f"d{config.hidden_size}, {config.num_hidden_layers} layers")

    machine = f"{machine_name('cpu')}, torch {torch.__version__}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "students.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    header = " | ".join(f"{p} sentences/s (× teacher, rounds won)" for p in precisions)
    title = f"# Teacher and students\n\n{machine}; SST-2 dev sentences in batches of 16, median of {args.rounds} rounds.\n"
    lines = [title, f"| model | size | parameters | score | {header} |", "|---" * (4 + len(precisions)) + "|"]
    for name, row in rows.items():
        speeds = " | ".join(f"{row[p]['sentences_per_s']:,.0f} ({row[p]['vs_teacher']:.2f}, {row[p]['rounds_won']})"
                            for p in precisions)
        lines.append(f"| {name} | {row['size']} | {row['parameters'] / 1e6:.1f} M | {row['metric']} "
                     f"{row['score']:.4f} | {speeds} |")
    (out / "students.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

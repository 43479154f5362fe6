"""SST-2 dev accuracy and speed of one fine-tuned checkpoint at every serving precision, on CPU.

    python -m transformer_encoder.benchmarks.sst2_precision runs/sst2                  # writes benchmarks/results/sst2-precision.md/.json

Precisions: ours fp32 (the reference), ours int8 (`quantize_int8`), ours bf16 (`.to(torch.bfloat16)`; where the
CPU has no AVX512-BF16 / AMX torch emulates it: the accuracy holds, the speed does not mean anything), and the same
weights exported by `transformer-encoder export --quantize int8` run by ONNX Runtime in fp32 and int8.
The dev sentences are tokenized by the checkpoint's tokenizer, in batches of 16 padded to the longest, as served.
Contenders alternate pass by pass over the dev set; speeds are medians, in sentences per second.
"""

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import transformer_encoder  # noqa: F401  (registers the Auto classes)
from transformer_encoder.export import export, onnx_session
from transformer_encoder.cpu import cpu_computes_bf16
from transformer_encoder.quantization import quantize_int8
from transformer_encoder.benchmarks import DATA_DIR

DATA = DATA_DIR / "sst2" / "validation.csv"


def dev_batches(tokenizer, path: Path, batch_size: int):
    rows = list(csv.DictReader(path.open()))
    batches = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        encoded = tokenizer([r["sentence"] for r in chunk], padding=True, truncation=True, return_tensors="pt")
        batches.append((dict(encoded), torch.tensor([int(r["label"]) for r in chunk])))
    return batches


def torch_predictor(model):
    def predict(inputs):
        with torch.inference_mode():
            return model(**inputs).logits.float().argmax(-1)

    return predict


def onnx_predictor(path: Path):
    session = onnx_session(path, threads=torch.get_num_threads())
    names = [i.name for i in session.get_inputs()]
    logits_index = [o.name for o in session.get_outputs()].index("logits")

    def predict(inputs):
        outputs = session.run(None, {name: inputs[name].numpy() for name in names})
        return torch.from_numpy(outputs[logits_index]).argmax(-1)

    return predict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a sequence-classification checkpoint fine-tuned on SST-2, with tokenizer")
    parser.add_argument("--data", default=str(DATA), help="SST-2's validation.csv")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sst2-precision"))
    args = parser.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(args.checkpoint, dtype=torch.float32).eval()
    batches = dev_batches(tokenizer, Path(args.data), args.batch_size)
    with tempfile.TemporaryDirectory() as folder:
        export(args.checkpoint, Path(folder) / "onnx", quantize="int8")
        predictors = {
            "ours fp32": torch_predictor(model),
            "ours int8 (quantize_int8)": torch_predictor(quantize_int8(model)),
            "ours bf16": torch_predictor(AutoModelForSequenceClassification.from_pretrained(
                args.checkpoint, dtype=torch.bfloat16).eval()),
            "ONNX Runtime fp32": onnx_predictor(Path(folder) / "onnx" / "model.onnx"),
            "ONNX Runtime int8": onnx_predictor(Path(folder) / "onnx" / "model_quantized.onnx"),
        }
        correct, seconds = {}, {name: [] for name in predictors}
        for _ in range(args.rounds):
            for name, predict in predictors.items():
                start = time.perf_counter()
                predictions = [predict(inputs) for inputs, _ in batches]
                seconds[name].append(time.perf_counter() - start)
                correct[name] = sum((p == labels).sum().item() for p, (_, labels) in zip(predictions, batches))

    total = sum(len(labels) for _, labels in batches)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "CPU")
    native = cpu_computes_bf16()
    rows = [{"precision": name, "accuracy": correct[name] / total, "sentences_per_s": total / statistics.median(t),
             "min": total / max(t), "max": total / min(t)} for name, t in seconds.items()]
    reference = rows[0]
    lines = [f"Checkpoint: {args.checkpoint}; SST-2 dev ({total} sentences, batches of {args.batch_size}); {cpu}, "
             f"{torch.get_num_threads()} threads, bf16 {'native' if native else 'EMULATED (speed not meaningful)'}; "
             f"torch {torch.__version__}. Medians over {args.rounds} alternated passes.", "",
             "| precision | dev accuracy | change (points) | sentences/s (min–max) | speed vs ours fp32 |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['precision']} | {row['accuracy']:.2%} | "
                     f"{100 * (row['accuracy'] - reference['accuracy']):+.2f} | {row['sentences_per_s']:,.0f} "
                     f"({row['min']:,.0f}–{row['max']:,.0f}) | {row['sentences_per_s'] / reference['sentences_per_s']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"checkpoint": str(args.checkpoint), "cpu": cpu,
                                                    "bf16_native": native, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

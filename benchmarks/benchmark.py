"""Our encoder against the encoders users would pick instead, side by side in one process.

    transformer-encoder benchmark                       # CPU, tiny and BERT-base sizes
    transformer-encoder benchmark --device cuda --sizes base --seq 512 --dtype bfloat16

Peers, configured to the same hidden size, layers, heads, FFN size, vocabulary and activation (parameter counts
checked before timing): transformers' BertModel / BertForMaskedLM (sdpa and eager), torch.nn.TransformerEncoder
(with its inference fast path, nested tensors from the padding mask) and transformers' ModernBertModel (GeGLU
FFN sized to the same parameter count). Workloads: inference at fixed length, inference on real sentence batches
(SST-2 and CoNLL-2003 dev sentences, tokenized, padded to the longest in each batch of 16), and one masked-LM
training step (forward, backward, AdamW) at fixed length. Contenders alternate run by run (A B C, then C B A, …) after
a warm-up; each figure is the median over rounds, with the min–max spread, and each ratio the median of the
two contenders' ratios within a round (minutes apart at most). Tokens/s counts real tokens only.
MFU divides the model's useful FLOP/s (dense-equivalent, real tokens) by this machine's measured matmul rate.

Writes `<out>/results-<device>.md`, `.json` and `.png`.
"""

import argparse
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertModel, ModernBertConfig, ModernBertForMaskedLM, ModernBertModel

import transformer_encoder
from transformer_encoder import TransformerEncoderConfig, TransformerEncoderForMaskedLM, TransformerEncoderModel
from transformer_encoder.export import ServingSignature, onnx_session, quantize_onnx
from transformer_encoder.cpu import cpu_computes_bf16
from transformer_encoder.quantization import quantize_int8, to_bf16_where_native
from transformer_encoder.benchmarks import DATA_DIR

SIZES = {
    "tiny": dict(hidden=256, layers=4, heads=4, ffn=1024, vocab=8192),
    "base": dict(hidden=768, layers=12, heads=12, ffn=3072, vocab=30522),
}
SETTLE_SECONDS = 0.1  # pause before each timed run (see time_alternating)
DATA = DATA_DIR  # --data_dir moves it


# ---------------------------------------------------------------------------------------------------------------------
# Contenders
# ---------------------------------------------------------------------------------------------------------------------


def ours(size, max_len, mlm=False, implementation="sdpa"):
    config = TransformerEncoderConfig(
        vocab_size=size["vocab"], hidden_size=size["hidden"], num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"], intermediate_size=size["ffn"], hidden_act="gelu",
        position_embedding_type="learned", max_position_embeddings=max(512, max_len), type_vocab_size=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, sparse_prediction=mlm,
    )
    cls = TransformerEncoderForMaskedLM if mlm else TransformerEncoderModel
    return cls._from_config(config, attn_implementation=implementation)


def bert(size, max_len, mlm=False, implementation="sdpa"):
    config = BertConfig(
        vocab_size=size["vocab"], hidden_size=size["hidden"], num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"], intermediate_size=size["ffn"], hidden_act="gelu",
        max_position_embeddings=max(512, max_len), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    cls = BertForMaskedLM if mlm else BertModel
    return cls._from_config(config, attn_implementation=implementation)


def modernbert(size, max_len, mlm=False, implementation="sdpa", intermediate=None):
    if intermediate is None:  # GeGLU holds 3·d·I FFN weights; rotary positions hold none: match BERT's count
        with torch.device("meta"):
            target = parameters(bert(size, max_len, mlm))
            first = round(size["ffn"] * 2 / 3)
            short = target - parameters(modernbert(size, max_len, mlm, implementation, first))
        intermediate = first + round(short / (size["layers"] * (3 * size["hidden"] + 2)))
    config = ModernBertConfig(
        vocab_size=size["vocab"], hidden_size=size["hidden"], num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"], intermediate_size=intermediate, hidden_activation="gelu",
        max_position_embeddings=max(512, max_len), layer_types=["full_attention"] * size["layers"],
        attention_bias=True, mlp_bias=True, norm_bias=True, attention_dropout=0.0, mlp_dropout=0.0,
        embedding_dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
    )
    cls = ModernBertForMaskedLM if mlm else ModernBertModel
    return cls._from_config(config, attn_implementation=implementation)


class TorchEncoder(nn.Module):
    """Token + position embeddings, torch.nn.TransformerEncoder, and (for MLM) BERT's LM head."""

    def __init__(self, size, max_len, mlm=False):
        super().__init__()
        d = size["hidden"]
        self.embed = nn.Embedding(size["vocab"], d)
        self.positions = nn.Embedding(max(512, max_len), d)
        self.types = nn.Embedding(2, d)
        self.norm = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(d, size["heads"], size["ffn"], dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, size["layers"], enable_nested_tensor=True)
        self.mlm = mlm
        if mlm:
            self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
            self.decoder = nn.Linear(d, size["vocab"])
            self.decoder.weight = self.embed.weight
        else:
            self.pooler = nn.Linear(d, d)

    def forward(self, input_ids, attention_mask, labels=None):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.norm(self.embed(input_ids) + self.positions(positions) + self.types.weight[0])
        x = self.encoder(x, src_key_padding_mask=~attention_mask.bool())
        if not self.mlm:
            return x, torch.tanh(self.pooler(x[:, 0]))
        logits = self.decoder(self.head(x))
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


class OnnxRuntimeModel(nn.Module):
    """A peer's ONNX graph (`exported_peer`) run by ONNX Runtime on CPU with every graph optimisation and torch's
    thread count; `int8`: ONNX Runtime's dynamic quantization of that graph."""

    def __init__(self, model, int8: bool = False):
        super().__init__()
        self.counted_parameters = parameters(model)
        self.folder, path = exported_peer(model)
        if int8:
            quantize_onnx(path, path.with_name("model_quantized.onnx"))
            path = path.with_name("model_quantized.onnx")
        self.session = onnx_session(path, threads=torch.get_num_threads())
        self.own_dtype = torch.float32  # the graph's own precision, whatever the run's dtype

    def forward(self, input_ids, attention_mask):
        return self.session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})


def exported_peer(model) -> tuple[tempfile.TemporaryDirectory, Path]:
    """`model` exported as users serve it: `torch.onnx.export` (the TorchScript exporter, opset 17, dynamic batch and
    sequence). The folder lives as long as the returned object."""
    folder = tempfile.TemporaryDirectory(prefix="onnx-peer-")
    path = Path(folder.name) / "model.onnx"
    example = fixed_batches(model.config.vocab_size, "cpu", 2, 8)[0]
    names = ["input_ids", "attention_mask"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signature = ServingSignature(model.eval(), ["last_hidden_state", "pooler_output"])
        torch.onnx.export(signature, example, path, dynamo=False, opset_version=17, input_names=names,
                          dynamic_axes={name: {0: "batch", 1: "sequence"} for name in names})
    return folder, path


class OpenVinoModel(nn.Module):
    """A peer's ONNX graph (`exported_peer`) compiled by OpenVINO for the CPU, in `precision` (None: OpenVINO's
    default for this CPU, bf16 where the CPU computes it), with torch's thread count."""

    def __init__(self, model, precision: str | None = None):
        super().__init__()
        self.counted_parameters = parameters(model)
        self.folder, path = exported_peer(model)
        self.request = openvino_compiled(path, precision).create_infer_request()
        self.own_dtype = torch.float32  # its inputs are ids; its precision is its own

    def forward(self, input_ids, attention_mask):
        return self.request.infer({"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})


def openvino_compiled(path: Path, precision: str | None = None):
    """An ONNX graph compiled by OpenVINO for the CPU with torch's thread count, in `precision` (None: its default)."""
    import openvino

    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads()}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    return openvino.Core().compile_model(str(path), "CPU", config)


def openvino_precisions() -> dict[str, str | None]:
    """The OpenVINO rows to run: its default precision on this CPU, and f32 where that differs, by the precision
    each runs in; none where the `openvino` package (the bench extra) is absent."""
    try:
        import openvino
    except ImportError:
        return {}
    default = openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    return {default: None, **({"f32": "f32"} if default != "f32" else {})}


def in_own_dtype(model, dtype):
    """Mark a contender that runs at `dtype` whatever the run's dtype (see make_runner)."""
    model.own_dtype = dtype
    return model


def ours_int8(size, max_len):
    model = ours(size, max_len).eval()
    quantized = quantize_int8(model)
    quantized.counted_parameters = parameters(model)
    return in_own_dtype(quantized, torch.float32)  # int8 weights, fp32 activations


def contenders(size, max_len, mlm, device="cpu", dtype=torch.float32):
    """name → model factory; the names are the table's rows. The CPU serving anchors keep their own precision
    (`own_dtype`) in a bf16 run, which then also times ours in fp32."""
    found = {
        "ours (sdpa)": lambda: ours(size, max_len, mlm),
        "BERT (sdpa)": lambda: bert(size, max_len, mlm),
        "BERT (eager)": lambda: bert(size, max_len, mlm, "eager"),
        "torch TransformerEncoder": lambda: TorchEncoder(size, max_len, mlm),
        "ModernBERT (sdpa)": lambda: modernbert(size, max_len, mlm),
    }
    if mlm:
        found["ours (sdpa, dense logits)"] = lambda: ours_dense(size, max_len)
    elif device == "cpu":  # the serving anchors: int8, and ONNX Runtime
        found["ours (int8)"] = lambda: ours_int8(size, max_len)
        found["ONNX Runtime fp32 (BERT)"] = lambda: OnnxRuntimeModel(bert(size, max_len))
        found["ONNX Runtime int8 (BERT)"] = lambda: OnnxRuntimeModel(bert(size, max_len), int8=True)
        for shown, hint in openvino_precisions().items():
            found[f"OpenVINO {shown} (BERT)"] = lambda hint=hint: OpenVinoModel(bert(size, max_len), hint)
        if dtype != torch.float32:
            found["ours (sdpa, fp32)"] = lambda: in_own_dtype(ours(size, max_len), torch.float32)
        if dtype == torch.bfloat16 and cpu_computes_bf16():  # what serving in bf16 uses: weights prepacked
            found["ours (bf16, to_bf16_where_native)"] = lambda: in_own_dtype(
                to_bf16_where_native(ours(size, max_len).eval()), torch.bfloat16)
    return found


def ours_dense(size, max_len):
    model = ours(size, max_len, mlm=True)
    model.config.sparse_prediction = False
    return model


def parameters(model) -> int:
    """Distinct parameters; an int8 or ONNX Runtime contender counts those of the model it was made from."""
    if hasattr(model, "counted_parameters"):
        return model.counted_parameters
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# ---------------------------------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------------------------------


def sst2_sentences(path: Path) -> list[str]:
    return [row["sentence"] for row in csv.DictReader(path.open())]


def conll_sentences(path: Path) -> list[str]:
    return [" ".join(json.loads(line)["tokens"]) for line in path.open()]


# The files the sentence-batch workload reads, and how: the dev sentences are timed, the train text trains the
# tokenizer that counts their tokens.
TIMED_SENTENCES = {"sst2/validation.csv": sst2_sentences, "conll2003/validation.jsonl": conll_sentences}
TOKENIZER_TEXT = {"sst2/train.csv": sst2_sentences, "conll2003/train.jsonl": conll_sentences}


def missing_sentence_file(data: Path) -> Path | None:
    """The first file the sentence-batch workload reads that `data` lacks, if any."""
    return next((data / name for name in (*TIMED_SENTENCES, *TOKENIZER_TEXT) if not (data / name).is_file()), None)


def sentence_lengths(tokenizer_vocab: int, data: Path) -> list[int]:
    """Token counts of the SST-2 and CoNLL-2003 dev sentences, tokenized by a WordPiece tokenizer trained on their
    training text (the Hub's tokenizers are out of reach here), with [CLS] and [SEP]."""
    from datasets import Dataset

    from transformer_encoder.training.tokenizer import train_tokenizer

    def read(files):
        return [sentence for name, reader in files.items() for sentence in reader(data / name)]

    corpus = Dataset.from_dict({"text": read(TOKENIZER_TEXT)})
    tokenizer = train_tokenizer(corpus, "text", "wordpiece", tokenizer_vocab, 512)
    return [len(ids) for ids in tokenizer(read(TIMED_SENTENCES), truncation=True, max_length=128)["input_ids"]]


def variable_batches(lengths, vocab, device, n_batches=16, batch_size=16, seed=0):
    rng = random.Random(seed)
    order = rng.sample(lengths, n_batches * batch_size)
    batches = []
    for i in range(n_batches):
        rows = order[i * batch_size : (i + 1) * batch_size]
        longest = max(rows)
        mask = torch.tensor([[1] * n + [0] * (longest - n) for n in rows], device=device)
        ids = torch.randint(5, vocab, mask.shape, device=device) * mask
        batches.append((ids, mask))
    return batches


def fixed_batches(vocab, device, batch, seq, n=1):
    return [(torch.randint(5, vocab, (batch, seq), device=device), torch.ones(batch, seq, dtype=torch.long, device=device))
            for _ in range(n)]


def flops_per_forward(size, batches, mlm) -> float:
    """Dense-equivalent model FLOPs of the useful work (real tokens): 2 per multiply-add in every linear map,
    and 4·d per (query, key) pair of real tokens for attention."""
    d, layers = size["hidden"], size["layers"]
    linear = layers * (4 * d * d + 2 * d * size["ffn"]) + (d * d + d * size["vocab"] if mlm else d * d)
    total = 0.0
    for _, mask in batches:
        lengths = mask.sum(-1).double()
        total += 2 * linear * lengths.sum().item() + 4 * d * layers * (lengths**2).sum().item()
    return total


# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def make_runner(name, model, workload, batches, device, dtype):
    """A function that runs the workload once over all batches."""
    model.to(device)
    if workload == "train":
        model.to(torch.float32).train()  # mixed precision: fp32 master weights, autocast compute
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        generator = torch.Generator(device="cpu").manual_seed(0)
        labelled = [torch.where(torch.rand(ids.shape, generator=generator).to(device) < 0.15, ids, -100) for ids, _ in batches]

        def run():
            for (ids, mask), labels in zip(batches, labelled):
                with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
                    out = model(ids, attention_mask=mask, labels=labels)
                loss = out if torch.is_tensor(out) else out.loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        return run

    model.to(getattr(model, "own_dtype", dtype)).eval()

    def run():
        with torch.inference_mode():
            for ids, mask in batches:
                model(ids, attention_mask=mask)

    return run


def measure_matmul(device, dtype) -> float:
    n = 8192 if device == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def time_alternating(runners: dict, rounds: int, device) -> dict[str, list[float]]:
    for run in runners.values():  # warm-up
        run()
        run()
    seconds = {name: [] for name in runners}
    names = list(runners)
    for round_ in range(rounds):
        # A contender can leave the CPU busy after it returns: ONNX Runtime's threads keep spinning, which cost the
        # contender run next ~15 % on 2 cores (benchmarks/results/order-effect-2026-11-28/). So each run starts after
        # a pause, and the order reverses every round, so that no contender always runs after the same one.
        for name in names if round_ % 2 == 0 else names[::-1]:
            run = runners[name]
            time.sleep(SETTLE_SECONDS)
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def peak_memory(factory, name, workload, batches, device, dtype) -> float | None:
    """Peak memory of one run of the workload beyond what the model (and optimizer state) hold before it.
    GPU: torch's peak allocated bytes. CPU: the process's peak resident size, in a fresh process per contender."""
    if device == "cuda":
        model = factory()
        run = make_runner(name, model, workload, batches, device, dtype)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return None


def cpu_peak_rss(args, size_name, workload, name) -> float:
    command = [sys.executable, __file__, "--probe", size_name, workload, name, "--seq", str(args.seq), "--batch",
               str(args.batch), "--data_dir", args.data]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def probe(args):
    size_name, workload, name = args.probe
    size = SIZES[size_name]
    mlm = workload == "train"
    if workload == "variable":
        batches = variable_batches(sentence_lengths(size["vocab"], Path(args.data)), size["vocab"], "cpu")
    else:
        batches = fixed_batches(size["vocab"], "cpu", args.batch, args.seq)
    factory = contenders(size, args.seq, mlm)[name.removesuffix(" + torch.compile")]
    model = factory()
    if name.endswith("torch.compile"):
        model = torch.compile(model)
    run = make_runner(name, model, workload, batches, "cpu", torch.float32)
    run()  # warm-up: compilation, first-use allocations, optimizer state
    baseline = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak resident size to the current one
    run()
    print((_status_kib("VmHWM") - baseline) / 1024)


def _status_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def benchmark_size(args, size_name, device, dtype, matmul_rate) -> list[dict]:
    size = SIZES[size_name]
    rows = []
    workloads = {  # made when asked for: the sentence batches train a tokenizer first
        "fixed": lambda: fixed_batches(size["vocab"], device, args.batch, args.seq, n=args.fixed_batches),
        "variable": lambda: variable_batches(sentence_lengths(size["vocab"], Path(args.data)), size["vocab"], device,
                                             batch_size=args.variable_batch_size),
        "train": lambda: fixed_batches(size["vocab"], device, args.batch, args.seq, n=1),
    }
    for workload, make_batches in workloads.items():
        if workload not in args.workloads:
            continue
        batches = make_batches()
        mlm = workload == "train"
        factories = contenders(size, args.seq, mlm, device, dtype)
        models = {name: factory() for name, factory in factories.items()}
        counts = {name: parameters(m) for name, m in models.items()}
        reference = counts["BERT (sdpa)"]
        for name, count in counts.items():  # the same model size, or the comparison is void
            assert abs(count - reference) / reference < 0.02, f"{name}: {count} parameters against BERT's {reference}"
        runners = {name: make_runner(name, m, workload, batches, device, dtype) for name, m in models.items()}
        if args.compile and workload != "train":
            compiled = torch.compile(models["ours (sdpa)"])
            runners["ours (sdpa) + torch.compile"] = make_runner("compiled", compiled, workload, batches, device, dtype)
            counts["ours (sdpa) + torch.compile"] = counts["ours (sdpa)"]
        seconds = time_alternating(runners, args.rounds if size_name == "tiny" else args.rounds_base, device)
        real_tokens = sum(mask.sum().item() for _, mask in batches)
        flops = flops_per_forward(size, batches, mlm) * (3 if mlm else 1)
        for name, times in seconds.items():
            rate = [real_tokens / t for t in times]
            row = {
                "size": size_name, "workload": workload, "contender": name, "parameters": counts[name],
                "tokens_per_s": statistics.median(rate), "min": min(rate), "max": max(rate),
                "mfu": flops / statistics.median(times) / matmul_rate,
                "padding_share": 1 - real_tokens / sum(mask.numel() for _, mask in batches),
                "seconds": times,  # per round, in the order of every other row's: ratios pair them round by round
            }
            if args.memory:
                row["peak_mib"] = (
                    peak_memory(factories.get(name, factories["ours (sdpa)"]), name, workload, batches, device, dtype)
                    if device == "cuda" else cpu_peak_rss(args, size_name, workload, name)
                )
            rows.append(row)
            print(f"{size_name:5} {workload:9} {name:32} {row['tokens_per_s']:10.0f} tok/s", flush=True)
        if workload == "variable":
            print(f"{size_name:5} {workload:9} padding-free ceiling (padded positions / real tokens): "
                  f"{padding_free_ceiling(rows[-1]):.2f}", flush=True)
        del models, runners
    return rows


def find_row(rows, size, workload, contender) -> dict | None:
    return next((r for r in rows if (r["size"], r["workload"], r["contender"]) == (size, workload, contender)), None)


def speedup(row, peer) -> tuple[float, str]:
    """How many times faster `row` ran than `peer`: the median over rounds of the ratio within each round, where the
    two ran minutes apart at most, so that the machine's slow stretches (on shared hosts, minutes long) fall on
    both. With it, in how many rounds `row` was the faster. Runs saved before rounds were kept: medians' ratio."""
    if "seconds" not in row or "seconds" not in peer:
        return row["tokens_per_s"] / peer["tokens_per_s"], ""
    ratios = [theirs / ours for ours, theirs in zip(row["seconds"], peer["seconds"])]
    return statistics.median(ratios), f"{sum(r > 1 for r in ratios)}/{len(ratios)}"


def allocator() -> str:
    """The memory allocator settings the run had: on CPU they decide whether torch's large activations are handed
    back to the OS and faulted in again at every forward (glibc's defaults do; ONNX Runtime keeps its own arena)."""
    settings = [f"{name}={os.environ[name]}" for name in ("LD_PRELOAD", "GLIBC_TUNABLES") if os.environ.get(name)]
    return ", ".join(settings) or "default malloc"


def write_report(rows, args, device, dtype, matmul_rate, stem: Path, machine=None, torch_version=torch.__version__):
    """stem.md (the table), stem.json (the numbers, which --report_from redraws) and stem.png (the chart)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    machine = machine or f"{machine_name(device)}; {allocator()}"
    titles = {"fixed": f"inference, {args.batch}×{args.seq}",
              "variable": f"inference, real sentence batches ({args.variable_batch_size} per batch)",
              "train": f"MLM training step, {args.batch}×{args.seq}"}
    lines = [
        f"Machine: {machine}; torch {torch_version}; {dtype}; matmul rate {matmul_rate / 1e9:.0f} GFLOP/s "
        f"(measured). Medians over rounds, contenders alternated; ours / this = how many times faster ours (sdpa) ran "
        f"than that row, the median of the two's ratio within each round, and in how many rounds ours was the faster.",
        "",
        "| size | workload | contender | params | real tokens/s (min–max) | ours / this (rounds won) | MFU | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours = find_row(rows, row["size"], row["workload"], "ours (sdpa)")
        ratio, won = speedup(ours, row)
        peak = row.get("peak_mib")
        lines.append(
            f"| {row['size']} | {titles[row['workload']]} | {row['contender']} | {row['parameters'] / 1e6:.1f} M | "
            f"{row['tokens_per_s']:,.0f} ({row['min']:,.0f}–{row['max']:,.0f}) | {ratio:.2f}"
            f"{f' ({won})' if won and row is not ours else ''} | {row['mfu']:.1%} | "
            f"{'' if peak is None else f'{peak:,.0f}'} |"
        )
    lines += serving_summary(rows, titles, dtype)
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    saved = {"machine": machine, "torch": torch_version, "dtype": str(dtype), "matmul_rate": matmul_rate,
             "batch": args.batch, "seq": args.seq, "variable_batch_size": args.variable_batch_size, "rows": rows}
    stem.with_suffix(".json").write_text(json.dumps(saved, indent=2))
    plot(rows, titles, stem.with_suffix(".png"), machine)
    print("\n".join(lines))


def dtype_label(dtype) -> str:
    """fp32, bf16 or fp16 for a torch.dtype, or for its name as the results JSON keeps it ("torch.bfloat16")."""
    name = str(dtype).removeprefix("torch.")
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name)


def padding_free_ceiling(row) -> float:
    """Padded positions ÷ real tokens: the most a padding-free model can gain over a padded peer of the same work."""
    return 1 / (1 - row["padding_share"])


def serving_summary(rows, titles, dtype) -> list[str]:
    """The ratios the serving goals name, for every size and inference workload measured; our float rows are
    named by the run's dtype."""
    ours_float = f"ours {dtype_label(dtype)}"

    pairs = [("ours (sdpa)", "BERT (sdpa)"), ("ours (sdpa)", "ONNX Runtime fp32 (BERT)"),
             ("ours (int8)", "ONNX Runtime int8 (BERT)"), ("ours (int8)", "ours (sdpa)")]
    lines = ["", f"| size | workload | padding-free ceiling | {ours_float} / BERT sdpa (share of the ceiling) | "
             f"{ours_float} / ORT fp32 | ours int8 / ORT int8 | ours int8 / {ours_float} |",
             "|---|---|---|---|---|---|---|"]
    for size, workload in dict.fromkeys((r["size"], r["workload"]) for r in rows if r["workload"] != "train"):
        first = next(r for r in rows if (r["size"], r["workload"]) == (size, workload))
        ceiling = padding_free_ceiling(first)
        cells = []
        for ours_name, peer in pairs:
            a, b = find_row(rows, size, workload, ours_name), find_row(rows, size, workload, peer)
            if a is None or b is None:
                cells.append("")
                continue
            ratio, won = speedup(a, b)
            share = f" ({ratio / ceiling:.0%})" if peer == "BERT (sdpa)" else ""
            cells.append(f"{ratio:.2f}{share}{f', {won} rounds' if won else ''}")
        lines.append(f"| {size} | {titles[workload]} | {ceiling:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Padding-free ceiling: padded positions ÷ real tokens, the speed-up over a padded peer (BERT) that "
              "doing no work on padding allows; the share is ours / BERT sdpa divided by it. Each ratio is the median "
              "over rounds of the two contenders' ratio within the round, with the rounds the first one won."]
    return lines


def plot(rows, titles, path, machine):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in rows}, key=list(SIZES).index)
    workloads = [w for w in titles if any(r["workload"] == w for r in rows)]
    fig, axes = plt.subplots(len(sizes), len(workloads), figsize=(5.2 * len(workloads), 3.2 * len(sizes)), squeeze=False)
    for i, size in enumerate(sizes):
        for j, workload in enumerate(workloads):
            ax = axes[i][j]
            chosen = [r for r in rows if r["size"] == size and r["workload"] == workload]
            names = [r["contender"] for r in chosen]
            values = [r["tokens_per_s"] for r in chosen]
            errors = [[r["tokens_per_s"] - r["min"] for r in chosen], [r["max"] - r["tokens_per_s"] for r in chosen]]
            colors = ["tab:red" if n.startswith("ours") else "tab:gray" for n in names]
            ax.barh(names, values, xerr=errors, color=colors)
            ax.invert_yaxis()
            ax.set_title(f"{size}: {titles[workload]}", fontsize=9)
            ax.set_xlabel("real tokens / s (median, min–max)", fontsize=8)
            ax.tick_params(labelsize=8)
    fig.suptitle(machine, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine_name(device) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), platform.machine()) if cpuinfo.exists() else platform.machine()
    return f"{model}, {torch.get_num_threads()} threads"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default)")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=SIZES)
    parser.add_argument("--workloads", nargs="+", default=["fixed", "variable", "train"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--fixed_batches", type=int, default=2)
    parser.add_argument("--variable_batch_size", type=int, default=16, help="sentences per real-sentence batch")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rounds_base", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row for our model")
    parser.add_argument("--memory", action="store_true", help="measure peak memory (CPU: one process each)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--data_dir", "--data", dest="data", default=str(DATA), help="folder holding sst2/ and conll2003/")
    parser.add_argument("--report_from", help="redraw the table and chart of an earlier run's results-*.json")
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return probe(args)
    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        args.batch, args.seq = saved.get("batch", args.batch), saved.get("seq", args.seq)
        args.variable_batch_size = saved.get("variable_batch_size", 16)
        device = "cuda" if "cuda" in Path(args.report_from).name else "cpu"
        return write_report(saved["rows"], args, device, saved["dtype"], saved["matmul_rate"],
                            Path(args.report_from).with_suffix(""), saved["machine"], saved["torch"])
    missing = missing_sentence_file(Path(args.data)) if "variable" in args.workloads else None
    if missing is not None:
        sys.exit(f"benchmark.py: the sentence-batch workload reads {missing}, which is missing (set --data_dir, or leave "
                 "out `variable` from --workloads).")
    device = args.device
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    torch.manual_seed(0)
    matmul_rate = measure_matmul(device, dtype)
    rows = []
    for size_name in args.sizes:
        rows += benchmark_size(args, size_name, device, dtype, matmul_rate)
    write_report(rows, args, device, dtype, matmul_rate, Path(args.out) / f"results-{device}")


if __name__ == "__main__":
    print(f"transformer_encoder {transformer_encoder.__version__}", file=sys.stderr)
    main()

"""Serve a checkpoint outside PyTorch: export it to ONNX (for ONNX Runtime) or to a torch.export ExportedProgram.

    python -m transformer_encoder.export MODEL_DIR OUT_DIR                       # OUT_DIR/model.onnx
    python -m transformer_encoder.export MODEL_DIR OUT_DIR --quantize int8       # + model_quantized.onnx
    python -m transformer_encoder.export MODEL_DIR OUT_DIR --format exported-program   # OUT_DIR/model.pt2

MODEL_DIR is any checkpoint of this package with its tokenizer (every head: the class is read from its config).
OUT_DIR receives the graph, config.json and the tokenizer: what a serving stack needs. The graph has dynamic batch
and sequence axes; its inputs are `input_ids`, `attention_mask` (and `token_type_ids` where the model and its
tokenizer have segments), its outputs the model output's fields by name (`last_hidden_state`, `logits`, …). It takes the padded
path: no data-dependent shapes, so outputs at padding positions are computed too (and mean nothing).

The command checks its own output before writing anything: it runs the exported graph on a padded batch of another
shape than the one traced (more rows, a longer sequence) and compares it with the PyTorch model at the real
positions. fp32 graphs must agree within `TOLERANCE`; the int8 graph (ONNX Runtime's dynamic quantization of the
matrix products) to a relative error of at most `INT8_TOLERANCE` (‖int8 − PyTorch‖ / ‖PyTorch‖ over the real
positions, each output). If they differ, it fails and OUT_DIR is not written.
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from .folders import staged_folder
from .modeling import HEADS

FORMATS = {"onnx": "model.onnx", "exported-program": "model.pt2"}
QUANTIZED_ONNX = "model_quantized.onnx"  # the name optimum's ORTQuantizer gives it
TOLERANCE = dict(atol=1e-4, rtol=1e-4)  # fp32 graph vs eager PyTorch; measured differences are ~1e-6
# int8 graph: relative error over the real positions. On the check batch (random ids), all-MiniLM-L6-v2's hidden
# states have 0.17 with one weight scale per output channel, 0.31 with one per matrix (whose embeddings lose their
# answers: quantization.py); a graph of another model, about 1.4.
INT8_TOLERANCE = 0.25


class ExportError(RuntimeError):
    """The checkpoint cannot be exported, or the exported graph does not reproduce it."""


# ---------------------------------------------------------------------------------------------------------------------
# The graph's signature
# ---------------------------------------------------------------------------------------------------------------------


class ServingSignature(torch.nn.Module):
    """The model with plain tensors in and out, in a fixed order: what a graph format can hold."""

    def __init__(self, model, output_names: list[str]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        outputs = self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(outputs[name] for name in self.output_names)


def input_names(config, tokenizer) -> list[str]:
    """The graph's inputs: what the tokenizer gives and the model reads (segments only where both have them)."""
    segments = config.type_vocab_size > 0 and "token_type_ids" in tokenizer.model_input_names
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if segments else [])


def padded_inputs(config, lengths, seed: int) -> dict[str, torch.Tensor]:
    """Random ids right-padded to the longest of `lengths`, the mask, and two segments where the model has them."""
    generator = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    mask = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()
    inputs = {"input_ids": torch.randint(0, config.vocab_size, mask.shape, generator=generator) * mask,
              "attention_mask": mask}
    if config.type_vocab_size > 0:
        inputs["token_type_ids"] = (torch.arange(seq)[None, :] >= seq // 2).long().expand_as(mask) * min(
            1, config.type_vocab_size - 1)
    return inputs


def traced_and_check_inputs(config):
    """The batch the graph is traced with, and a batch of another shape (more rows, longer) it is checked on."""
    longest = config.learned_positions if config.position_embedding_type == "learned" else 10**6
    traced = padded_inputs(config, [min(16, longest), min(9, longest)], seed=0)
    checked = padded_inputs(config, [min(13, longest), min(24, longest), 1, min(5, longest)], seed=1)
    return traced, checked


def dynamic_shapes(config, names):
    batch = torch.export.Dim("batch")
    longest = config.learned_positions if config.position_embedding_type == "learned" else None
    sequence = torch.export.Dim("sequence", max=longest) if longest else torch.export.Dim("sequence")
    return {name: {0: batch, 1: sequence} for name in names}


# ---------------------------------------------------------------------------------------------------------------------
# Export, check, write
# ---------------------------------------------------------------------------------------------------------------------


def load_checkpoint(model_dir):
    """The checkpoint's model (its own head class, fp32, inference mode) and tokenizer."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a checkpoint folder: it has no config.json.")
    config = AutoConfig.from_pretrained(model_dir)
    by_name = {cls.__name__: cls for cls in HEADS.values()}
    architecture = (getattr(config, "architectures", None) or ["TransformerEncoderModel"])[0]
    if architecture not in by_name:
        raise ExportError(f"{model_dir} holds a {architecture}, not a model of this package.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ExportError(
            f"{model_dir} has no tokenizer ({error}); the export writes it beside the graph: "
            "save it there first (tokenizer.save_pretrained(MODEL_DIR))."
        ) from error
    model = by_name[architecture].from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval(), tokenizer


def _require_onnx():
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(f'ONNX export needs onnx, onnxscript and onnxruntime ({error}): '
                          'pip install "transformer-encoder[onnx]".') from error


def export_onnx(signature, inputs, shapes, path: Path):
    program = torch.onnx.export(signature, (), kwargs=inputs, f=None, dynamo=True, dynamic_shapes=shapes, verbose=False,
                                input_names=list(inputs), output_names=signature.output_names)
    program.save(str(path))


def export_program(signature, inputs, shapes, path: Path):
    program = torch.export.export(signature, (), kwargs=inputs, dynamic_shapes=shapes)
    torch.export.save(program, str(path))


def quantize_onnx(source: Path, target: Path):
    """int8 weights for every matrix product, one scale per output channel, activations quantized on the fly
    (ONNX Runtime's dynamic scheme). One scale per matrix lets a real checkpoint's largest row decide the
    resolution of all the others (`quantization.py` has the measurement)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)


def onnx_session(path, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation on (fusions of attention, GELU, layer norm)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, inputs) -> list[torch.Tensor]:
    outputs = onnx_session(path).run(None, {k: v.numpy() for k, v in inputs.items()})
    return [torch.from_numpy(o) for o in outputs]


def run_program(path: Path, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(torch.export.load(str(path)).module()(**inputs))


def real_positions(output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The output where it means something: per-token outputs at real tokens, per-sequence outputs whole."""
    return output[mask.bool()] if output.shape[:2] == mask.shape else output


def max_difference(graph_outputs, reference, mask) -> float:
    return max((real_positions(g, mask) - real_positions(r, mask)).abs().max().item()
               for g, r in zip(graph_outputs, reference))


def relative_error(graph_outputs, reference, mask) -> float:
    """The largest, over the outputs, of ‖graph − PyTorch‖ / ‖PyTorch‖ at real positions."""
    return max(((real_positions(g, mask) - real_positions(r, mask)).norm() / real_positions(r, mask).norm()).item()
               for g, r in zip(graph_outputs, reference))


def check(name: str, graph_outputs, reference, mask, int8: bool = False) -> float:
    """The largest difference from PyTorch at real positions (int8: the relative error); ExportError beyond the
    tolerance."""
    shapes = [tuple(g.shape) for g in graph_outputs], [tuple(r.shape) for r in reference]
    if shapes[0] != shapes[1]:
        raise ExportError(f"{name} returns shapes {shapes[0]}, PyTorch {shapes[1]}.")
    if int8:
        difference, allowed, what = relative_error(graph_outputs, reference, mask), INT8_TOLERANCE, "a relative error of "
    else:
        difference = max_difference(graph_outputs, reference, mask)
        allowed = TOLERANCE["atol"] + TOLERANCE["rtol"] * max(real_positions(r, mask).abs().max().item()
                                                               for r in reference)
        what = ""
    if not difference <= allowed:  # also catches NaN
        raise ExportError(f"{name} differs from the PyTorch model by {what}{difference:.3g} at real positions "
                          f"(allowed {allowed:.3g}): the export is wrong; nothing was written.")
    return difference


def export(model_dir, out_dir, format: str = "onnx", quantize: str | None = None) -> dict[str, float]:
    """Export the checkpoint `model_dir` into `out_dir` (new or empty), check it, and return the largest difference
    from PyTorch at real positions of each graph written, by file name."""
    if format not in FORMATS:
        raise ExportError(f"Unknown format {format!r}: choose one of {', '.join(FORMATS)}.")
    if quantize not in (None, "int8"):
        raise ExportError(f"Unknown quantization {quantize!r}: only int8 is available.")
    if quantize and format != "onnx":
        raise ExportError("--quantize int8 applies to ONNX graphs; for PyTorch use "
                          "transformer_encoder.quantization.quantize_int8.")
    if format == "onnx":
        _require_onnx()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} already holds files: choose an empty or new folder.")
    model, tokenizer = load_checkpoint(model_dir)
    config = model.config
    traced, checked = traced_and_check_inputs(config)
    with torch.no_grad():
        output_names = list(model(**traced).keys())
    signature = ServingSignature(model, output_names).eval()
    traced = {k: traced[k] for k in input_names(config, tokenizer)}
    checked = {k: checked[k] for k in input_names(config, tokenizer)}
    shapes = dynamic_shapes(config, list(traced))
    with torch.no_grad():
        reference = [model(**checked)[name] for name in output_names]

    with staged_folder(out_dir) as staging:
        graph = staging / FORMATS[format]
        if format == "onnx":
            export_onnx(signature, traced, shapes, graph)
            graph_outputs = run_onnx(graph, checked)
        else:
            export_program(signature, traced, shapes, graph)
            graph_outputs = run_program(graph, checked)
        mask = checked["attention_mask"]
        differences = {graph.name: check(graph.name, graph_outputs, reference, mask)}
        if quantize:
            quantize_onnx(graph, staging / QUANTIZED_ONNX)
            differences[QUANTIZED_ONNX] = check(QUANTIZED_ONNX, run_onnx(staging / QUANTIZED_ONNX, checked),
                                                reference, mask, int8=True)
        config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return differences


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m transformer_encoder.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a checkpoint folder of this package, with its tokenizer")
    parser.add_argument("out_dir", help="the folder to write (new or empty)")
    parser.add_argument("--format", choices=list(FORMATS), default="onnx")
    parser.add_argument("--quantize", choices=["int8"], help="also write model_quantized.onnx, int8 weights")
    args = parser.parse_args(argv)
    try:
        differences = export(args.model_dir, args.out_dir, args.format, args.quantize)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for name, difference in differences.items():
        measure = "relative error" if name == QUANTIZED_ONNX else "max |difference|"
        print(f"wrote {Path(args.out_dir) / name}: {measure} from PyTorch at real positions {difference:.2e}")


if __name__ == "__main__":
    main()

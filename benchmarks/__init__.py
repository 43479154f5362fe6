"""Measurements against the peers, installed as `transformer_encoder.benchmarks` and run as
`transformer-encoder benchmark | downstream | ...` (or `python -m transformer_encoder.benchmarks.<module>`).

Each module is one measurement: `benchmark` (speed and memory against BERT, ModernBERT, ONNX Runtime, OpenVINO),
`downstream` (a checkpoint fine-tuned on SST-2, STS-B and CoNLL-2003), `recipes` (pretraining recipes at equal wall
time), `sst2_precision` (SST-2 accuracy per serving precision), `int8_minilm` (int8 and bf16 on a real
checkpoint), `students` (a teacher and its distilled students: score, size, speed). `results/` holds what they
wrote, with the commands that wrote it.
"""

from pathlib import Path

# The public datasets beside the checkout (../shared/data); every module takes another folder as an option.
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"

#!/usr/bin/env bash
# The tests that consult the CPU's bf16 detection (pretraining's default precision, bf16 serving), run with the
# detection flipped: fp32 on a CPU that computes bf16, bf16 (emulated) on one that does not. With the suite's own
# run, this covers both kinds of CPU on either kind. Arguments go to pytest instead of the list:
# `bash tests/flipped_bf16.sh tests` runs the whole suite flipped. The list: the files in which
# TRANSFORMER_ENCODER_CPU_BF16=probe (an invalid value, refused wherever the detection is read) made tests fail;
# test_distill: the teacher labels its transfer set in bf16 where the CPU computes it.
set -euo pipefail
cd "$(dirname "$0")/.."
flipped=$(python -c "from transformer_encoder.cpu import detects_native_bf16; print(0 if detects_native_bf16() else 1)")
echo "tests with TRANSFORMER_ENCODER_CPU_BF16=$flipped (the detection flipped)"
export TRANSFORMER_ENCODER_CPU_BF16=$flipped
if [ $# -gt 0 ]; then
    exec python -m pytest "$@"
fi
exec python -m pytest tests/test_training.py tests/test_rtd.py tests/test_recipes.py tests/test_downstream.py \
    tests/test_quantization.py tests/test_distill.py tests/test_benchmark.py

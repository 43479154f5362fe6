# Issue 11 on a lent GPU machine: native-bf16 CPU serving (if its CPU has AVX512-BF16/AMX), then the post-merge GPU bench.
cd "$(dirname "$0")/.." || exit 1
grep -m1 "model name" /proc/cpuinfo; nproc; grep -o -w 'avx512_bf16\|amx_bf16\|amx_tile\|avx512f' /proc/cpuinfo | sort | uniq -c
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
gunzip -kf .whl/data/sst2/train.csv.gz .whl/data/conll2003/train.jsonl.gz
python3 -c "import torch, onnxruntime; from transformer_encoder.quantization import cpu_computes_bf16; print(torch.__version__, onnxruntime.__version__, 'bf16 native:', cpu_computes_bf16())"
S=$SECONDS
# A fine-tuned SST-2 checkpoint, trained on the GPU: the main job's pretraining (400 steps), then 1,500 steps of SST-2.
timeout 80 python3 -m transformer_encoder.training mlm --output_dir /tmp/runs/mlm --max_train_steps 400 2>&1 | grep -v "Map\|training:" | tail -2
timeout 100 python3 -m transformer_encoder.training sequence-classification --model_name_or_path /tmp/runs/mlm --train_file .whl/data/sst2/train.csv --validation_file .whl/data/sst2/validation.csv --output_dir /tmp/runs/sst2 --max_seq_length 64 --per_device_train_batch_size 32 --learning_rate 1e-4 --num_warmup_steps 100 --max_train_steps 1500 2>&1 | grep -v "Map\|training:" | tail -2
echo "checkpoint $((SECONDS - S)) s"; S=$SECONDS
# CPU serving on two cores, as this project's machine has: accuracy and speed at each precision, then the benchmark.
CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 timeout 120 taskset -c 0,1 python3 benchmarks/sst2_precision.py /tmp/runs/sst2 --data .whl/data/sst2/validation.csv --rounds 3 --out "$OUT/sst2-precision" 2>&1 | grep -v Warning | tail -9
echo "precision $((SECONDS - S)) s"; S=$SECONDS
CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 timeout 200 taskset -c 0,1 python3 benchmarks/benchmark.py --device cpu --dtype bfloat16 --sizes tiny base --workloads variable --rounds 3 --rounds_base 2 --data .whl/data --out "$OUT/cpu-bf16" 2>&1 | grep -v Warning | tail -25
echo "cpu bench $((SECONDS - S)) s"; S=$SECONDS
timeout 150 python3 benchmarks/benchmark.py --device cuda --sizes base --seq 512 --workloads fixed variable train --rounds_base 3 --data .whl/data --out "$OUT/cuda" 2>&1 | grep -v Warning | tail -14
echo "gpu bench $((SECONDS - S)) s"

#!/bin/bash
# usage: ft.sh CORE NAME PRETRAINED [extra options...]
core=$1; name=$2; pre=$3; shift 3
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
cd /work/main && . .venv/bin/activate
s=$(date +%s)
taskset -c $core python -m transformer_encoder.training sequence-classification --model_name_or_path $pre --train_file ../shared/data/sst2/train.csv --validation_file ../shared/data/sst2/validation.csv --output_dir runs/g4/$name --overwrite_output_dir --max_seq_length 64 --per_device_train_batch_size 32 --seed 42 --logging_steps 50 --eval_steps 500 "$@" > runs/g4/$name.log 2>&1
echo "$name $(( $(date +%s) - s ))s $(grep accuracy runs/g4/$name/metrics.jsonl | tr '\n' ' ')" >> runs/g4/results.txt

#!/bin/bash
# usage: scratch.sh CORE NAME [options...]: SST-2 from random weights (goal-pre's tokenizer), one thread on CORE
core=$1; name=$2; shift 2
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
cd /work/main && . .venv/bin/activate
s=$(date +%s)
taskset -c $core python -m transformer_encoder.training sequence-classification --tokenizer_name runs/goal-pre --train_file ../shared/data/sst2/train.csv --validation_file ../shared/data/sst2/validation.csv --output_dir runs/g5/$name --overwrite_output_dir --max_seq_length 64 --seed 42 --logging_steps 50 --hidden_act geglu --position_embedding_type rotary --norm_first true "$@" > runs/g5/$name.log 2>&1
echo "$name $(( $(date +%s) - s ))s $* :: $(grep accuracy runs/g5/$name/metrics.jsonl | tr '\n' ' ')" >> runs/g5/results.txt

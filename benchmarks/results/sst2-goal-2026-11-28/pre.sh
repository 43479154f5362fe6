#!/bin/bash
# usage: pre.sh CORE NAME [extra options...]: modern-recipe pretraining, one thread on CORE, then a 300-step bs128 SST-2 fine-tune
core=$1; name=$2; shift 2
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
cd /work/main && . .venv/bin/activate
s=$(date +%s)
taskset -c $core python -m transformer_encoder.training recipes/modern.yaml --train_file runs/recipes/pretraining.txt --validation_file ../shared/data/wikitext-2/valid.txt --max_eval_samples 256 --output_dir runs/g4/$name --overwrite_output_dir --max_train_steps 330 --num_warmup_steps 33 --logging_steps 20 "$@" > runs/g4/$name.log 2>&1
echo "$name pretrain $(( $(date +%s) - s ))s $(cat runs/g4/$name/all_results.json | tr -d '\n ')" >> runs/g4/results.txt
runs/g4/ft.sh $core $name-ft runs/g4/$name --per_device_train_batch_size 128 --max_train_steps 300 --learning_rate 3e-4 --num_warmup_steps 30 --eval_steps 100

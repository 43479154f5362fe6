#!/bin/bash
# The main job cut to 300 steps, alternating two checkouts with their own virtualenvs: before = d44fde2 (the first
# parent of the one-gather merge a44cb93) in /work/wt10, after = main at b8b8429 in /work/main. Run on a quiet machine.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
for round in 1 2; do
  for side in before after; do
    dir=/work/wt10; [ $side = after ] && dir=/work/main
    cd $dir && rm -rf /tmp/ab-$side
    s=$(date +%s.%N)
    $dir/.venv/bin/python -m transformer_encoder.training mlm --output_dir /tmp/ab-$side --max_train_steps 300 > /tmp/ab-$side.log 2>&1
    e=$(date +%s.%N)
    echo "$side round $round: $(python3 -c "print(round($e - $s, 1))") s, load $(cut -d' ' -f1 /proc/loadavg), $(grep -o '"train_runtime_s": [0-9.]*' /tmp/ab-$side/all_results.json), $(sha256sum /tmp/ab-$side/model.safetensors | cut -c1-12)" >> /work/main/runs/g4/ab.txt
  done
done

#!/usr/bin/env bash
# The demo model shipped inside pengi, from nothing, on a CPU: corpus, LM, Pengi, proof.
#   bash recipes/train_demo_model.sh [DATA_DIR] [RUN_DIR]
set -euo pipefail
data=${1:-data/scenes}
run=${2:-runs/demo}
python recipes/make_scene_corpus.py --out "$data" --train 8000 --validation 200 --test 500 --questions-per-scene 6
start=$(date +%s)
python recipes/pretrain_lm.py --manifests "$data/train.jsonl" --out "$run/lm" --vocab-size 1000 --n-embd 128 \
    --n-layer 4 --n-head 4 --steps 800 --batch-size 64
python recipes/train_pengi.py --config recipes/configs/pengi-demo.yaml --set "output_dir=$run/pengi" \
    "model.tokenizer=$run/lm" "model.lm_from=$run/lm" "data.train=[{manifest: $data/train.jsonl}]" \
    "data.validation=$data/validation.jsonl"
echo "training took $(( $(date +%s) - start )) s"
python recipes/evaluate_demo_model.py --model "$run/pengi/final" --test "$data/test.jsonl" \
    --train "$data/train.jsonl" --out "$run/report.json"

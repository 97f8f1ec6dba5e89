#!/usr/bin/env bash
# The demo model, from nothing: corpus, LM (reading a context), CLAP (the audio encoder), Pengi, proof.
# Training takes about 90 minutes on 2 CPU cores (docs/demo-model.md, eighth attempt).
#   bash pengi_recipes/train_demo_model.sh [DATA_DIR] [RUN_DIR]
set -euo pipefail
data=${1:-data/scenes}
run=${2:-runs/demo}
python -m pengi_recipes.make_scene_corpus --out "$data" --train 8000 --validation 200 --test 500 --questions-per-scene 6
start=$(date +%s)
python -m pengi_recipes.pretrain_lm --manifests "$data/train.jsonl" --validation "$data/validation.jsonl" --out "$run/lm" \
    --architecture llama --vocab-size 1000 --n-embd 128 --n-layer 4 --n-head 4 --steps 12000 --batch-size 32 --lr 1e-3 \
    --context-slots 32 --text-slots 8 --prompt-length 16 --loss all
data_args=("data.train=[{manifest: $data/train.jsonl}]" "data.validation=$data/validation.jsonl")
python -m pengi_recipes.train_clap --config clap/demo --set "output_dir=$run/clap" \
    "model.tokenizer=$run/lm" "${data_args[@]}"
python -m pengi_recipes.train_pengi --config pengi/demo --set "output_dir=$run/pengi" \
    "model.tokenizer=$run/lm" "model.lm_from=$run/lm" "model.clap_from=$run/clap/final" "${data_args[@]}"
echo "training took $(( $(date +%s) - start )) s"
python -m pengi_recipes.evaluate_demo_model --model "$run/pengi/final" --test "$data/test.jsonl" \
    --train "$data/train.jsonl" --out "$run/report.json" --context-bound

#!/usr/bin/env bash
# Every GPU measurement that docs/perf.md is missing, in one run of under 10 minutes (the parts' limits add up to
# 560 s) on one H100 or H200, written to one log. From the repository root, after perf/gpu_wheels.sh has filled
# .whl/ (on a machine with PyPI; the wheels are installed here when .whl/ is there). Each part is a module of the
# perf package, run as `python -m perf.<name>` ($PYTHON, default python3):
#
#   bash perf/gpu_session.sh [LOG_DIR]          # LOG_DIR: default $OUT if set, else ./gpu-session
#   SMOKE=1 LIMIT_SCALE=10 bash perf/gpu_session.sh /tmp/smoke   # the same parts, tiny, on the CPU
#
# On a lent GPU machine that runs one command in a copy of the working tree: carry .whl/ (ignored by git) and run
# `bash perf/gpu_session.sh "$OUT"` with a 600 s limit; the log comes back as $OUT/gpu_session.log.
#
# Each part has its own time limit and prints its figures as it goes, so a part that runs out of time still
# leaves what it measured; a failing part does not stop the others. In order (limit in seconds):
#   1. training levers one at a time, eager (no compilation), batch 32 and 256        110  perf.train_throughput
#   2. bf16 and fp16 vs fp32 greedy answers of the shipped (trained) model, batched     60  perf.dtype_agreement
#      vs alone
#   3. pengi caption's engine on real files vs the same clips in memory, bf16, batch 64 100  perf.caption_files
#   4. the recipe on files vs its in-memory step, frozen-bf16 + sdpa + fused, batch 128 110  perf.recipe_throughput
#   5. the compiled levers (all, cuda-graphs, compile) at batch 256: compilation is     180  perf.train_throughput
#      slow
set -uo pipefail
LOG_DIR=${1:-${OUT:-gpu-session}}
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/gpu_session.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TORCHINDUCTOR_CACHE_DIR=/tmp/pengi-inductor
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD"
if [ -d .whl ] && [ "${SMOKE:-0}" != 1 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 && export PYTHONPATH="/tmp/site:$PWD"
fi
SESSION_START=$SECONDS

part() {  # part NAME LIMIT_S COMMAND...
  local name=$1 limit=$(($2 * ${LIMIT_SCALE:-1}))
  shift 2
  echo "=== $name: $* (limit ${limit} s, at $((SECONDS - SESSION_START)) s)" | tee -a "$LOG"
  local start=$SECONDS
  timeout --kill-after=15 "$limit" "$@" 2>&1 | grep -v "Loading weights" | tee -a "$LOG"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$LOG"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  nproc
  "$PY" -c "import sys, torch, transformers, accelerate, datasets, soundfile, pengi; print(sys.version.split()[0], \
'torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, \
'datasets', datasets.__version__, 'soundfile', soundfile.__version__, 'pengi', pengi.__file__)"
} 2>&1 | tee -a "$LOG"

if [ "${SMOKE:-0}" = 1 ]; then  # the same parts, tiny and on the CPU: checks this script, measures nothing
  DEV=(--device cpu --threads 1) TRAIN=(--shape pengi-tiny --batch-size 2 4 --steps 1) CLIPS=(--clips 4 --alone 2)
  CAPTION=(--model default --clips 6 --batch-size 2 --decoders threads:2 processes:2)
  RECIPE=(--batch-size 2 --steps 2 --log-every 1 --skip 1 --clips 2 --workers 1 --memory-steps 1)
  COMPILED=(--shape pengi-tiny --batch-size 2 --steps 1 --levers fused-adamw)
else
  DEV=(--device cuda) TRAIN=(--batch-size 32 256 --steps 8) CLIPS=(--clips 600 --alone 200 --batch-size 64)
  CAPTION=(--dtype bfloat16 --clips 384 --batch-size 64 --decoders threads:2 threads:8 processes:8 processes:15)
  RECIPE=(--batch-size 128 --steps 120 --log-every 10 --skip 3 --clips 256 --workers 14 --prefetch 4 --persistent
          --memory-steps 8)
  COMPILED=(--batch-size 256 --steps 8 --levers all cuda-graphs compile)
fi

part levers-eager 110 "$PY" -m perf.train_throughput "${DEV[@]}" "${TRAIN[@]}" \
  --levers frozen-bf16 sdpa fused-adamw eager-all
part dtype-agreement 60 "$PY" -m perf.dtype_agreement "${DEV[@]}" --tasks all "${CLIPS[@]}"
part caption-files 100 "$PY" -m perf.caption_files "${DEV[@]}" "${CAPTION[@]}"
part recipe 110 "$PY" -m perf.recipe_throughput "${DEV[@]}" "${RECIPE[@]}" --levers eager-all
part levers-compiled 180 "$PY" -m perf.train_throughput "${DEV[@]}" "${COMPILED[@]}"
echo "=== done after $((SECONDS - SESSION_START)) s" | tee -a "$LOG"

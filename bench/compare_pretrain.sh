#!/usr/bin/env bash
# One pretraining iteration (steps A, B, C): PyTorch running PRISM's training steps and
# prism-pretrain's train_step, on the same network size and crops, in one run.
#
#     PYTHON=/path/to/venv/bin/python bench/compare_pretrain.sh [FEATURE_SIZE] [ROI] [BATCH]
#
# PYTHON must have torch and monai==1.4.0 installed.
set -euo pipefail
cd "$(dirname "$0")/.."
feature=${1:-12}
roi=${2:-64}
batch=${3:-2}
python=${PYTHON:-python3}

cargo build --release --quiet --example bench_pretrain_step
"$python" bench/torch_pretrain_step.py "$feature" "$roi" "$batch" 3
RAYON_NUM_THREADS=2 ./target/release/examples/bench_pretrain_step "$feature" "$roi" "$batch" 3

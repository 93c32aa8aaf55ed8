#!/usr/bin/env bash
# Time the published-size PRISM encoder here and in MONAI 1.4.0, in one run.
#
#     PYTHON=/path/to/venv/bin/python bench/compare_encoder.sh [SIZE] [RUNS]
#
# PYTHON must have torch, monai==1.4.0 and einops installed.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-96}
runs=${2:-5}
python=${PYTHON:-python3}

cargo build --release --quiet --example bench_encoder
lscpu | grep -E '^(Model name|CPU\(s\)|Flags)' | sed 's/Flags:.*avx512f.*/Flags: ... avx512f .../'
"$python" bench/monai_encoder.py "$size" "$runs"
./target/release/examples/bench_encoder "$size" "$runs"

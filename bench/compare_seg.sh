#!/usr/bin/env bash
# Whole-volume segmentation: MONAI 1.4.0's sliding_window_inference and prism-seg predict on
# the same network (feature size 48, random weights), input and windows, in one run.
#
#     PYTHON=/path/to/venv/bin/python bench/compare_seg.sh [SCAN] [ROI] [OVERLAP]
#
# PYTHON must have torch, monai==1.4.0, einops and nibabel installed.
set -euo pipefail
cd "$(dirname "$0")/.."
scan=${1:-tests/data/mni152_2009a_t1.nii.gz}
roi=${2:-96}
overlap=${3:-0.25}
python=${PYTHON:-python3}
work=$(mktemp -d)

cargo build --release --quiet --bin prism-seg
"$python" bench/monai_seg.py "$scan" "$work" "$roi" "$overlap"
/usr/bin/time -f '{"tool": "prism-seg", "seconds": %e, "peak_rss_kb": %M}' \
    ./target/release/prism-seg predict "$work/input_zscored.nii.gz" -m "$work/swinunetr_f48.pt" \
    -d "$work/out" --preprocess none --roi "$roi" --overlap "$overlap" --threads 2 -q > /dev/null
"$python" - "$work" <<'PY'
import sys, nibabel as nib, numpy as np
work = sys.argv[1]
a = np.asarray(nib.load(f"{work}/monai_labels.nii.gz").dataobj)
b = np.asarray(nib.load(f"{work}/out/input_zscored.nii.gz").dataobj)
print('{"labels_equal_fraction": %.6f}' % (a == b).mean())
PY
rm -rf "$work"

#!/usr/bin/env python3
"""Peer timing: MONAI 1.4.0's Dice and HD95 for every label of a label map against a shifted copy.

Same input, shift and output format as `examples/bench_seg_metrics.rs`, so the two
JSON lines can be read side by side. Each label is measured on its own binary mask
with `compute_dice` and `compute_hausdorff_distance(percentile=95, directed=False,
spacing=...)`. A one-hot tensor of all labels at once would need 3.3 GB for the
AAL atlas (117 channels of 181x217x181 float32).

    python bench/monai_seg_metrics.py [LABEL_MAP] [RUNS]

LABEL_MAP defaults to ../shared/data/labels/aal_colin27.nii.gz beside the repository.
Needs: torch, monai==1.4.0, nibabel, numpy, scipy (MONAI's surface distances call
scipy.ndimage).
"""
import json
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

SHIFT = (1, -2, 1)


def shifted(array, offset):
    """Moves the content by offset voxels, filling with 0 (no wrap-around)."""
    out = np.zeros_like(array)
    src = tuple(slice(max(0, -o), array.shape[a] - max(0, o)) for a, o in enumerate(offset))
    dst = tuple(slice(max(0, o), array.shape[a] - max(0, -o)) for a, o in enumerate(offset))
    out[dst] = array[src]
    return out


def evaluate(pred, reference, labels, spacing):
    dice, hd95 = [], []
    for label in labels:
        p = torch.from_numpy(pred == label)[None, None].float()
        r = torch.from_numpy(reference == label)[None, None].float()
        dice.append(float(compute_dice(p, r, include_background=True)[0, 0]))
        value = float(compute_hausdorff_distance(
            p, r, include_background=True, percentile=95, directed=False, spacing=spacing)[0, 0])
        if np.isfinite(value):
            hd95.append(value)
    return dice, hd95


def main():
    default = Path(__file__).resolve().parent.parent / ".." / "shared/data/labels/aal_colin27.nii.gz"
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    warnings.filterwarnings("ignore")

    image = nib.load(str(path))
    reference = np.rint(np.asarray(image.dataobj)).astype(np.int32)
    pred = shifted(reference, SHIFT)
    spacing = [float(v) for v in np.linalg.norm(image.affine[:3, :3], axis=0)]
    labels = sorted((set(np.unique(reference).tolist()) | set(np.unique(pred).tolist())) - {0})

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        dice, hd95 = evaluate(pred, reference, labels, spacing)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "tool": "monai-1.4.0", "shape": list(reference.shape), "labels": len(labels),
        "median_s": round(statistics.median(times), 3), "runs": runs,
        "threads": torch.get_num_threads(), "mean_dice": round(float(np.mean(dice)), 6),
        "mean_hd95_mm": round(float(np.mean(hd95)), 6), "peak_rss_mib": round(peak),
    }))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Whole-volume SwinUNETR segmentation with MONAI 1.4.0, the peer of `prism-seg predict`.

Builds the published-size network (feature size 48, v2, 4 classes) with seeded random
weights, saves its state dict for prism-seg, z-scores the non-zero voxels of a scan and
saves that array as NIfTI (so both tools see the same input), then times
`sliding_window_inference` (Gaussian blending, sw_batch_size 1) on it and saves the argmax
labels. Prints one JSON line.

    python bench/monai_seg.py SCAN.nii.gz WORKDIR [ROI] [OVERLAP]
"""
import json
import pathlib
import resource
import sys
import time

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets.swin_unetr import SwinUNETR


def main():
    scan, work = sys.argv[1], pathlib.Path(sys.argv[2])
    roi = int(sys.argv[3]) if len(sys.argv) > 3 else 96
    overlap = float(sys.argv[4]) if len(sys.argv) > 4 else 0.25
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = SwinUNETR(img_size=(roi,) * 3, in_channels=1, out_channels=4, feature_size=48,
                    norm_name="instance", use_v2=True).eval()
    torch.save(net.state_dict(), work / "swinunetr_f48.pt")

    img = nib.load(scan)
    x = np.asarray(img.dataobj, dtype=np.float32)
    mask = x != 0
    x = np.where(mask, (x - x[mask].mean()) / x[mask].std(), 0).astype(np.float32)
    nib.save(nib.Nifti1Image(x, img.affine), work / "input_zscored.nii.gz")

    t = torch.from_numpy(x)[None, None]
    start = time.perf_counter()
    with torch.no_grad():
        logits = sliding_window_inference(t, (roi,) * 3, 1, net, overlap=overlap, mode="gaussian")
    seconds = time.perf_counter() - start
    labels = logits.argmax(1)[0].numpy().astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, img.affine), work / "monai_labels.nii.gz")
    print(json.dumps({
        "tool": "monai-1.4.0", "shape": list(x.shape), "roi": roi, "overlap": overlap,
        "seconds": round(seconds, 2), "threads": torch.get_num_threads(),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


if __name__ == "__main__":
    main()

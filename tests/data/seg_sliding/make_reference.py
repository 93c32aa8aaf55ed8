#!/usr/bin/env python3
"""MONAI 1.4.0's sliding-window inference on a small real crop, for the Rust test.

Runs the SwinUNETR reference network (feature size 12, four classes) through
`sliding_window_inference(roi=(64, 64, 64), overlap=0.5, mode="gaussian")` on a
z-scored 40x80x70 crop of the MNI152 2009a T1 scan
(voxels [70:110, 70:150, 50:120] of mni152_2009a_t1.nii.gz): the first axis is shorter than the
window (padded), the others need two overlapping windows each. To keep the file
small the logits are stored at every second voxel along each axis (`logits_stride2`)
with the argmax labels at every voxel. Also stores MONAI's Gaussian importance map
for a 5x6x7 window and one row ([31, 20, :]) of the 64x64x64 map.

    python make_reference.py STATE_DICT.pt mni152_2009a_t1.nii.gz OUT.safetensors
"""
import sys

import nibabel as nib
import numpy as np
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from monai.networks.nets.swin_unetr import SwinUNETR
from safetensors.torch import save_file


def main():
    state_dict, volume, out = sys.argv[1:4]
    net = SwinUNETR(img_size=(64, 64, 64), in_channels=1, out_channels=4, depths=(2, 2, 2, 2),
                    num_heads=(3, 6, 12, 24), feature_size=12, norm_name="instance", use_v2=True).eval()
    net.load_state_dict(torch.load(state_dict, map_location="cpu"))

    x = np.asarray(nib.load(volume).dataobj, dtype=np.float32)[70:110, 70:150, 50:120]
    mask = x != 0
    x = np.where(mask, (x - x[mask].mean()) / x[mask].std(), 0).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(x))[None, None]
    with torch.no_grad():
        logits = sliding_window_inference(x, (64, 64, 64), 1, net, overlap=0.5, mode="gaussian")
    save_file({
        "logits_stride2": logits[:, :, ::2, ::2, ::2].contiguous(),
        "labels": logits.argmax(1).to(torch.uint8).contiguous(),
        "importance_64_row": compute_importance_map((64, 64, 64), mode="gaussian")[31, 20].contiguous(),
        "importance_5x6x7": compute_importance_map((5, 6, 7), mode="gaussian").contiguous(),
    }, out)


if __name__ == "__main__":
    main()

"""Write MONAI 1.4.0's DiceCELoss value and gradient for a small real case.

Logits come from two 16x12x10 crops of the ICBM152 2009a T1 template (z-scored over
its non-zero voxels, then a fixed linear map per class). Targets are the most likely
tissue at each voxel of the same crops, from the ICBM152 2009a grey and white matter
probability maps: 0 background (neither tissue), 1 grey matter, 2 white matter. Class
3 never occurs, and the second crop (top of the brain) has no white matter, so the
Dice smoothing terms are exercised.

Usage: make_reference.py T1 GM WM OUT.safetensors
"""

import sys

import monai
import nibabel as nib
import numpy as np
import torch
from monai.losses import DiceCELoss
from safetensors.torch import save_file

CROPS = [
    (slice(90, 106), slice(114, 126), slice(85, 95)),
    (slice(90, 106), slice(114, 126), slice(149, 159)),
]
WEIGHTS = np.array([-1.2, 0.4, 1.5, -0.3])
BIASES = np.array([0.5, 0.1, -0.6, -1.0])


def load(path):
    return np.asanyarray(nib.load(path).dataobj).astype(np.float64)


def main(t1_path, gm_path, wm_path, out_path):
    t1, gm, wm = load(t1_path), load(gm_path), load(wm_path)
    nonzero = t1[t1 != 0]
    z = np.where(t1 != 0, (t1 - nonzero.mean()) / nonzero.std(), 0.0)
    background = np.clip(255.0 - gm - wm, 0.0, None)
    tissue = np.argmax(np.stack([background, gm, wm]), axis=0)

    logits = np.stack(
        [WEIGHTS[:, None, None, None] * z[c] + BIASES[:, None, None, None] for c in CROPS]
    )
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    targets = np.ascontiguousarray(np.stack([tissue[c] for c in CROPS]), dtype=np.int64)

    loss_fn = DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        include_background=False,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        squared_pred=False,
        batch=False,
    )
    x = torch.from_numpy(logits).double().requires_grad_(True)
    y = torch.from_numpy(targets).unsqueeze(1)
    loss = loss_fn(x, y)
    loss.backward()
    with torch.no_grad():
        dice = loss_fn.dice(x, y)
        ce = loss_fn.ce(x, y)

    tensors = {
        "logits": torch.from_numpy(logits),
        "targets": torch.from_numpy(targets),
        "loss": loss.detach().reshape(1),
        "dice": dice.reshape(1),
        "cross_entropy": ce.reshape(1),
        "grad": x.grad,
    }
    metadata = {
        "made_by": "tests/data/seg_loss/make_reference.py",
        "monai": monai.__version__,
        "torch": torch.__version__,
        "precision": "float64 from the float32 logits",
    }
    save_file(tensors, out_path, metadata=metadata)
    print(f"loss {loss.item():.12f} dice {dice.item():.12f} ce {ce.item():.12f}")
    print("target counts per crop:", [np.bincount(t.ravel(), minlength=4).tolist() for t in targets])


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])

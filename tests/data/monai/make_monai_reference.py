"""Write MONAI 1.4.0 reference outputs for tests/preprocess.rs.

Usage: python make_monai_reference.py SHARED_DATA_DIR OUT_DIR
(needs torch, monai==1.4.0, nibabel, numpy).

spacing.json + *.f32: MONAI `Spacing(pixdim)` with its defaults on small synthetic
volumes. Inputs are integer formulas of the voxel index, so the Rust test rebuilds
them bit for bit. Outputs are little-endian float32 in C order ([i, j, k], k fastest).

pipeline.json: Orientation("RAS") -> Spacing(1 mm) -> CropForeground() -> z-score over
non-zero voxels (numpy population std, floor 1e-8) -> DivisiblePad(32) on real scans,
with values at sampled voxel indices.
"""
import json
import sys
import warnings

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import CropForeground, DivisiblePad, Orientation, Spacing

warnings.filterwarnings("ignore")


def image_values(shape):
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (((i * 7919 + j * 104729 + k * 1299709) % 1000) / 10.0).astype(np.float32)


def label_values(shape):
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return ((i * 3 + j * 5 + k * 7) % 5).astype(np.float32)


def rotation(axis, degrees):
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    r = np.eye(3)
    a, b = [d for d in range(3) if d != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def affine(linear, translation):
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = translation
    return a


SPACING_CASES = [
    # name, shape, affine, pixdim, modes
    ("flipped_anisotropic", (9, 8, 7), affine(np.diag([-0.8, 1.3, 2.1]), [30, -40, 12]), [1.0, 1.0, 1.0], ["bilinear"]),
    (
        "oblique",
        (8, 9, 7),
        affine(rotation(2, 20) @ rotation(0, -12) @ np.diag([0.9, 1.1, 1.7]), [-5, 7, 3]),
        [1.5, 0.7, 1.2],
        ["bilinear", "nearest"],
    ),
    (
        "sagittal_ail",
        (8, 9, 7),
        affine([[0, 0, -1.1], [0.9, 0, 0], [0, -1.05, 0]], [10, -20, 30]),
        [1.0, 1.0, 1.0],
        ["bilinear", "nearest"],
    ),
    ("sheared", (7, 8, 6), affine([[1.0, 0.3, 0.0], [0.0, 1.2, 0.2], [0.1, 0.0, 0.9]], [0, 0, 0]), [0.8, 0.8, 0.8], ["bilinear"]),
    ("downsampled", (12, 11, 10), affine(np.eye(3), [1, 2, 3]), [3.0, 3.0, 3.0], ["bilinear"]),
]


def spacing_reference(out_dir):
    cases = []
    for name, shape, aff, pixdim, modes in SPACING_CASES:
        entry = {"name": name, "shape": list(shape), "affine": aff.tolist(), "spacing": pixdim, "outputs": []}
        for mode in modes:
            source = image_values(shape) if mode == "bilinear" else label_values(shape)
            tensor = MetaTensor(torch.from_numpy(source)[None], affine=torch.from_numpy(aff))
            out = Spacing(pixdim=pixdim, mode=mode)(tensor)
            values = np.ascontiguousarray(out[0].numpy(), dtype="<f4")
            file = f"spacing_{name}_{mode}.f32"
            values.tofile(f"{out_dir}/{file}")
            entry["outputs"].append(
                {"mode": mode, "file": file, "shape": list(values.shape), "affine": out.affine.numpy().tolist()}
            )
        cases.append(entry)
    with open(f"{out_dir}/spacing.json", "w") as f:
        json.dump(cases, f, indent=1)


def zscore_nonzero(x):
    mask = x != 0
    mean, std = x[mask].mean(), x[mask].std()
    out = np.zeros_like(x)
    out[mask] = (x[mask] - mean) / max(std, 1e-8)
    return out


def samples(array, rng, count=40):
    indices = [[int(rng.integers(0, n)) for n in array.shape] for _ in range(count)]
    return [{"index": ix, "value": float(array[tuple(ix)])} for ix in indices]


def pipeline_reference(data_dir, out_dir):
    rng = np.random.default_rng(20240601)
    result = {}
    for name in ["anat/colin27_t1.nii.gz", "lesion/brain1_image.nii.gz"]:
        img = nib.load(f"{data_dir}/{name}")
        x = MetaTensor(torch.from_numpy(img.get_fdata(dtype=np.float32))[None], affine=torch.from_numpy(img.affine))
        x = Orientation(axcodes="RAS")(x)
        spaced = Spacing(pixdim=[1.0, 1.0, 1.0], mode="bilinear")(x)
        cropped = CropForeground()(spaced)
        normalized = MetaTensor(torch.from_numpy(zscore_nonzero(cropped[0].numpy()))[None], affine=cropped.affine)
        final = DivisiblePad(k=32)(normalized)
        result[name] = {
            "spacing": {
                "shape": list(spaced.shape[1:]),
                "affine": spaced.affine.numpy().tolist(),
                "samples": samples(spaced[0].numpy(), rng),
            },
            "cropped_shape": list(cropped.shape[1:]),
            "final": {
                "shape": list(final.shape[1:]),
                "affine": final.affine.numpy().tolist(),
                "samples": samples(final[0].numpy(), rng),
            },
        }
    with open(f"{out_dir}/pipeline.json", "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    data_dir, out_dir = sys.argv[1], sys.argv[2]
    spacing_reference(out_dir)
    pipeline_reference(data_dir, out_dir)

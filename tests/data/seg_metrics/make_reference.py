"""Make the label-map fixtures of tests/seg_metrics.rs and MONAI 1.4.0's metrics on them.

Writes, beside this script:
- ref/aal_crop.nii.gz, pred/aal_crop.nii.gz: a 40x40x32 crop of the AAL atlas on
  Colin27 (1 mm) and a prediction made from it. The prediction is the atlas
  shifted by (1, -2, 1) voxels before cropping, with one label eroded by one voxel
  and one label removed (pred_empty). A block in it is relabelled to a label absent
  from the reference crop (ref_empty). Labels touch the crop border, which is the
  image border.
- ref/lesion_crop.nii.gz, pred/lesion_crop.nii.gz: the pyradiomics brain1 lesion
  mask (0.78x0.78x6.5 mm, LAS) cropped around the lesion, and a prediction that
  is the lesion dilated in-plane by one voxel with its lowest slice removed.
- expected.json: for each case and each label in either map (0 included), the voxel
  counts (numpy) and, where both masks are non-empty, MONAI 1.4.0's Dice
  (compute_dice) and HD95 (compute_hausdorff_distance(percentile=95,
  directed=False, spacing=affine column norms)).

Usage: python make_reference.py SHARED_DATA_DIR
(SHARED_DATA_DIR contains labels/aal_colin27.nii.gz and lesion/brain1_label.nii.gz).
Needs nibabel, numpy, torch, monai 1.4.0 and scipy (MONAI's surface distances call
scipy.ndimage).
"""

import json
import sys
from pathlib import Path

import monai
import nibabel as nib
import numpy as np
import scipy
import scipy.ndimage as ndi
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

HERE = Path(__file__).resolve().parent

AAL_BOX = (slice(100, 140), slice(90, 130), slice(50, 82))
AAL_SHIFT = (1, -2, 1)
AAL_ERODED_LABEL = 78
AAL_REMOVED_LABEL = 56
AAL_ADDED_LABEL = 116
AAL_ADDED_BLOCK = (slice(2, 8), slice(30, 36), slice(0, 5))
LESION_BOX = (slice(157, 214), slice(79, 159), slice(9, 21))


def cropped_affine(affine, box):
    start = np.array([s.start for s in box] + [1.0])
    out = affine.copy()
    out[:, 3] = affine @ start
    return out


def save(array, affine, dtype, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def shift(array, offset):
    """Moves the content by offset voxels, filling with 0 (no wrap-around)."""
    out = np.zeros_like(array)
    src = tuple(slice(max(0, -o), array.shape[a] - max(0, o)) for a, o in enumerate(offset))
    dst = tuple(slice(max(0, o), array.shape[a] - max(0, -o)) for a, o in enumerate(offset))
    out[dst] = array[src]
    return out


def make_aal(shared):
    image = nib.load(str(shared / "labels" / "aal_colin27.nii.gz"))
    atlas = np.asarray(image.dataobj).astype(np.int32)
    reference = atlas[AAL_BOX]
    pred = shift(atlas, AAL_SHIFT)[AAL_BOX].copy()

    eroded = ndi.binary_erosion(pred == AAL_ERODED_LABEL)
    pred[(pred == AAL_ERODED_LABEL) & ~eroded] = 0
    pred[pred == AAL_REMOVED_LABEL] = 0
    assert AAL_ADDED_LABEL not in reference
    pred[AAL_ADDED_BLOCK] = AAL_ADDED_LABEL

    affine = cropped_affine(image.affine, AAL_BOX)
    return reference, pred, affine, np.uint8


def make_lesion(shared):
    image = nib.load(str(shared / "lesion" / "brain1_label.nii.gz"))
    mask = np.asarray(image.dataobj)[LESION_BOX] > 0
    in_plane_cross = np.zeros((3, 3, 3), bool)
    in_plane_cross[:, 1, 1] = in_plane_cross[1, :, 1] = True
    pred = ndi.binary_dilation(mask, structure=in_plane_cross)
    lowest = np.nonzero(mask.any(axis=(0, 1)))[0].min()
    pred[:, :, lowest] = False
    affine = cropped_affine(image.affine, LESION_BOX)
    return mask.astype(np.int16), pred.astype(np.int16), affine, np.int16


def monai_metrics(pred, reference, label, spacing):
    p = torch.from_numpy(pred == label)[None, None].float()
    r = torch.from_numpy(reference == label)[None, None].float()
    dice = compute_dice(p, r, include_background=True)
    hd95 = compute_hausdorff_distance(
        p, r, include_background=True, percentile=95, directed=False, spacing=spacing
    )
    return float(dice[0, 0]), float(hd95[0, 0])


def describe(name, reference, pred, affine):
    spacing = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    # Label 0 (background) is kept on purpose: a large mask that touches the image border.
    labels = sorted(set(np.unique(reference).tolist()) | set(np.unique(pred).tolist()))
    rows = []
    for label in labels:
        row = {
            "label": int(label),
            "voxels_pred": int((pred == label).sum()),
            "voxels_ref": int((reference == label).sum()),
            "voxels_overlap": int(((pred == label) & (reference == label)).sum()),
        }
        if row["voxels_pred"] > 0 and row["voxels_ref"] > 0:
            row["dice"], row["hd95_mm"] = monai_metrics(pred, reference, label, spacing)
        rows.append(row)
    return {"file": f"{name}.nii.gz", "shape": list(reference.shape), "spacing_mm": spacing, "labels": rows}


def main():
    shared = Path(sys.argv[1])
    cases = {}
    for name, make in (("aal_crop", make_aal), ("lesion_crop", make_lesion)):
        reference, pred, affine, dtype = make(shared)
        save(reference, affine, dtype, HERE / "ref" / f"{name}.nii.gz")
        save(pred, affine, dtype, HERE / "pred" / f"{name}.nii.gz")
        cases[name] = describe(name, reference, pred, affine)

    about = {
        "made_by": "make_reference.py",
        "versions": {
            "monai": monai.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "nibabel": nib.__version__,
        },
        "notes": "dice: monai.metrics.compute_dice; hd95_mm: monai.metrics.compute_hausdorff_distance("
        "percentile=95, directed=False, spacing=spacing_mm); both only where pred and ref contain the label. "
        "Voxel counts from numpy.",
    }
    with open(HERE / "expected.json", "w") as f:
        json.dump({"_about": about, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()

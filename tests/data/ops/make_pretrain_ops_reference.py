"""Write pretrain_ops_reference.safetensors: torch outputs and autograd gradients for
tests/ops_grad_pretrain.rs (trilinear x2 up-sampling and StyleGAN2 modulated convolution).

Run from the repository root with a Python that has torch and safetensors:
    python tests/data/ops/make_pretrain_ops_reference.py
Everything is computed in float64 so the fixture serves as a reference for both the f32 and the
f64 paths. For each case, `grad_*` are the gradients of sum(out * upstream) w.r.t. each input.
Made with torch 2.15.0 (CPU).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = Path(__file__).with_name("pretrain_ops_reference.safetensors")

# name: input shape. Odd sizes, a batch, and axes of length 1 and 2 (where both neighbours of an
# output sample are edge samples).
UPSAMPLE_CASES = {
    "upsample_odd": (1, 2, 3, 4, 5),
    "upsample_batch": (2, 3, 4, 2, 3),
    "upsample_single_voxel_axes": (1, 1, 1, 2, 1),
}

# name: (input shape, weight shape, padding, with style, demodulate)
MODCONV_CASES = {
    "modconv_demodulated": ((2, 3, 5, 4, 6), (4, 3, 3, 3, 3), 1, True, True),
    "modconv_modulated": ((2, 3, 5, 4, 6), (4, 3, 3, 3, 3), 1, True, False),
    "modconv_without_style": ((2, 3, 5, 4, 6), (4, 3, 3, 3, 3), 1, False, False),
}


def with_grads(tensors, forward, prefix, out):
    """Store inputs, output, the random upstream gradient and each input's gradient."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in tensors.items()}
    result = forward(**leaves)
    upstream = torch.randn_like(result)
    (result * upstream).sum().backward()
    for k, v in leaves.items():
        out[f"{prefix}.{k}"] = v.detach()
        out[f"{prefix}.grad_{k}"] = v.grad
    out[f"{prefix}.out"] = result.detach()
    out[f"{prefix}.upstream"] = upstream


def upsample(x):
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)


def modulated_conv3d(x, w, style=None, padding=1, demodulate=True):
    """StyleGAN2's modulated convolution, written as one grouped convolution over the batch."""
    if style is None:
        return F.conv3d(x, w, padding=padding)
    batch, in_channels = x.shape[:2]
    out_channels = w.shape[0]
    weights = w[None] * style[:, None, :, None, None, None]
    if demodulate:
        inv_norm = torch.rsqrt(weights.pow(2).sum(dim=[2, 3, 4, 5]) + 1e-8)
        weights = weights * inv_norm[:, :, None, None, None, None]
    grouped = F.conv3d(
        x.reshape(1, batch * in_channels, *x.shape[2:]),
        weights.reshape(batch * out_channels, in_channels, *w.shape[2:]),
        padding=padding,
        groups=batch,
    )
    return grouped.reshape(batch, out_channels, *grouped.shape[2:])


def main():
    torch.manual_seed(20250301)
    torch.set_default_dtype(torch.float64)
    out = {}

    for name, shape in UPSAMPLE_CASES.items():
        with_grads({"x": torch.randn(shape)}, upsample, name, out)

    for name, (x_shape, w_shape, padding, has_style, demodulate) in MODCONV_CASES.items():
        tensors = {"x": torch.randn(x_shape), "w": torch.randn(w_shape) * 0.3}
        if has_style:
            # Styles around 1, so that modulation scales input channels and rarely flips their sign.
            tensors["style"] = 1 + 0.5 * torch.randn(x_shape[:2])

        def forward(x, w, style=None):
            return modulated_conv3d(x, w, style, padding, demodulate)

        with_grads(tensors, forward, name, out)

    out = {k: v.contiguous() for k, v in out.items()}
    save_file(out, str(OUT))
    size = OUT.stat().st_size
    print(f"wrote {OUT} ({size} bytes, {len(out)} tensors)")


if __name__ == "__main__":
    main()

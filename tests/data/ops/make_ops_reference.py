"""Write ops_reference.safetensors: torch outputs and autograd gradients for tests/ops_grad.rs.

Run from the repository root with a Python that has torch and safetensors:
    python tests/data/ops/make_ops_reference.py
Everything is computed in float64 so the fixture serves as a reference for both the f32 and the
f64 paths. For each case, `grad_*` are the gradients of sum(out * upstream) w.r.t. each input.
Made with torch 2.15.0 (CPU).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = Path(__file__).with_name("ops_reference.safetensors")

# name: (input shape, weight shape, stride (d, h, w), padding (d, h, w), with bias)
CONV_CASES = {
    "conv_k3_s1_p1_batch2_bias": ((2, 3, 7, 6, 5), (4, 3, 3, 3, 3), (1, 1, 1), (1, 1, 1), True),
    "conv_k3_s2_p1_odd": ((1, 2, 9, 8, 7), (3, 2, 3, 3, 3), (2, 2, 2), (1, 1, 1), False),
    "conv_patch_embed_k2_s2": ((2, 1, 8, 6, 10), (5, 1, 2, 2, 2), (2, 2, 2), (0, 0, 0), True),
    "conv_anisotropic": ((2, 4, 6, 7, 5), (2, 4, 3, 2, 1), (1, 2, 1), (0, 1, 2), True),
    "conv_k2_s1_p3_wide_padding": ((1, 3, 4, 5, 3), (2, 3, 2, 2, 2), (1, 1, 1), (3, 3, 3), False),
    "conv_k3_s3_p2": ((1, 3, 5, 5, 5), (2, 3, 3, 3, 3), (3, 3, 3), (2, 2, 2), False),
    "conv_k1_pointwise": ((1, 2, 4, 5, 6), (3, 2, 1, 1, 1), (1, 1, 1), (0, 0, 0), True),
    "conv_k3_many_chunks": ((2, 4, 10, 9, 8), (5, 4, 3, 3, 3), (1, 1, 1), (1, 1, 1), False),
    # Enough output channels that f32 convolutions on AVX-512 CPUs read the input directly.
    "conv_k3_wide_output": ((2, 3, 3, 4, 6), (40, 3, 3, 3, 3), (1, 1, 1), (1, 1, 1), True),
    "conv_k2_s2_wide_output": ((1, 8, 6, 4, 8), (48, 8, 2, 2, 2), (2, 2, 2), (0, 0, 0), False),
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


def main():
    torch.manual_seed(20240611)
    torch.set_default_dtype(torch.float64)
    out = {}

    for name, (x_shape, w_shape, stride, padding, has_bias) in CONV_CASES.items():
        tensors = {"x": torch.randn(x_shape), "w": torch.randn(w_shape) * 0.3}
        if has_bias:
            tensors["b"] = torch.randn(w_shape[0])

        def conv(x, w, b=None):
            return F.conv3d(x, w, b, stride=stride, padding=padding)

        with_grads(tensors, conv, name, out)
        out[f"{name}.stride"] = torch.tensor(stride, dtype=torch.int64)
        out[f"{name}.padding"] = torch.tensor(padding, dtype=torch.int64)

    # Layer norm over the last axis with an offset mean, which breaks the E[x²] - E[x]² formula.
    ln = {"x": torch.randn(2, 5, 7) * 2 + 30, "w": torch.randn(7), "b": torch.randn(7)}
    with_grads(ln, lambda x, w, b: F.layer_norm(x, (7,), w, b, eps=1e-5), "layer_norm", out)

    # MONAI's InstanceNorm3d default: affine=False, eps=1e-5, biased variance.
    inorm = {"x": torch.randn(2, 3, 4, 5, 6) * 3 + 10}
    with_grads(inorm, lambda x: F.instance_norm(x, eps=1e-5), "instance_norm3d", out)

    sm = {"x": torch.randn(3, 4, 9) * 20}
    with_grads(sm, lambda x: torch.softmax(x, dim=-1), "softmax", out)

    act = {"x": torch.linspace(-4, 4, 41) + 0.01}
    with_grads(act, lambda x: F.leaky_relu(x, 0.01), "leaky_relu", out)
    with_grads(act, lambda x: F.gelu(x), "gelu_erf", out)

    out = {k: v.contiguous() for k, v in out.items()}
    save_file(out, str(OUT))
    size = OUT.stat().st_size
    print(f"wrote {OUT} ({size} bytes, {len(out)} tensors)")


if __name__ == "__main__":
    main()

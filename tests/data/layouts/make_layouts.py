#!/usr/bin/env python3
"""Write one small PRISM-style encoder in every checkpoint layout the loader accepts.

The encoder is MONAI 1.4.0's SwinTransformer(use_v2=True) at embed_dim 3 and window 3,
so the files stay small; every parameter is moved off its initial value. Alongside the
checkpoints, `outputs.safetensors` contains the network's five normalized stage outputs for
one random input, so a loader that reads a layout wrongly gives different numbers.

Needs torch, monai==1.4.0, einops, safetensors.

    python make_layouts.py OUTDIR
"""
import pathlib
import sys

import torch
from monai.networks.nets.swin_unetr import SwinTransformer
from safetensors.torch import save_file


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    net = SwinTransformer(
        in_chans=1, embed_dim=3, window_size=(3, 3, 3), patch_size=(2, 2, 2),
        depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3), use_v2=True,
    ).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * (0.2 if p.dim() == 1 else 0.05))
    sd = net.state_dict()

    # PRISM pretraining checkpoint: encoder under swinViT., a copy under D.swinViT.,
    # extra head tensors, optimizer and scheduler state beside the state dict.
    state = {f"swinViT.{k}": v for k, v in sd.items()}
    state.update({f"D.swinViT.{k}": v for k, v in sd.items()})
    state["meta_head.weight"] = torch.randn(3, 48)
    torch.save({"epoch": 1, "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                "scheduler": {"last_epoch": 7}, "global_step": 7}, out / "prism_checkpoint.pt")
    torch.save({f"module.swinViT.{k}": v for k, v in sd.items()}, out / "dataparallel_state_dict.pt")
    torch.save(sd, out / "bare_state_dict.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, out / "encoder.safetensors")

    x = torch.randn(1, 1, 23, 30, 17)
    with torch.no_grad():
        stages = net(x, normalize=True)
    tensors = {"input": x}
    tensors.update({f"stage{i}": s.contiguous() for i, s in enumerate(stages)})
    save_file(tensors, out / "outputs.safetensors")


if __name__ == "__main__":
    main()

"""Reference outputs of PRISM's pretraining network for tests/pretrain_reference.rs.

The network is rebuilt here in PyTorch from MONAI 1.4.0's SwinTransformer (use_v2=True) and
plain torch layers, with the state-dict names of PRISM's PT_MRI_FM (the configuration PRISM
publishes: disentanglement, meta/part/discriminator heads, synthesis with a modulated decoder,
contrastive heads). It is a small instance (feature size 6, heads 1-2-4-8, one block per
stage) with random weights rounded to f16 and stored as f16, so the file stays small and both
sides compute from identical values. The file contains the weights, a 64×64×32 input (f16), a
style noise z and the outputs; the two full-size images are stored at every second voxel.

Run with torch, monai 1.4.0 and safetensors installed:
    python make_network_reference.py network_reference.safetensors
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import SwinTransformer
from safetensors.torch import save_file


class ModulatedConv3d(nn.Module):
    """StyleGAN2 modulated convolution: per-sample kernels scaled by a projected style and
    demodulated; a plain convolution without a style."""

    def __init__(self, cin, cout, latent):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3, 3))
        self.projector = nn.Linear(latent, cin)

    def forward(self, x, w):
        if w is None:
            return F.conv3d(x, self.weight, padding=1)
        b = x.shape[0]
        scale = self.projector(w)[:, None, :, None, None, None]
        kernel = self.weight[None] * scale
        kernel = kernel * torch.rsqrt(kernel.pow(2).sum(dim=(2, 3, 4, 5), keepdim=True) + 1e-8)
        out = F.conv3d(x.reshape(1, -1, *x.shape[2:]), kernel.reshape(-1, *kernel.shape[2:]), padding=1, groups=b)
        return out.reshape(b, -1, *out.shape[2:])


class Stage(nn.Module):
    def __init__(self, cin, cout, latent):
        super().__init__()
        # Index 0 so the weight is named decoderN.0.weight, as in PRISM's nn.Sequential.
        self.add_module("0", ModulatedConv3d(cin, cout, latent))

    def forward(self, x, w):
        y = getattr(self, "0")(x, w)
        y = F.leaky_relu(F.instance_norm(y, eps=1e-5), 0.01)
        return F.interpolate(y, scale_factor=2, mode="trilinear", align_corners=False)


def pointwise_block(cin, cout):
    return nn.Sequential(nn.Conv3d(cin, cout, 1), nn.InstanceNorm3d(cout), nn.LeakyReLU())


class PretrainNet(nn.Module):
    def __init__(self, feature_size=6, depths=(1, 1, 1, 1)):
        super().__init__()
        latent = feature_size * 16
        self.swinViT = SwinTransformer(
            in_chans=1, embed_dim=feature_size, window_size=(7, 7, 7), patch_size=(2, 2, 2),
            depths=depths, num_heads=(1, 2, 4, 8), use_v2=True,
        )
        self.meta_head = nn.Linear(latent, 3)
        self.part_head = nn.Linear(latent, 7)
        self.structure_disentanglement = pointwise_block(latent, latent)
        self.sequence_disentanglement = pointwise_block(latent, latent)
        self.latent_agg = pointwise_block(2 * latent, latent)
        self.disc_head = nn.Linear(latent, 1)
        widths = [latent, latent // 2, latent // 4, latent // 8, latent // 16, latent // 16]
        for n in range(1, 6):
            setattr(self, f"decoder{n}", Stage(widths[n - 1], widths[n], latent))
        self.recon_head = nn.Conv3d(feature_size, 1, 1)
        self.w_mapping = nn.Module()
        self.w_mapping.noise_mapping = nn.Sequential(
            *[nn.Sequential(nn.Linear(latent, latent), nn.ReLU()) for _ in range(4)]
        )
        self.mix_w = nn.Module()
        self.mix_w.mix_conv = nn.Conv3d(2 * latent, latent, 1)
        self.str_contrastive_head = nn.Linear(latent, 512)
        self.seq_contrastive_head = nn.Linear(latent, 512)

    def style(self, z):
        z = z / torch.sqrt(torch.mean(z**2, dim=1, keepdim=True) + 1e-8)
        return self.w_mapping.noise_mapping(z)

    def encode(self, x, w=None):
        latent = self.swinViT(x, True)[4]
        structure = self.structure_disentanglement(latent)
        sequence = self.sequence_disentanglement(latent)
        if w is not None:
            wb = w[:, :, None, None, None].expand_as(sequence)
            sequence = self.mix_w.mix_conv(torch.cat([sequence, wb], 1))
        agg = self.latent_agg(torch.cat([structure, sequence], 1)) + latent
        return agg, structure, sequence

    def decode(self, latent, w=None):
        y = latent
        for n in range(1, 6):
            y = getattr(self, f"decoder{n}")(y, w)
        return self.recon_head(y)


def pooled(t):
    return F.adaptive_avg_pool3d(t, 1).flatten(1)


def main(out):
    torch.manual_seed(11)
    net = PretrainNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.half().float())
    x = torch.randn(2, 1, 64, 64, 32).half().float()
    z = torch.randn(2, 96)
    with torch.no_grad():
        agg, structure, sequence = net.encode(x)
        w = net.style(z)
        s_agg, _, s_sequence = net.encode(x, w)
        tensors = {
            "input": x.half(),
            "z": z,
            "style": w,
            "out.recon": net.decode(agg)[:, :, ::2, ::2, ::2],
            "out.synthetic": net.decode(s_agg, w)[:, :, ::2, ::2, ::2],
            "out.latent": agg,
            "out.synthetic_latent": s_agg,
            "out.meta": net.meta_head(pooled(sequence)),
            "out.part": net.part_head(pooled(structure)),
            "out.disc": net.disc_head(pooled(agg)),
            "out.str_projection": net.str_contrastive_head(pooled(structure)),
            "out.seq_projection": net.seq_contrastive_head(pooled(s_sequence)),
        }
    state = {
        f"weights.{k}": v.half()
        for k, v in net.state_dict().items()
        if not k.endswith("relative_position_index")
    }
    save_file({**state, **{k: v.contiguous() for k, v in tensors.items()}}, out)


if __name__ == "__main__":
    main(sys.argv[1])

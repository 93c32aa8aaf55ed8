"""One PRISM pretraining iteration in PyTorch (the peer of examples/bench_pretrain_step.rs):
steps A, B and C as PRISM's training code runs them (three AdamW optimizers, non-saturating
GAN losses, MONAI's ContrastiveLoss), on the network of
tests/data/pretrain/make_network_reference.py at the given size, with two smooth crops.

    python bench/torch_pretrain_step.py [FEATURE_SIZE] [ROI] [BATCH] [ITERATIONS]

Prints one JSON line: seconds per iteration with and without step C (median), and the peak
resident memory.
"""
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests/data/pretrain"))
from make_network_reference import PretrainNet, pooled  # noqa: E402

feature = int(sys.argv[1]) if len(sys.argv) > 1 else 12
roi = int(sys.argv[2]) if len(sys.argv) > 2 else 64
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 2
iterations = int(sys.argv[4]) if len(sys.argv) > 4 else 3
torch.set_num_threads(2)
torch.manual_seed(0)

net = PretrainNet(feature_size=feature, depths=(2, 2, 2, 2))
net.swinViT = type(net.swinViT)(
    in_chans=1, embed_dim=feature, window_size=(7, 7, 7), patch_size=(2, 2, 2),
    depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), use_v2=True,
)
latent = feature * 16
generator = [p for n, p in net.named_parameters() if n.startswith(("decoder", "recon_head", "w_mapping", "mix_w"))]
encoder = [p for n, p in net.named_parameters() if not n.startswith(("decoder", "recon_head", "w_mapping", "mix_w"))]
opt_all = torch.optim.AdamW(net.parameters(), lr=5e-4, weight_decay=0.1)
opt_d = torch.optim.AdamW(encoder, lr=5e-4, weight_decay=0.1)
opt_g = torch.optim.AdamW(generator, lr=5e-4, weight_decay=0.1)
contrast = ContrastiveLoss(temperature=0.5)

axis = torch.arange(roi, dtype=torch.float32)
grid = torch.sin(axis * 0.2)[:, None, None] + torch.cos(axis * 0.15)[None, :, None] + axis[None, None, :] / roi
clean = torch.stack([grid * (b + 1) * 0.5 for b in range(batch)])[:, None]
corrupted = clean * 0.9 + 0.05
part = torch.zeros(batch, dtype=torch.long)


def set_grad(params, flag):
    for p in params:
        p.requires_grad_(flag)


def heads(agg, structure, sequence):
    return net.meta_head(pooled(sequence)), net.part_head(pooled(structure))


def iteration(with_c):
    # A: every parameter.
    set_grad(net.parameters(), True)
    opt_all.zero_grad()
    agg, structure, sequence = net.encode(corrupted)
    recon = net.decode(agg)
    meta, logits = heads(agg, structure, sequence)
    loss = F.l1_loss(recon, clean) + F.cross_entropy(logits, part) + meta.abs().mean() * 0
    loss.backward()
    opt_all.step()
    # Step B reads step A's reconstruction, as prism-pretrain does.
    recon = recon.detach()

    # B: encoder side, generated crops detached.
    set_grad(encoder, True)
    set_grad(generator, False)
    opt_d.zero_grad()
    real, rs, rq = net.encode(clean)
    _, real_logits = heads(real, rs, rq)
    with torch.no_grad():
        w = net.style(torch.randn(batch, latent))
        fake = net.decode(net.encode(clean, w)[0], w)
    d = F.softplus(-net.disc_head(pooled(real))).mean()
    d = d + F.softplus(net.disc_head(pooled(net.encode(recon)[0]))).mean()
    d = d + F.softplus(net.disc_head(pooled(net.encode(fake)[0]))).mean()
    (0.5 * (d + F.cross_entropy(real_logits, part))).backward()
    opt_d.step()

    if with_c:
        # C: generator side, encoder frozen.
        set_grad(encoder, False)
        set_grad(generator, True)
        opt_g.zero_grad()
        recon = net.decode(net.encode(corrupted)[0])
        g = F.softplus(-net.disc_head(pooled(net.encode(recon)[0]))).mean() + F.l1_loss(recon, clean)
        w = net.style(torch.randn(batch, latent))
        agg, structure, _ = net.encode(clean, w)
        fake = net.decode(agg, w)
        fake_agg, fake_structure, _ = net.encode(fake)
        g = g + F.softplus(-net.disc_head(pooled(fake_agg))).mean()
        g = g + 0.5 * contrast(net.str_contrastive_head(pooled(structure)), net.str_contrastive_head(pooled(fake_structure)))
        (0.2 * g).backward()
        opt_g.step()


def timed(with_c):
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        iteration(with_c)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


iteration(True)  # warm-up
result = {
    "tool": "torch",
    "torch": torch.__version__,
    "feature_size": feature,
    "roi": roi,
    "batch": batch,
    "seconds_ab": timed(False),
    "seconds_abc": timed(True),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
print(json.dumps(result))

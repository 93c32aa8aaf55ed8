#!/usr/bin/env python3
"""Peer timing: MONAI 1.4.0's SwinTransformer(use_v2=True) forward pass on the CPU.

Same network size, input and output format as `examples/bench_encoder.rs`, so the
two lines printed by `bench/compare_encoder.sh` can be read side by side.

    python bench/monai_encoder.py [SIZE] [RUNS]

Needs: torch, monai==1.4.0, einops.
"""
import json
import resource
import statistics
import sys
import time

import torch
from monai.networks.nets.swin_unetr import SwinTransformer


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 96
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    torch.manual_seed(0)
    net = SwinTransformer(
        in_chans=1, embed_dim=48, window_size=(7, 7, 7), patch_size=(2, 2, 2),
        depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), use_v2=True,
    ).eval()
    x = torch.randn(1, 1, size, size, size)
    times = []
    with torch.no_grad():
        net(x, normalize=True)
        for _ in range(runs):
            start = time.perf_counter()
            net(x, normalize=True)
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tool": "monai-1.4.0", "size": size, "embed_dim": 48,
                      "median_s": round(statistics.median(times), 3), "runs": runs,
                      "threads": torch.get_num_threads(), "peak_rss_mib": round(peak)}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time the parts of one SwinUNETR training step in MONAI 1.4.0 / torch, the peer of
`examples/bench_seg_train.rs`: forward, DiceCE loss, backward and AdamW on random inputs and
labels, 2 threads. Prints one JSON line per timed step and the peak resident memory.

    python bench/monai_seg_train.py [SIZE] [FEATURE_SIZE] [BATCH] [RUNS]
"""
import json
import resource
import sys
import time

import torch
from monai.losses import DiceCELoss
from monai.networks.nets.swin_unetr import SwinUNETR


def main():
    size, feature, batch, runs = (int(v) for v in (sys.argv[1:] + ["64", "12", "2", "3"][len(sys.argv) - 1:])[:4])
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = SwinUNETR(img_size=(size,) * 3, in_channels=1, out_channels=4, feature_size=feature,
                    norm_name="instance", use_v2=True)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    optimizer = torch.optim.AdamW(net.parameters())
    x = torch.randn(batch, 1, size, size, size)
    y = torch.randint(0, 4, (batch, 1, size, size, size))
    for run in range(runs):
        t0 = time.perf_counter()
        logits = net(x)
        t1 = time.perf_counter()
        loss = loss_fn(logits, y)
        t2 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        print(json.dumps({"run": run, "size": size, "feature_size": feature, "batch": batch,
                          "forward_s": round(t1 - t0, 3), "loss_s": round(t2 - t1, 3),
                          "backward_s": round(t3 - t2, 3), "adamw_s": round(t4 - t3, 3)}))
    print(json.dumps({"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()

"""Time torch.nn.functional.conv3d on the shapes of examples/bench_conv3d.rs, for comparison.

Usage: python examples/bench_conv3d_torch.py [--backward] [threads]  (default 2 threads).
Prints the fastest of 10 calls, like the Rust benchmark; --backward also times forward plus
the gradients w.r.t. input and weight.
"""

import sys
import time

import torch
import torch.nn.functional as F

# name, in channels, out channels, input size, kernel, stride, padding
CASES = [
    ("patch embed", 1, 48, 96, 2, 2, 0),
    ("stage 1", 48, 48, 48, 3, 1, 1),
    ("stage 2", 96, 96, 24, 3, 1, 1),
    ("stage 3", 192, 192, 12, 3, 1, 1),
    ("stage 4", 384, 384, 6, 3, 1, 1),
]


def fastest(f, calls=10):
    f()
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    args = [a for a in sys.argv[1:] if a != "--backward"]
    backward = "--backward" in sys.argv[1:]
    threads = int(args[0]) if args else 2
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, threads: {threads}")
    for name, c, o, s, k, stride, padding in CASES:
        x = torch.randn(1, c, s, s, s)
        w = torch.randn(o, c, k, k, k) * 0.1
        with torch.no_grad():
            out = F.conv3d(x, w, stride=stride, padding=padding)
            flops = 2.0 * out.numel() * c * k**3
            seconds = fastest(lambda: F.conv3d(x, w, stride=stride, padding=padding))
        print(f"{name:12} forward  {seconds * 1e3:8.2f} ms  {flops / seconds / 1e9:7.1f} GFLOP/s")
        if backward:
            xv, wv = x.clone().requires_grad_(True), w.clone().requires_grad_(True)

            def step():
                F.conv3d(xv, wv, stride=stride, padding=padding).sum().backward()

            seconds = fastest(step)
            print(f"{name:12} fwd+bwd  {seconds * 1e3:8.2f} ms  {3 * flops / seconds / 1e9:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()

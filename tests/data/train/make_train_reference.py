"""Write train_reference.safetensors: torch AdamW, clip_grad_norm_ and MONAI's WarmupCosineSchedule
on fixed inputs, for tests/train_infra.rs.

Run from the repository root with a Python that has torch, monai and safetensors:
    python tests/data/train/make_train_reference.py
Made with torch 2.15.0 and MONAI 1.4.0 (CPU).

Contents, for each dtype D in (f32, f64):
- `adamw.D.init.NAME`: initial parameters. `adamw.D.grad.NAME.K`: the gradient of NAME at step K,
  absent when NAME gets no gradient at that step (torch then skips NAME without counting a step).
  `adamw.D.lr`: the learning rate of each step.
- `adamw.D.final.NAME`, `adamw.D.exp_avg.NAME`, `adamw.D.exp_avg_sq.NAME`, `adamw.D.step.NAME`:
  parameters and optimizer state after all steps.
- `clip.D.grad.NAME`, `clip.D.clipped.NAME`, `clip.D.total_norm`, `clip.max_norm`: gradients
  before and after torch.nn.utils.clip_grad_norm_ and the norm it returned.
And `schedule.CASE.lr` with `schedule.CASE.config` = [base_lr, warmup_steps, t_total, end_lr]: the
learning rate MONAI's WarmupCosineSchedule gives at steps 0..t_total.
"""

from pathlib import Path

import torch
from monai.optimizers import WarmupCosineSchedule
from safetensors.torch import save_file

OUT = Path(__file__).with_name("train_reference.safetensors")
STEPS = 25
SHAPES = {"conv.weight": (4, 3, 3), "conv.bias": (4,), "head.weight": (2, 5)}
# Parameter groups as a training script sets them: weight decay on weights, none on biases.
DECAY = {"conv.weight": True, "conv.bias": False, "head.weight": True}
CONFIG = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)


def has_grad(name, k):
    # head.weight gets a gradient only on even steps, so its step count lags the others.
    return name != "head.weight" or k % 2 == 0


def adamw_case(dtype, tag, out):
    generator = torch.Generator().manual_seed(7)
    params = {n: torch.randn(s, generator=generator, dtype=dtype) for n, s in SHAPES.items()}
    for n, p in params.items():
        out[f"adamw.{tag}.init.{n}"] = p.clone()
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    groups = [
        {"params": [leaves[n] for n in SHAPES if DECAY[n]]},
        {"params": [leaves[n] for n in SHAPES if not DECAY[n]], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, **CONFIG)
    lrs = torch.linspace(1e-3, 3e-2, STEPS, dtype=torch.float64)
    out[f"adamw.{tag}.lr"] = lrs.clone()

    for k in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[k])
        for n, leaf in leaves.items():
            if has_grad(n, k):
                # Magnitudes spread over decades so the second moment matters.
                scale = 10.0 ** float(torch.randint(-3, 2, (1,), generator=generator))
                leaf.grad = torch.randn(SHAPES[n], generator=generator, dtype=dtype) * scale
                out[f"adamw.{tag}.grad.{n}.{k}"] = leaf.grad.clone()
            else:
                leaf.grad = None
        optimizer.step()

    for n, leaf in leaves.items():
        state = optimizer.state[leaf]
        out[f"adamw.{tag}.final.{n}"] = leaf.detach().clone()
        out[f"adamw.{tag}.exp_avg.{n}"] = state["exp_avg"].clone()
        out[f"adamw.{tag}.exp_avg_sq.{n}"] = state["exp_avg_sq"].clone()
        out[f"adamw.{tag}.step.{n}"] = torch.tensor([int(state["step"])], dtype=torch.int64)


def clip_case(dtype, tag, out, max_norm):
    generator = torch.Generator().manual_seed(11)
    leaves = {n: torch.zeros(s, dtype=dtype, requires_grad=True) for n, s in SHAPES.items()}
    for n, leaf in leaves.items():
        leaf.grad = torch.randn(SHAPES[n], generator=generator, dtype=dtype)
        out[f"clip.{tag}.grad.{n}"] = leaf.grad.clone()
    total = torch.nn.utils.clip_grad_norm_(list(leaves.values()), max_norm)
    for n, leaf in leaves.items():
        out[f"clip.{tag}.clipped.{n}"] = leaf.grad.clone()
    out[f"clip.{tag}.total_norm"] = total.reshape(1).to(torch.float64)


def schedule_case(name, base_lr, warmup_steps, t_total, end_lr, out):
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.AdamW([param], lr=base_lr)
    schedule = WarmupCosineSchedule(optimizer, warmup_steps, t_total, end_lr=end_lr)
    lrs = []
    for _ in range(t_total + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    out[f"schedule.{name}.lr"] = torch.tensor(lrs, dtype=torch.float64)
    config = [base_lr, warmup_steps, t_total, end_lr]
    out[f"schedule.{name}.config"] = torch.tensor(config, dtype=torch.float64)


def main():
    out = {}
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        adamw_case(dtype, tag, out)
        clip_case(dtype, tag, out, max_norm=1.5)
    out["clip.max_norm"] = torch.tensor([1.5], dtype=torch.float64)
    schedule_case("prism", 1e-4, 1000, 5000, 0.0, out)
    schedule_case("floor", 2e-3, 10, 40, 1e-4, out)
    schedule_case("no_warmup", 1e-3, 0, 30, 0.0, out)
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT))
    print(f"wrote {len(out)} tensors to {OUT}")


if __name__ == "__main__":
    main()

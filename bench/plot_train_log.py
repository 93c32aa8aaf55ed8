"""Plots the loss curves of a prism-pretrain run (its train_log.csv) as a PNG.

    python bench/plot_train_log.py RUN_DIR/train_log.csv OUT.png [SMOOTH_STEPS]

Four panels: reconstruction (training, step A, and validation), the discriminator's loss
(step B), the generator's adversarial loss and NT-Xent (step C), and the learning rate.
Training curves are running means over SMOOTH_STEPS steps (default 10); raw values are
drawn faintly behind them.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def column(rows, name):
    points = [(int(r["step"]), float(r[name])) for r in rows if r.get(name, "") != ""]
    return [p[0] for p in points], [p[1] for p in points]


def running_mean(values, width):
    out = []
    for i in range(len(values)):
        window = values[max(0, i - width + 1): i + 1]
        out.append(sum(window) / len(window))
    return out


def main(log_path, out_path, smooth):
    with open(log_path, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    panels = [
        (axes[0][0], "reconstruction L1 (z-scored intensity)", [("loss.recon", "training (step A)"), ("val.val_recon", "validation (held-out brain)")]),
        (axes[0][1], "discriminator loss (step B)", [("loss.disc", "real vs. reconstruction and synthesis")]),
        (axes[1][0], "generator step (step C)", [("loss.gen_adversarial", "adversarial"), ("loss.contrastive", "NT-Xent (structure)")]),
        (axes[1][1], "learning rate", [("lr.all", "all three optimizers")]),
    ]
    for ax, title, series in panels:
        for name, label in series:
            steps, values = column(rows, name)
            if not steps:
                continue
            if name.startswith("val.") or name.startswith("lr."):
                ax.plot(steps, values, marker="o" if name.startswith("val.") else None, label=label)
            else:
                line, = ax.plot(steps, values, alpha=0.25)
                ax.plot(steps, running_mean(values, smooth), color=line.get_color(), label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    fig.savefig(out_path, dpi=80)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)

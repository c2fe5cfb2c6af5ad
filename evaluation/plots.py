"""PNG figures of the evaluation: accuracy against epsilon, examples, low-pass share.

Plain functions from arrays and table cells to a PNG file (matplotlib's Agg
backend: no display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_accuracy_vs_eps(cells: list[dict], rows: list[str], epsilons: list[tuple[str, float]],
                         path: str | Path) -> None:
    """Accuracy (with standard-error bars) against the L-inf budget, FGSM and PGD side by side.

    ``epsilons`` lists (label, eps) pairs; a cell's attack name is
    "<FGSM|PGD> <label>", and budget 0 is the "clean" column.
    """
    by_cell = {(c["defense"], c["attack"]): c for c in cells}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, attack in zip(axes, ("FGSM", "PGD"), strict=True):
        for row in rows:
            keys = [("clean", 0.0)] + [(f"{attack} {label}", eps) for label, eps in epsilons]
            points = [(eps, by_cell[row, k]) for k, eps in keys if (row, k) in by_cell]
            if len(points) < 2:
                continue
            x = [eps for eps, _ in points]
            ax.errorbar(x, [c["accuracy"] for _, c in points], yerr=[c["se"] for _, c in points],
                        marker="o", capsize=2, label=row,
                        linestyle="--" if "retrained" in row or row == "transfer control"
                        else "-")
        ax.set_title(f"{attack} (L-inf), attacks made on the undefended classifier")
        ax.set_xlabel("epsilon")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=7, loc="upper right")
    _save(fig, path)


def plot_attack_examples(clean: np.ndarray, adversarial: np.ndarray,
                         reconstructed: np.ndarray, labels: np.ndarray,
                         predictions: dict[str, np.ndarray], classes: list[str],
                         path: str | Path, count: int = 8) -> None:
    """A grid: clean / adversarial / reconstructed rows for ``count`` test images.

    ``predictions`` holds the classifier's predictions for the "clean",
    "adversarial" and "reconstructed" images; each title says the prediction,
    green when right.
    """
    rows = (("clean", clean), ("adversarial", adversarial), ("reconstructed", reconstructed))
    fig, axes = plt.subplots(3, count, figsize=(1.6 * count, 5.4))
    for r, (name, images) in enumerate(rows):
        for i in range(count):
            ax = axes[r, i]
            ax.imshow(np.clip(images[i], 0, 1), interpolation="nearest")
            guess = int(predictions[name][i])
            ax.set_title(classes[guess][:10], fontsize=7,
                         color="green" if guess == labels[i] else "red")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    _save(fig, path)


def plot_lowpass_share(shares: dict[str, np.ndarray], path: str | Path) -> None:
    """Box plot of the perturbations' low-pass energy share, one box per attack."""
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(shares)), 4))
    names = list(shares)
    ax.boxplot([shares[n][np.isfinite(shares[n])] for n in names])
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, fontsize=8)
    ax.set_ylabel("share of perturbation energy in the low-pass band")
    ax.set_ylim(0, 1)
    ax.set_title("What CSC passes through unchanged")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

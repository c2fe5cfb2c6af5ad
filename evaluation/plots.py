"""PNG figures of the evaluation: accuracy against epsilon (oblivious and adaptive), the
adaptive attack's convergence, examples, low-pass share.

Plain functions from arrays and table cells to a PNG file (matplotlib's Agg
backend: no display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.table import TRANSFER, is_retrained  # noqa: E402


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
                        linestyle="--" if is_retrained(row) or row == TRANSFER
                        else "-")
        ax.set_title(f"{attack} (L-inf), attacks made on the undefended classifier")
        ax.set_xlabel("epsilon")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=7, loc="upper right")
    _save(fig, path)


def plot_adaptive_vs_eps(cells: list[dict], rows: list[str], sweep: list[tuple[str, float]],
                         path: str | Path) -> None:
    """Worst-case accuracy (the sweep's BPDA-PGD and the transferred PGD, per image) against
    the L-inf budget, every row; ``sweep`` lists (column, eps) pairs, a column named
    "worst case <eps label> sweep".  Every curve should fall to about zero at the largest
    budget."""
    by_cell = {(c["defense"], c["attack"]): c for c in cells}
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in rows:
        points = [(eps, by_cell[row, column]) for column, eps in sweep
                  if (row, column) in by_cell]
        if len(points) < 2:
            continue
        ax.errorbar([eps for eps, _ in points], [c["accuracy"] for _, c in points],
                    yerr=[c["se"] for _, c in points], marker="o", capsize=2, label=row,
                    linestyle="--" if is_retrained(row) else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks([eps for _, eps in sweep], [column.split()[-2] for column, _ in sweep])
    ax.minorticks_off()
    _label_accuracy(ax, "Worst case through each defense (BPDA-PGD or transferred PGD)",
                    "epsilon (L-inf)", "accuracy")
    _save(fig, path)


def plot_convergence(curves: dict[str, np.ndarray], per_restart: int, path: str | Path) -> None:
    """Accuracy after each iterate of BPDA-PGD, every row (``curves``: row -> (I + 1,) from
    :func:`evaluation.adaptive.accuracy_curve`); dotted lines mark the restarts, every
    ``per_restart`` iterates.  A converged attack is flat at its end."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row, curve in curves.items():
        ax.plot(np.arange(len(curve)), curve, label=row,
                linestyle="--" if is_retrained(row) else "-")
    iterates = max(len(c) for c in curves.values()) - 1
    for start in range(1, iterates, per_restart):
        ax.axvline(start, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("symlog", linthresh=10)
    _label_accuracy(ax, "Convergence of the adaptive attack (0: clean; dotted: restarts)",
                    "iterate", "accuracy (no iterate so far fooled it)")
    _save(fig, path)


def _label_accuracy(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Titles, an accuracy axis from 0 to 1, grid and legend."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")


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

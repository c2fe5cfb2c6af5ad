"""PNG figures of a basis set: filters, example images, latents, objectives.

Plain functions from arrays to a PNG file (matplotlib's Agg backend: no
display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def filter_mosaic(basis: np.ndarray) -> np.ndarray:
    """A (P, P, 3, M) basis as one RGB image of its filters, each scaled to [0, 1]."""
    p, _, _, m = basis.shape
    cols = int(np.ceil(np.sqrt(m)))
    rows = int(np.ceil(m / cols))
    mosaic = np.ones((rows * (p + 1) + 1, cols * (p + 1) + 1, 3), np.float32)
    for i in range(m):
        f = basis[..., i]
        f = (f - f.min()) / max(float(f.max() - f.min()), 1e-12)
        r, c = divmod(i, cols)
        mosaic[1 + r * (p + 1) : 1 + r * (p + 1) + p, 1 + c * (p + 1) : 1 + c * (p + 1) + p] = f
    return mosaic


def plot_filters(bases: list[np.ndarray], path: str | Path) -> None:
    """One mosaic of filters per cluster."""
    fig, axes = _grid(len(bases), 2.2)
    for c, (ax, basis) in enumerate(zip(axes, bases, strict=False)):
        ax.imshow(filter_mosaic(basis), interpolation="nearest")
        ax.set_title(f"cluster {c}", fontsize=8)
    _save(fig, path)


def plot_examples(images: np.ndarray, labels: np.ndarray, path: str | Path, per_row: int = 8):
    """A row of example images for each cluster."""
    n_clusters = int(labels.max()) + 1
    fig, axes = plt.subplots(n_clusters, per_row, figsize=(per_row, n_clusters + 0.3),
                             squeeze=False)
    for c in range(n_clusters):
        members = np.flatnonzero(labels == c)[:per_row]
        for j, ax in enumerate(axes[c]):
            ax.axis("off")
            if j < len(members):
                ax.imshow(np.clip(images[members[j]], 0, 1))
        axes[c][0].set_title(f"cluster {c}", fontsize=7, loc="left")
    _save(fig, path)


def plot_latents(latents: np.ndarray, labels: np.ndarray, path: str | Path) -> None:
    """The latents on their first two principal axes, coloured by cluster."""
    centred = latents - latents.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5, 4))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=8)
    ax.legend(*scatter.legend_elements(), title="cluster", fontsize=7, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    _save(fig, path)


def plot_objectives(objectives: list[np.ndarray], path: str | Path) -> None:
    """The dictionary-learning objective per iteration, one line per cluster."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c, objective in enumerate(objectives):
        ax.plot(np.arange(1, len(objective) + 1), objective, label=f"cluster {c}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("CBPDN objective")
    ax.set_yscale("log")
    ax.legend(fontsize=6, ncol=2)
    _save(fig, path)


def _grid(n: int, size: float):
    cols = min(n, 5)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
    axes = axes.ravel()
    for ax in axes:
        ax.axis("off")
    return fig, axes


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- the evaluation's figures ----------------------------------------------------


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

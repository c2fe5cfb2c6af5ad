"""PNG figures of a basis set: filters, example images, latents, validation curves.

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


def plot_validation(curves: dict[str, dict], path: str | Path) -> None:
    """Each dictionary's learning on its validation set: the CBPDN objective relative to
    its last value (convergence shows as the line settling on 1) and the PSNR, per step.

    ``curves`` maps a label (``cluster 0``, ``control``) to a curve with ``step``,
    ``objective`` and ``psnr`` arrays (:class:`pipeline.online_cdl.Learned`).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, curve in curves.items():
        steps, objective = np.asarray(curve["step"]), np.asarray(curve["objective"])
        style = {"color": "black", "lw": 2} if label == "control" else {}
        left.plot(steps, objective / objective[-1], label=label, **style)
        right.plot(steps, curve["psnr"], label=label, **style)
    left.set_ylim(0.98, 1.1)
    left.axhspan(1 - 0.005, 1 + 0.005, color="0.9", zorder=0)
    left.set_xlabel("learning step")
    left.set_ylabel("validation objective / last value")
    right.set_xlabel("learning step")
    right.set_ylabel("validation PSNR (dB)")
    right.legend(fontsize=6, ncol=2)
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

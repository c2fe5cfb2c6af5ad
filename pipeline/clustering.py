"""PCA + KMeans over DAE latents (or texture features); assignment needs only arrays.

The reference projects latents to 128 dimensions with PCA and clusters them
with KMeans (k-means++, 10 initialisations); here the PCA is fitted
incrementally, block by block, so that the latents of many images are never
all in memory.  The fitted models are kept as
three arrays (PCA mean and components, cluster centroids), so assigning an
image to a cluster never unpickles a scikit-learn object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clusters:
    """A fitted PCA + KMeans, as arrays.

    Attributes
    ----------
    mean : (L,) float32
        PCA mean of the latents.
    components : (K, L) float32
        PCA axes (rows), ``K <= 128``.
    centroids : (C, K) float32
        Cluster centres in PCA space.
    """

    mean: np.ndarray
    components: np.ndarray
    centroids: np.ndarray

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)


def fit_clusters(
    latents, n_clusters: int, *, count: int | None = None, n_components: int = 128,
    seed: int = 0, block_rows: int = 1024, standardize: bool = False,
) -> tuple[Clusters, np.ndarray]:
    """Fit PCA then KMeans on (N, L) latents; return the model and each latent's cluster.

    ``latents`` is an (N, L) array, or an array read in blocks of rows (a
    Zarr array): only ``block_rows`` rows and the (N, K) projections are
    ever in memory, so fitting on many images needs no more memory than a
    few blocks.  The PCA is fitted incrementally over the blocks
    (scikit-learn's ``IncrementalPCA``), then KMeans (k-means++, 10
    initialisations) on the projections.  ``count`` uses the first
    ``count`` rows only.  ``n_components`` is capped at ``min(N, L)`` so
    small data sets still fit.  ``standardize`` scales every column to unit
    variance first (for features of different units,
    :func:`pipeline.features.highpass_features`); the scaling is folded into
    the model's mean and components, so :func:`assign` is unchanged.
    """
    count = latents.shape[0] if count is None else count
    if not 1 <= n_clusters <= count:
        raise ValueError(f"--clusters must be between 1 and the number of images "
                         f"({count}), got {n_clusters}")
    n_components = min(n_components, count, latents.shape[1])
    blocks = _row_blocks(count, max(block_rows, n_components), n_components)
    from sklearn.cluster import KMeans  # fitting only: assignment needs numpy alone
    from sklearn.decomposition import IncrementalPCA

    centre, scale = _column_scaling(latents, blocks, standardize)

    def block(start: int, stop: int) -> np.ndarray:
        return ((np.asarray(latents[start:stop], np.float64) - centre) * scale).astype(np.float32)

    pca = IncrementalPCA(n_components=n_components)
    for start, stop in blocks:
        pca.partial_fit(block(start, stop))
    projected = np.concatenate([pca.transform(block(start, stop)) for start, stop in blocks])
    kmeans = KMeans(n_clusters, init="k-means++", n_init=10, random_state=seed).fit(projected)
    # (x - centre) * scale - pca.mean_ == (x - mean) * scale: scale folded into the components
    mean = centre + pca.mean_ / scale
    model = Clusters(mean.astype(np.float32), (pca.components_ * scale).astype(np.float32),
                     kmeans.cluster_centers_.astype(np.float32))
    return model, assign_blocks(latents, model, range(0, count), block_rows)


def _column_scaling(latents, blocks, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and the inverse of its standard deviation (zeros and ones unless
    ``standardize``), read block by block."""
    width = latents.shape[1]
    if not standardize:
        return np.zeros(width), np.ones(width)
    total, squares, count = np.zeros(width), np.zeros(width), 0
    for start, stop in blocks:
        rows = np.asarray(latents[start:stop], np.float64)
        total, squares, count = total + rows.sum(0), squares + (rows**2).sum(0), count + len(rows)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0))
    return mean, 1 / np.where(std > 0, std, 1)


def assign(latents: np.ndarray, clusters: Clusters) -> np.ndarray:
    """Nearest centroid in PCA space of each (N, L) latent: (N,) int64."""
    projected = (latents - clusters.mean) @ clusters.components.T
    distances = ((projected[:, None, :] - clusters.centroids[None]) ** 2).sum(-1)
    return distances.argmin(axis=1)


def assign_blocks(latents, clusters: Clusters, rows: range, block_rows: int = 1024) -> np.ndarray:
    """:func:`assign` for the latents at ``rows`` of an array read in blocks of rows."""
    labels = [assign(np.asarray(latents[start:min(start + block_rows, rows.stop)]), clusters)
              for start in range(rows.start, rows.stop, block_rows)]
    return np.concatenate(labels) if labels else np.zeros(0, np.int64)


def _row_blocks(count: int, rows: int, minimum: int) -> list[tuple[int, int]]:
    """(start, stop) blocks of ``rows`` rows; the last merged into the one before it when
    it would hold fewer than ``minimum`` (IncrementalPCA needs ``n_components`` rows)."""
    blocks = [(start, min(start + rows, count)) for start in range(0, count, rows)]
    if len(blocks) > 1 and blocks[-1][1] - blocks[-1][0] < minimum:
        blocks[-2:] = [(blocks[-2][0], count)]
    return blocks

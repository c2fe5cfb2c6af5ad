"""PCA + KMeans over DAE latents; assignment needs only arrays.

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
    seed: int = 0, block_rows: int = 1024,
) -> tuple[Clusters, np.ndarray]:
    """Fit PCA then KMeans on (N, L) latents; return the model and each latent's cluster.

    ``latents`` is an (N, L) array, or an array read in blocks of rows (a
    Zarr array): only ``block_rows`` rows and the (N, K) projections are
    ever in memory, so fitting on many images needs no more memory than a
    few blocks.  The PCA is fitted incrementally over the blocks
    (scikit-learn's ``IncrementalPCA``), then KMeans (k-means++, 10
    initialisations) on the projections.  ``count`` uses the first
    ``count`` rows only.  ``n_components`` is capped at ``min(N, L)`` so
    small data sets still fit.
    """
    count = latents.shape[0] if count is None else count
    if not 1 <= n_clusters <= count:
        raise ValueError(f"--clusters must be between 1 and the number of images "
                         f"({count}), got {n_clusters}")
    n_components = min(n_components, count, latents.shape[1])
    blocks = _row_blocks(count, max(block_rows, n_components), n_components)
    from sklearn.cluster import KMeans  # fitting only: assignment needs numpy alone
    from sklearn.decomposition import IncrementalPCA

    pca = IncrementalPCA(n_components=n_components)
    for start, stop in blocks:
        pca.partial_fit(np.asarray(latents[start:stop], np.float32))
    projected = np.concatenate([pca.transform(np.asarray(latents[start:stop], np.float32))
                                for start, stop in blocks])
    kmeans = KMeans(n_clusters, init="k-means++", n_init=10, random_state=seed).fit(projected)
    model = Clusters(pca.mean_.astype(np.float32), pca.components_.astype(np.float32),
                     kmeans.cluster_centers_.astype(np.float32))
    return model, assign_blocks(latents, model, range(0, count), block_rows)


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

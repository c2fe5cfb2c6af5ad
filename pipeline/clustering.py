"""PCA + KMeans over DAE latents; assignment needs only arrays.

The reference projects latents to 128 dimensions with PCA and clusters them
with KMeans (k-means++, 10 initialisations).  The fitted models are kept as
three arrays (PCA mean and components, cluster centroids), so assigning an
image to a cluster never unpickles a scikit-learn object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA


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
    latents: np.ndarray, n_clusters: int, *, n_components: int = 128, seed: int = 0
) -> tuple[Clusters, np.ndarray]:
    """Fit PCA then KMeans on (N, L) latents; return the model and each latent's cluster.

    ``n_components`` is capped at ``min(N, L)`` so small data sets still fit.
    """
    if not 1 <= n_clusters <= len(latents):
        raise ValueError(f"--clusters must be between 1 and the number of images "
                         f"({len(latents)}), got {n_clusters}")
    n_components = min(n_components, *latents.shape)
    pca = PCA(n_components=n_components, random_state=seed).fit(latents)
    projected = pca.transform(latents)
    kmeans = KMeans(n_clusters, init="k-means++", n_init=10, random_state=seed).fit(projected)
    model = Clusters(pca.mean_.astype(np.float32), pca.components_.astype(np.float32),
                     kmeans.cluster_centers_.astype(np.float32))
    return model, assign(latents, model)


def assign(latents: np.ndarray, clusters: Clusters) -> np.ndarray:
    """Nearest centroid in PCA space of each (N, L) latent: (N,) int64."""
    projected = (latents - clusters.mean) @ clusters.components.T
    distances = ((projected[:, None, :] - clusters.centroids[None]) ** 2).sum(-1)
    return distances.argmin(axis=1)

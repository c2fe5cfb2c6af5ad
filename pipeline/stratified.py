"""Stratified reconstruction: each image with the dictionary of its KMeans cluster.

:func:`reconstruct_by_cluster` is what every reconstruction of the project
runs, on a Dask worker (:mod:`flows.reconstruct`) or in a training loop
(:class:`evaluation.defense.CSCDefense`): each image is assigned to its
cluster (64x64 -> DAE encoder, or the high-pass texture features -> PCA ->
nearest centroid) and reconstructed with that cluster's dictionary.  With a
single basis every image is in cluster 0.
"""

from __future__ import annotations

import numpy as np

from pipeline.basis import BasisSet
from pipeline.clustering import assign
from pipeline.dae import encode, load_model
from pipeline.features import highpass_features
from pipeline.options import CSCOptions
from pipeline.solvers import reconstruct


def assign_clusters(images: np.ndarray, bases: BasisSet) -> np.ndarray:
    """Cluster of each image, (N,) int64; all 0 for a single basis.

    ``images`` is (N, H, W, 3) float32 in [0, 1] of any size (the encoder
    or the features see them resized to 64x64).
    """
    if not bases.stratified:
        return np.zeros(len(images), dtype=np.int64)
    if bases.feature == "highpass":
        return assign(highpass_features(images), bases.clusters)
    return assign(encode(load_model(bases.dae_weights), images), bases.clusters)


def reconstruct_by_cluster(
    images: np.ndarray,
    bases: BasisSet,
    *,
    options: CSCOptions = CSCOptions(),
    batch_size: int | None = None,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reconstruct each image with the dictionary of its cluster.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray, float32
        Images in [0, 1].
    bases : BasisSet
        One basis, or a basis set with its DAE, PCA and centroids.
    options : CSCOptions
        Solver settings (lambda, iterations, solver).
    batch_size, device
        Passed to :func:`pipeline.solvers.reconstruct`.

    Returns
    -------
    reconstructions : (N, H, W, 3) ndarray, float32
        In [0, 1].
    n_iter : (N,) ndarray, int64
        ADMM iterations of each image's solve.
    clusters : (N,) ndarray, int64
        Cluster whose dictionary reconstructed each image.
    """
    images = np.asarray(images, dtype=np.float32)
    clusters = assign_clusters(images, bases)
    out = np.empty_like(images)
    n_iter = np.zeros(len(images), dtype=np.int64)
    for cluster in np.unique(clusters):
        rows = clusters == cluster
        out[rows], n_iter[rows] = reconstruct(images[rows], bases.bases[cluster],
                                              options=options, batch_size=batch_size,
                                              device=device)
    return out, n_iter, clusters

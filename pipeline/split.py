"""Which images do what when a basis set is learned: held out by source, then per cluster.

Images are held out by *source* (the photograph a tile was cut from), so no
held-out image shares a source with one that any stage trained on; each
cluster then keeps a fixed validation set that its dictionary's convergence
is judged on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import LearnConfig
from pipeline.errors import UserError

MIN_CLUSTER_IMAGES = 8
"""Fewest images a cluster needs for dictionary learning."""


class ClusterTooSmallError(UserError, ValueError):
    """A KMeans cluster has too few images to learn a dictionary from."""


@dataclass(kw_only=True)
class Split:
    """Which images of the data set do what (indices into it, ascending).

    ``training`` are clustered and learned from (but for each cluster's
    validation images), ``dae`` (a subset of them) train the DAE, and
    ``held_out`` are kept out of every stage to measure the learned set: they
    come from the ``held_out_sources``, which no stage sees.
    """

    training: np.ndarray
    dae: np.ndarray
    held_out: np.ndarray
    held_out_sources: np.ndarray


def split_images(count: int, settings: LearnConfig, sources: np.ndarray | None = None) -> Split:
    """The seeded split of ``count`` images into training, DAE and held-out images.

    Held out by source: ``sources`` (N,) gives the source of each image (the
    photograph of a tile; None: each image is its own), and every image of a
    held-out source is kept out of every stage, so no held-out image overlaps
    a training one.  ``settings.held_out_sources`` sources are held out (null:
    sources in a seeded order until they hold ``held_out`` images, at most a
    tenth of the images), and ``held_out`` of their images are measured.

    Raises :class:`ClusterTooSmallError` when too few are left for the clusters.
    """
    rng = np.random.default_rng(settings.seed)
    chosen = rng.permutation(count)[:settings.max_images or count]
    own = np.arange(count) if sources is None else np.asarray(sources)
    order = rng.permutation(np.unique(own[chosen]))
    if settings.held_out_sources is not None:
        if settings.held_out_sources >= len(order):
            raise ClusterTooSmallError(
                f"held_out_sources is {settings.held_out_sources}, and the images come from "
                f"{len(order)} sources: at least one must be left to learn from")
        held_sources = order[:settings.held_out_sources]
    else:
        wanted = min(settings.held_out, len(chosen) // 10)
        per_source = np.bincount(own[chosen], minlength=own.max() + 1)[order]
        held_sources = order[:int(np.searchsorted(np.cumsum(per_source), wanted) + 1)
                             if wanted else 0]
    held = np.isin(own[chosen], held_sources)
    training = np.sort(chosen[~held])
    held_out = np.sort(rng.permutation(chosen[held])[:settings.held_out])
    dae = np.sort(rng.permutation(training)[:settings.dae_images])
    if len(training) < settings.clusters * MIN_CLUSTER_IMAGES:
        raise ClusterTooSmallError(
            f"{settings.clusters} clusters of at least {MIN_CLUSTER_IMAGES} images each need "
            f"{settings.clusters * MIN_CLUSTER_IMAGES} images, and there are {len(training)}: "
            "use fewer clusters (--clusters) or more images")
    return Split(training=training, dae=dae, held_out=held_out,
                 held_out_sources=np.sort(held_sources))


def validation_split(members: list[np.ndarray], size: int, seed: int
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each cluster's images split into those its dictionary learns from and its fixed
    validation set: ``size`` of them (a seeded draw; at most a quarter of the cluster)."""
    rng = np.random.default_rng(seed)
    learn, validation = [], []
    for mine in members:
        drawn = rng.permutation(mine)
        count = min(size, len(mine) // 4)
        validation.append(np.sort(drawn[:count]))
        learn.append(np.sort(drawn[count:]))
    return learn, validation


def check_cluster_sizes(labels: np.ndarray, n_clusters: int) -> None:
    sizes = np.bincount(labels, minlength=n_clusters)
    small = np.flatnonzero(sizes < MIN_CLUSTER_IMAGES)
    if len(small):
        c = int(small[0])
        raise ClusterTooSmallError(
            f"cluster {c} has {sizes[c]} images; dictionary learning needs at least "
            f"{MIN_CLUSTER_IMAGES} per cluster (sizes: {sizes.tolist()}): use fewer clusters "
            "(--clusters) or more images")

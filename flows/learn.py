"""The learn flow: images -> DAE -> latents -> PCA + KMeans -> one dictionary per cluster.

Each stage is a plain function of ``pipeline``; this module only decides where
each runs: images are read and encoded in chunks on the workers, the DAE
trains as one task on a worker, PCA and KMeans run here on the (small)
latents, and every cluster's dictionary is learned as its own task, so the
clusters are learned in parallel on different workers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
from distributed import Client, Future, as_completed
from tqdm import tqdm

from flows.waiting import StopRequested, each_completed, gather, never, result
from pipeline.clustering import Clusters, fit_clusters
from pipeline.config import LearnConfig
from pipeline.csc import CDLOptions
from pipeline.dae import DAEOptions, default_device, encode, load_model, train_dae
from pipeline.datasets import Dataset, load_item
from pipeline.dictionary import learn_dictionary
from pipeline.errors import UserError

log = logging.getLogger(__name__)

MIN_CLUSTER_IMAGES = 8
"""Fewest images a cluster needs for dictionary learning."""


class ClusterTooSmallError(UserError, ValueError):
    """A KMeans cluster has too few images to learn a dictionary from."""


@dataclass(kw_only=True)
class Stratification:
    """How the training images were split into clusters (all in cluster 0 without a DAE).

    Attributes
    ----------
    labels : (N,) int64 ndarray
        Cluster of each training image.
    clusters : Clusters or None
        PCA and centroids; None for one cluster.
    dae_weights : dict of str to Tensor, or None
        The trained DAE; None for one cluster.
    dae_history : dict or None
        The DAE's ``train`` and ``validation`` loss per epoch.
    latents : (N, 2048) float32 ndarray or None
        The training images' latents.
    """

    labels: np.ndarray
    clusters: Clusters | None = None
    dae_weights: dict | None = None
    dae_history: dict | None = None
    latents: np.ndarray | None = None


@dataclass(kw_only=True)
class Dictionaries:
    """One learned dictionary per cluster, with how it was learned.

    Attributes
    ----------
    bases : list of (P, P, 3, M) float32 ndarrays
        ``bases[c]`` is cluster ``c``'s dictionary.
    objectives : list of (max_iter,) float64 ndarrays
        The CBPDN objective per iteration, per cluster.
    members : list of int64 ndarrays
        Per cluster, the indices of the training images its dictionary saw.
    workers : list of str
        The worker that learned each task, in the order the tasks finished.
    task_seconds : list of float
        Each task's time, in the same order.
    """

    bases: list[np.ndarray]
    objectives: list[np.ndarray]
    members: list[np.ndarray]
    workers: list[str]
    task_seconds: list[float]


@dataclass(kw_only=True)
class LearnResult:
    """A learned basis set and everything its manifest and plots record.

    ``images`` (N, H, W, 3) and ``names`` (N,) are the training images;
    ``seconds`` the time of each stage.
    """

    images: np.ndarray
    names: list[str]
    strata: Stratification
    dictionaries: Dictionaries
    seconds: dict[str, float]


def learn_bases(
    client: Client,
    dataset: Dataset,
    settings: LearnConfig = LearnConfig(),
    *,
    chunk_size: int = 32,
    progress: bool = True,
    stop_requested: StopRequested = never,
) -> LearnResult:
    """Learn one basis per cluster of ``dataset`` (one basis, no DAE, for one cluster).

    At most ``settings.max_images`` images (a seeded random subset) are used;
    ``stop_requested`` is asked while waiting for the workers
    (:mod:`flows.waiting`).
    """
    seconds = {}
    started = time.perf_counter()
    chosen = training_images(len(dataset), settings)
    items = [dataset.items[i] for i in chosen]
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    loaded = client.map(_load_chunk, chunks, size=dataset.side(), fit=dataset.fit, pure=False)
    images = np.concatenate(gather(loaded, stop_requested))  # here too: clusters and plots
    seconds["load"] = time.perf_counter() - started
    log.info("loaded %d images (%.1f s)", len(images), seconds["load"])

    strata = Stratification(labels=np.zeros(len(images), np.int64))
    if settings.clusters > 1:
        strata = _stratify(client, loaded, settings, seconds, stop_requested)
    _check_cluster_sizes(strata.labels, settings.clusters)

    t = time.perf_counter()
    dictionaries = _learn_dictionaries(client, images, strata.labels, settings, progress,
                                       stop_requested)
    seconds["dictionaries"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    return LearnResult(images=images, names=[dataset.names[i] for i in chosen], strata=strata,
                       dictionaries=dictionaries, seconds=seconds)


def training_images(count: int, settings: LearnConfig) -> np.ndarray:
    """Indices of the images to learn from: all, or a seeded subset of ``max_images``.

    Raises :class:`ClusterTooSmallError` when they are too few for the clusters.
    """
    chosen = np.arange(count)
    if settings.max_images and count > settings.max_images:
        rng = np.random.default_rng(settings.seed)
        chosen = np.sort(rng.choice(count, settings.max_images, replace=False))
    if len(chosen) < settings.clusters * MIN_CLUSTER_IMAGES:
        raise ClusterTooSmallError(
            f"{settings.clusters} clusters of at least {MIN_CLUSTER_IMAGES} images each need "
            f"{settings.clusters * MIN_CLUSTER_IMAGES} images, and there are {len(chosen)}: "
            "use fewer clusters (--clusters) or more images")
    return chosen


def manifest_settings(settings: LearnConfig) -> dict:
    """The learning settings as a basis set's manifest records them."""
    return {**asdict(settings.dictionary), "images_per_cluster": settings.images_per_cluster,
            "seed": settings.seed, "dae": {**asdict(settings.dae), "seed": settings.seed}}


def _load_chunk(items, size, fit) -> np.ndarray:
    return np.stack([load_item(item, size=size, fit=fit) for item in items])


def _train_dae(images: np.ndarray, options: DAEOptions, seed: int):
    """Train on the worker's GPU when it has one, else on its CPU."""
    return train_dae(images, options, seed=seed, device=default_device())


def _encode_chunk(images: np.ndarray, weights: dict) -> np.ndarray:
    return encode(load_model(weights), images)


def _learn_cluster(cluster: int, images: np.ndarray, options: CDLOptions, seed: int):
    """One cluster's dictionary; also says which worker learned it, and in how long."""
    import distributed

    started = time.perf_counter()
    basis, objective = learn_dictionary(images, options, seed=seed + cluster)
    where = distributed.get_worker().address
    return cluster, basis, objective, where, time.perf_counter() - started


def _stratify(client: Client, loaded: list[Future], settings: LearnConfig,
              seconds: dict[str, float], stop_requested: StopRequested) -> Stratification:
    """Train the DAE on a worker, encode the chunks on the workers, cluster the latents here."""
    t = time.perf_counter()
    on_worker = client.submit(np.concatenate, loaded, pure=False)
    training = client.submit(_train_dae, on_worker, settings.dae, settings.seed, pure=False)
    weights, history = result(training, stop_requested)
    seconds["dae"] = time.perf_counter() - t
    log.info("DAE trained: %d epochs, validation BCE %.4f (%.1f s)", len(history["train"]),
             min(history["validation"]), seconds["dae"])
    t = time.perf_counter()
    weights_future = client.scatter(weights, broadcast=True, hash=False)
    parts = client.map(_encode_chunk, loaded, weights=weights_future, pure=False)
    latents = np.concatenate(gather(parts, stop_requested))
    clusters, labels = fit_clusters(latents, settings.clusters, seed=settings.seed)
    seconds["cluster"] = time.perf_counter() - t
    log.info("clusters of %s images (%.1f s)", np.bincount(labels, minlength=settings.clusters)
             .tolist(), seconds["cluster"])
    return Stratification(labels=labels, clusters=clusters, dae_weights=weights,
                          dae_history=history, latents=latents)


def _learn_dictionaries(client: Client, images: np.ndarray, labels: np.ndarray,
                        settings: LearnConfig, progress: bool,
                        stop_requested: StopRequested) -> Dictionaries:
    """One task per cluster, on at most ``settings.images_per_cluster`` of its images."""
    rng = np.random.default_rng(settings.seed)
    tasks, members = [], []
    for c in range(settings.clusters):
        mine = np.flatnonzero(labels == c)
        if len(mine) > settings.images_per_cluster:
            mine = np.sort(rng.choice(mine, settings.images_per_cluster, replace=False))
        members.append(mine)
        # Largest clusters first, so the last task to start is a short one.
        tasks.append(client.submit(_learn_cluster, c, images[mine], settings.dictionary,
                                   settings.seed, pure=False, priority=len(mine)))
    bases, objectives = [None] * settings.clusters, [None] * settings.clusters
    workers, task_seconds = [], []
    with tqdm(total=settings.clusters, unit="cluster", desc="dictionaries",
              disable=not progress) as bar:
        for future in each_completed(as_completed(tasks), stop_requested):
            c, bases[c], objectives[c], worker, spent = future.result()
            workers.append(worker)
            task_seconds.append(spent)
            bar.update()
    return Dictionaries(bases=bases, objectives=objectives, members=members, workers=workers,
                        task_seconds=task_seconds)


def _check_cluster_sizes(labels: np.ndarray, n_clusters: int) -> None:
    sizes = np.bincount(labels, minlength=n_clusters)
    small = np.flatnonzero(sizes < MIN_CLUSTER_IMAGES)
    if len(small):
        c = int(small[0])
        raise ClusterTooSmallError(
            f"cluster {c} has {sizes[c]} images; dictionary learning needs at least "
            f"{MIN_CLUSTER_IMAGES} per cluster (sizes: {sizes.tolist()}): use fewer clusters "
            "(--clusters) or more images")

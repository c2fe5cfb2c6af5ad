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
from distributed import Client, as_completed
from tqdm import tqdm

from pipeline.clustering import Clusters, fit_clusters
from pipeline.csc import learn_dictionary
from pipeline.dae import DAEOptions, default_device, encode, load_model, train_dae
from pipeline.datasets import Dataset, load_item

log = logging.getLogger(__name__)

MIN_CLUSTER_IMAGES = 8
"""Fewest images a cluster needs for dictionary learning."""


class ClusterTooSmallError(ValueError):
    """A KMeans cluster has too few images to learn a dictionary from."""


@dataclass(frozen=True)
class CDLOptions:
    """Dictionary learning per cluster: ``n_filters`` filters of ``filter_size``."""

    n_filters: int = 64
    filter_size: int = 8
    lmbda: float = 0.2
    max_iter: int = 100
    images_per_cluster: int = 64
    seed: int = 0


@dataclass
class LearnResult:
    bases: list[np.ndarray]
    clusters: Clusters | None
    dae_weights: dict | None
    labels: np.ndarray  # (N,) cluster of each training image
    images: np.ndarray  # (N, H, W, 3) the training images
    latents: np.ndarray | None
    objectives: list[np.ndarray]
    dae_history: dict | None
    seconds: dict[str, float]
    cdl_task_workers: list[str]
    cdl_task_seconds: list[float]
    names: list[str]  # (N,) source name of each training image
    cdl_members: list[np.ndarray]  # per cluster: indices of the images its dictionary saw


def _load_chunk(items, size, fit) -> np.ndarray:
    return np.stack([load_item(item, size=size, fit=fit) for item in items])


def _train_dae(images: np.ndarray, options: DAEOptions):
    """Train on the worker's GPU when it has one, else on its CPU."""
    return train_dae(images, options, device=default_device())


def _encode_chunk(images: np.ndarray, weights: dict) -> np.ndarray:
    return encode(load_model(weights), images)


def _learn_cluster(cluster: int, images: np.ndarray, options: CDLOptions):
    """One cluster's dictionary; also says which worker learned it, and in how long."""
    import distributed

    started = time.perf_counter()
    basis, objective = learn_dictionary(
        images, n_filters=options.n_filters, filter_size=options.filter_size,
        lmbda=options.lmbda, max_iter=options.max_iter, seed=options.seed + cluster)
    where = distributed.get_worker().address
    return cluster, basis, objective, where, time.perf_counter() - started


def learn_bases(
    client: Client,
    dataset: Dataset,
    *,
    n_clusters: int,
    cdl: CDLOptions | None = None,
    dae: DAEOptions | None = None,
    max_images: int | None = None,
    chunk_size: int = 32,
    progress: bool = True,
) -> LearnResult:
    """Learn one basis per cluster of ``dataset`` (one basis, no DAE, when ``n_clusters == 1``).

    At most ``max_images`` images (a seeded random subset) are used.
    """
    cdl, dae = cdl or CDLOptions(), dae or DAEOptions()
    seconds = {}
    started = time.perf_counter()
    chosen = np.arange(len(dataset))
    if max_images and len(dataset) > max_images:
        rng = np.random.default_rng(cdl.seed)
        chosen = np.sort(rng.choice(len(dataset), max_images, replace=False))
    items = [dataset.items[i] for i in chosen]
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    loaded = client.map(_load_chunk, chunks, size=dataset.side(), fit=dataset.fit, pure=False)
    images = np.concatenate(client.gather(loaded))  # here too: for clusters and plots
    seconds["load"] = time.perf_counter() - started
    log.info("loaded %d images (%.1f s)", len(images), seconds["load"])

    clusters = weights = latents = history = None
    labels = np.zeros(len(images), np.int64)
    if n_clusters > 1:
        weights, history, latents, clusters, labels = _stratify(client, loaded, n_clusters, dae,
                                                                cdl.seed, seconds)
    _check_cluster_sizes(labels, n_clusters)

    t = time.perf_counter()
    bases, objectives, members, workers, task_seconds = _learn_dictionaries(
        client, images, labels, n_clusters, cdl, progress)
    seconds["dictionaries"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    return LearnResult(bases, clusters, weights, labels, images, latents, objectives, history,
                       seconds, workers, task_seconds, [dataset.names[i] for i in chosen],
                       members)


def _stratify(client, loaded, n_clusters, dae, seed, seconds):
    """Train the DAE on a worker, encode the chunks on the workers, cluster the latents here."""
    t = time.perf_counter()
    on_worker = client.submit(np.concatenate, loaded, pure=False)
    weights, history = client.submit(_train_dae, on_worker, dae, pure=False).result()
    seconds["dae"] = time.perf_counter() - t
    log.info("DAE trained: %d epochs, validation BCE %.4f (%.1f s)", len(history["train"]),
             min(history["validation"]), seconds["dae"])
    t = time.perf_counter()
    weights_future = client.scatter(weights, broadcast=True, hash=False)
    parts = client.map(_encode_chunk, loaded, weights=weights_future, pure=False)
    latents = np.concatenate(client.gather(parts))
    clusters, labels = fit_clusters(latents, n_clusters, seed=seed)
    seconds["cluster"] = time.perf_counter() - t
    log.info("clusters of %s images (%.1f s)", np.bincount(labels, minlength=n_clusters)
             .tolist(), seconds["cluster"])
    return weights, history, latents, clusters, labels


def _learn_dictionaries(client, images, labels, n_clusters, cdl, progress):
    """One task per cluster, on at most ``cdl.images_per_cluster`` of its images."""
    rng = np.random.default_rng(cdl.seed)
    tasks, members = [], []
    for c in range(n_clusters):
        mine = np.flatnonzero(labels == c)
        if len(mine) > cdl.images_per_cluster:
            mine = np.sort(rng.choice(mine, cdl.images_per_cluster, replace=False))
        members.append(mine)
        # Largest clusters first, so the last task to start is a short one.
        tasks.append(client.submit(_learn_cluster, c, images[mine], cdl, pure=False,
                                   priority=len(mine)))
    bases, objectives, workers, task_seconds = [None] * n_clusters, [None] * n_clusters, [], []
    with tqdm(total=n_clusters, unit="cluster", desc="dictionaries", disable=not progress) as bar:
        for future in as_completed(tasks):
            c, bases[c], objectives[c], worker, spent = future.result()
            workers.append(worker)
            task_seconds.append(spent)
            bar.update()
    return bases, objectives, members, workers, task_seconds


def _check_cluster_sizes(labels: np.ndarray, n_clusters: int) -> None:
    sizes = np.bincount(labels, minlength=n_clusters)
    small = np.flatnonzero(sizes < MIN_CLUSTER_IMAGES)
    if len(small):
        c = int(small[0])
        raise ClusterTooSmallError(
            f"cluster {c} has {sizes[c]} images; dictionary learning needs at least "
            f"{MIN_CLUSTER_IMAGES} per cluster (sizes: {sizes.tolist()}): use fewer clusters "
            "(--clusters) or more images")


def manifest_settings(cdl: CDLOptions, dae: DAEOptions) -> dict:
    """The learning settings as a manifest records them."""
    return {**asdict(cdl), "dae": asdict(dae)}

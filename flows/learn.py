"""The learn flow: images -> DAE -> latents -> PCA + KMeans -> one dictionary per cluster.

Each stage is a plain function of ``pipeline``; this module only decides where
each runs, and nothing is ever gathered on the client, which holds the data
set's item list, the cluster of each image and the learned arrays:

0. the images are split by source (:func:`pipeline.split.split_images`): the held-out
   sources are kept out of every stage below;
1. the DAE trains as one task on a worker, reading its images a mini-batch
   at a time (:class:`pipeline.datasets.Images`);
2. the latents of every image (or their high-pass texture features,
   ``feature: highpass``) are computed in chunks on the workers and written
   to a Zarr array (``latents.zarr`` in the working folder);
3. PCA and KMeans are fitted on those latents by one task on a worker;
4. every cluster's dictionary is learned as its own task, by the online
   learner reading mini-batches of its images until it has converged on its
   cluster's validation images (:func:`pipeline.online_cdl.learn_online`),
   so clusters are learned in parallel on different workers; with
   ``control``, one more task learns a single dictionary on all the images
   (first, when the clusters start from it: ``init: control``);
5. held-out images are reconstructed on the workers with their cluster's
   dictionary and with the control's: the report's PSNR and code density
   per cluster.

Workers report their progress (DAE epochs, learning steps) as Dask events,
which drive one progress bar per stage here.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import zarr
from distributed import Client, as_completed, get_worker
from tqdm import tqdm

from flows.waiting import StopRequested, each_completed, gather, never, result
from pipeline.basis import open_bases, read_manifest, resolve_basis_path
from pipeline.cdl import learn_one
from pipeline.clustering import Clusters, assign_blocks, fit_clusters
from pipeline.config import LearnConfig
from pipeline.dae import LATENT_SHAPE, default_device, encode, load_model, train_dae
from pipeline.datasets import Dataset, Images
from pipeline.errors import UserError
from pipeline.features import N_FEATURES, highpass_features
from pipeline.online_cdl import Learned
from pipeline.options import CDLOptions, CSCOptions, DAEOptions
from pipeline.quality import HeldOut, measure_by_cluster
from pipeline.split import Split, check_cluster_sizes, split_images, validation_split

log = logging.getLogger(__name__)


class StartError(UserError, ValueError):
    """The dictionary that learning should start from (``learn.init``) cannot serve."""


@dataclass(kw_only=True)
class Stratification:
    """How the images were split into clusters (all in cluster 0 without a DAE).

    Attributes
    ----------
    labels : (N,) int64 ndarray
        Cluster of each training image.
    held_out_labels : (H,) int64 ndarray
        Cluster of each held-out image (assigned, not fitted).
    clusters : Clusters or None
        PCA and centroids; None for one cluster.
    dae_weights : dict of str to Tensor, or None
        The trained DAE; None for one cluster.
    dae_history : dict or None
        The DAE's ``train`` and ``validation`` loss per epoch.
    latents : Path or None
        The Zarr array of latents, (N + H, 2048) float32: training images
        first, then the held-out ones.
    seconds : dict
        The time of each stage: ``dae``, ``cluster`` (latents and clustering).
    """

    labels: np.ndarray
    held_out_labels: np.ndarray
    clusters: Clusters | None = None
    dae_weights: dict | None = None
    dae_history: dict | None = None
    latents: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(kw_only=True)
class Dictionaries:
    """One learned dictionary per cluster, and the control, with how they were learned.

    Attributes
    ----------
    clusters : list of Learned
        ``clusters[c]`` is cluster ``c``'s dictionary, its validation curve
        and why it stopped (:class:`pipeline.online_cdl.Learned`).
    control_learned : Learned or None
        One dictionary learned on the training images of every cluster.
    validation_images : list of int
        How many validation images judged each cluster's dictionary, then
        the control's (when learned).
    workers : list of str
        The worker that learned each task, in the order the tasks finished.
    task_seconds : list of float
        Each task's time, in the same order.
    """

    clusters: list[Learned]
    control_learned: Learned | None
    validation_images: list[int]
    workers: list[str]
    task_seconds: list[float]

    @property
    def bases(self) -> list[np.ndarray]:
        """``bases[c]``: cluster ``c``'s (P, P, 3, M) float32 dictionary."""
        return [learned.basis for learned in self.clusters]

    @property
    def objectives(self) -> list[np.ndarray]:
        """The mini-batch objective of each learning step, per cluster."""
        return [learned.objectives for learned in self.clusters]

    @property
    def control(self) -> np.ndarray | None:
        return None if self.control_learned is None else self.control_learned.basis

    @property
    def control_objective(self) -> np.ndarray | None:
        return None if self.control_learned is None else self.control_learned.objectives


@dataclass(kw_only=True)
class LearnResult:
    """A learned basis set and everything its manifest, report and plots record."""

    split: Split
    strata: Stratification
    dictionaries: Dictionaries
    held_out: HeldOut | None
    seconds: dict[str, float]
    machine: dict


def learn_bases(
    client: Client,
    dataset: Dataset,
    settings: LearnConfig = LearnConfig(),
    *,
    workdir: Path,
    csc: CSCOptions = CSCOptions(),
    chunk_size: int = 256,
    progress: bool = True,
    stop_requested: StopRequested = never,
) -> LearnResult:
    """Learn one basis per cluster of ``dataset`` (one basis, no DAE, for one cluster).

    ``workdir`` receives the latents (it must be reachable by the workers at
    the same path); ``csc`` gives the held-out measurement's solver settings
    (its lambda is the dictionary's).  ``stop_requested`` is asked while
    waiting for the workers (:mod:`flows.waiting`).
    """
    started = time.perf_counter()
    split = split_images(len(dataset), settings, dataset.sources)
    start = starting_dictionary(settings.init, settings.dictionary)
    side = dataset.side()

    def images(indices: np.ndarray) -> Images:
        return Images([dataset.items[i] for i in indices], size=side, fit=dataset.fit)

    run = _Run(client, f"learn-{uuid.uuid4().hex[:8]}", progress, stop_requested)
    if settings.clusters > 1:
        strata = _stratify(run, images, split, settings, Path(workdir), chunk_size)
    else:
        strata = Stratification(labels=np.zeros(len(split.training), np.int64),
                                held_out_labels=np.zeros(len(split.held_out), np.int64))
    check_cluster_sizes(strata.labels, settings.clusters)

    seconds, clock = dict(strata.seconds), time.perf_counter()
    members = [split.training[strata.labels == c] for c in range(settings.clusters)]
    lmbda_csc = replace(csc, lmbda=settings.dictionary.lmbda)
    dictionaries = _learn_dictionaries(run, images, members, settings, lmbda_csc, start)
    seconds["dictionaries"] = time.perf_counter() - clock
    held_out = None
    if len(split.held_out):
        clock = time.perf_counter()
        held_out = _measure_held_out(run, images, split.held_out, strata.held_out_labels,
                                     dictionaries, lmbda_csc)
        seconds["held_out"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started
    return LearnResult(split=split, strata=strata, dictionaries=dictionaries,
                       held_out=held_out, seconds=seconds, machine=_machine(client))


def manifest_settings(settings: LearnConfig) -> dict:
    """The learning settings as a basis set's manifest records them: the dictionary's at
    the top level (``lmbda`` names the files), then the rest of the ``learn`` section."""
    rest = {key: value for key, value in asdict(settings).items()
            if key not in ("dictionary", "dae", "out")}
    return {**asdict(settings.dictionary), **rest,
            "dae": {**asdict(settings.dae), "seed": settings.seed}}


@dataclass
class _Run:
    """What every stage of one run shares: the client, its event topic, the stop flag."""

    client: Client
    topic: str
    progress: bool
    stop_requested: StopRequested

    def bar(self, total: int, desc: str, unit: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit=unit, disable=not self.progress)

    def follow(self, bar: tqdm, kind: str, every: float = 0.5):
        """A poll function that moves ``bar`` to the sum of workers' ``kind`` events
        (asking the scheduler at most every ``every`` seconds)."""
        asked = [0.0]

        def poll() -> None:
            if time.monotonic() - asked[0] >= every:
                asked[0] = time.monotonic()
                count = sum(n for _, (e, n) in self.client.get_events(self.topic) if e == kind)
                bar.update(count - bar.n)
        return poll


def _progress_event(topic: str | None, kind: str, count: int = 1) -> None:
    """On a worker: ``count`` steps of ``kind`` done (the client's progress bar sums them)."""
    if topic:
        get_worker().log_event(topic, (kind, count))


def _train_dae(images: Images, options: DAEOptions, seed: int, topic: str):
    """Train on the worker's GPU when it has one, else on its CPU; report each epoch."""
    return train_dae(images, options, seed=seed, device=default_device(),
                     on_epoch=lambda *_: _progress_event(topic, "epoch"))


def _encode_chunk(images: Images, weights: dict | None, latents: str, start: int) -> int:
    """Encode a chunk of images (their high-pass texture features without ``weights``) and
    write them at rows ``start:``; return the count."""
    pixels = images[np.arange(len(images))]
    codes = highpass_features(pixels) if weights is None else encode(load_model(weights), pixels)
    zarr.open_array(latents, mode="r+")[start:start + len(codes)] = codes
    return len(codes)


def _fit_clusters(latents: str, training: int, n_clusters: int, seed: int, standardize: bool):
    """PCA + KMeans on the first ``training`` rows of the latents (read a block of rows at a
    time); assign the rest, the held-out images, too."""
    array = zarr.open_array(latents, mode="r")
    clusters, labels = fit_clusters(array, n_clusters, count=training, seed=seed,
                                    standardize=standardize)
    return clusters, labels, assign_blocks(array, clusters, range(training, array.shape[0]))


def _stratify(run: _Run, images, split: Split, settings: LearnConfig, workdir: Path,
              chunk_size: int) -> Stratification:
    """DAE on a worker (``feature: dae``), latents or features on the workers into Zarr,
    PCA + KMeans on a worker."""
    client, seconds, weights, history = run.client, {}, None, None
    if settings.feature == "dae":
        clock = time.perf_counter()
        with run.bar(settings.dae.max_epochs, "DAE", "epoch") as bar:
            training = client.submit(_train_dae, images(split.dae), settings.dae,
                                     settings.seed, run.topic, pure=False)
            weights, history = result(training, run.stop_requested, run.follow(bar, "epoch"))
            bar.update(len(history["train"]) - bar.n)
        seconds["dae"] = time.perf_counter() - clock
        log.info("DAE trained on %d images: %d epochs, validation BCE %.4f (%.1f s)",
                 len(split.dae), len(history["train"]), min(history["validation"]),
                 seconds["dae"])

    clock = time.perf_counter()
    everything = np.concatenate([split.training, split.held_out])
    latents = workdir / "latents.zarr"
    workdir.mkdir(parents=True, exist_ok=True)
    width = int(np.prod(LATENT_SHAPE)) if weights is not None else N_FEATURES
    zarr.create_array(latents, shape=(len(everything), width), chunks=(chunk_size, width),
                      dtype="float32", overwrite=True)
    weights_future = None if weights is None else client.scatter(weights, broadcast=True,
                                                                 hash=False)
    starts = range(0, len(everything), chunk_size)
    parts = [client.submit(_encode_chunk, images(everything[s:s + chunk_size]), weights_future,
                           str(latents), s, pure=False) for s in starts]
    desc = "latents" if weights is not None else "features"
    with run.bar(len(everything), desc, "img") as bar:
        for future in each_completed(as_completed(parts), run.stop_requested):
            bar.update(future.result())
    fitting = client.submit(_fit_clusters, str(latents), len(split.training), settings.clusters,
                            settings.seed, weights is None, pure=False)
    clusters, labels, held_out_labels = result(fitting, run.stop_requested)
    seconds["cluster"] = time.perf_counter() - clock
    log.info("clusters of %s images (%.1f s)",
             np.bincount(labels, minlength=settings.clusters).tolist(), seconds["cluster"])
    return Stratification(labels=labels, held_out_labels=held_out_labels, clusters=clusters,
                          dae_weights=weights, dae_history=history, latents=latents,
                          seconds=seconds)


@dataclass(frozen=True)
class Start:
    """A dictionary that every cluster's learning starts from.

    ``basis`` (P, P, 3, M) its filters, ``step`` how many steps learned it
    (the step sizes continue from there) and ``usage`` (M,) the share of
    non-zero coefficients of each filter on its validation images.
    """

    basis: np.ndarray
    step: int
    usage: np.ndarray

    def shared(self, count: int) -> np.ndarray:
        """(M,) bool: its ``count`` most used filters, the ones every cluster keeps."""
        frozen = np.zeros(len(self.usage), bool)
        frozen[np.argsort(-self.usage, kind="stable")[:count]] = True
        return frozen


def starting_dictionary(init: str, options: CDLOptions) -> Start | None:
    """The one-basis set ``init`` names (None for ``random`` and ``control``), checked.

    Raises :class:`StartError` naming the set: not a one-basis set, filters of
    another shape or lambda, or no record of how it was learned.
    """
    if init in ("random", "control"):
        return None
    folder = resolve_basis_path(init)
    bases = open_bases(folder)
    manifest = read_manifest(folder) if Path(folder).is_dir() else {}
    if len(bases.bases) != 1:
        raise StartError(f"init: {folder} is a set of {len(bases.bases)} clusters; name a "
                         "one-basis set (learned with --clusters 1)")
    shape = (options.filter_size, options.filter_size, 3, options.n_filters)
    if bases.bases[0].shape != shape or manifest.get("settings", {}).get("lmbda") != \
            options.lmbda:
        raise StartError(f"init: {folder} holds {bases.bases[0].shape} filters learned with "
                         f"lambda {manifest.get('settings', {}).get('lmbda')}; this run learns "
                         f"{shape} with lambda {options.lmbda}")
    if not manifest.get("learning"):
        raise StartError(f"init: {folder} does not record how its dictionary was learned "
                         "(its steps and filter usage); learn it again with this version")
    record = manifest["learning"][0]
    return Start(basis=bases.bases[0], step=record["first_step"] + record["steps"],
                 usage=np.asarray(record["usage"]))


@dataclass(frozen=True)
class _Task:
    """One dictionary to learn: from which images, judged on which, from where it starts."""

    cluster: int  # the number of clusters for the control
    images: np.ndarray
    validation: np.ndarray
    options: CDLOptions
    seed: int
    initial: np.ndarray | None = None
    first_step: int = 0
    frozen: np.ndarray | None = None


@dataclass(frozen=True)
class _Finished:
    """A learning task's result: its dictionary, where it was learned and in how long."""

    cluster: int
    learned: Learned
    worker: str
    seconds: float


def _learn_cluster(task: _Task, images: Images, validation: Images, csc: CSCOptions,
                   topic: str | None = None) -> _Finished:
    """One dictionary (a cluster's, or the control's), on this worker's GPU or CPU."""
    started = time.perf_counter()
    learned = learn_one(images, validation[np.arange(len(validation))], task.options, csc,
                        seed=task.seed, initial=task.initial, first_step=task.first_step,
                        frozen=task.frozen, device=default_device(),
                        on_steps=lambda n: _progress_event(topic, "step", n))
    return _Finished(task.cluster, learned, get_worker().address, time.perf_counter() - started)


def _learn_dictionaries(run: _Run, images, members: list[np.ndarray], settings: LearnConfig,
                        csc: CSCOptions, start: Start | None) -> Dictionaries:
    """One task per cluster (largest first) and, with ``control``, one on all the images;
    with ``init: control`` the control first, and the clusters start from it (or from
    ``start``, a dictionary learned before)."""
    options, k = settings.dictionary, settings.clusters
    rng = np.random.default_rng(settings.seed)
    learn, validation = validation_split(members, settings.validation, settings.seed)
    tasks = []
    for c in range(k):
        mine = learn[c]
        if options.method == "batch" and len(mine) > settings.images_per_cluster:
            mine = np.sort(rng.choice(mine, settings.images_per_cluster, replace=False))
        tasks.append(_Task(cluster=c, images=mine, validation=validation[c], options=options,
                           seed=settings.seed + c))
    control = None
    if k > 1 and (settings.control or settings.init == "control") and start is None:
        everything = np.sort(np.concatenate(learn))
        if options.method == "batch" and len(everything) > k * settings.images_per_cluster:
            everything = np.sort(rng.choice(everything, k * settings.images_per_cluster,
                                            replace=False))
        pooled = np.concatenate(validation)
        held = np.sort(rng.permutation(pooled)[:settings.validation])
        budget = options.max_iter * (k if options.method == "online" else 1)
        control = _Task(cluster=k, images=everything, validation=held, seed=settings.seed + k,
                        options=replace(options, max_iter=budget))
    total = sum(t.options.max_iter for t in tasks) + (control.options.max_iter if control else 0)
    finished: dict[int, Learned] = {}
    workers, task_seconds = [], []
    with run.bar(total, "dictionaries", "step") as bar:
        poll = run.follow(bar, "step")

        def wait(submitted: list[_Task]) -> None:
            futures = [run.client.submit(
                _learn_cluster, t, images(t.images), images(t.validation), csc, run.topic,
                pure=False, priority=len(t.images) * t.options.max_iter) for t in submitted]
            for future in each_completed(as_completed(futures), run.stop_requested, poll):
                done = future.result()
                c, learned = done.cluster, done.learned
                finished[c] = learned
                workers.append(done.worker)
                task_seconds.append(done.seconds)
                log.info("%s: %d steps, %s (best at step %d, validation PSNR %.2f dB)",
                         "control" if c == k else f"cluster {c}", learned.steps,
                         learned.stopped, learned.best_step, learned.curve["psnr"][
                             list(learned.curve["step"]).index(learned.best_step)])

        if settings.init == "control" and control is not None:
            wait([control])
            learned = finished[k]
            start = Start(basis=learned.basis, step=learned.first_step + learned.steps,
                          usage=learned.usage)
        if start is not None:
            tasks = [replace(t, initial=start.basis, first_step=start.step,
                             frozen=start.shared(settings.shared_filters)) for t in tasks]
        wait(tasks + ([control] if control is not None and k not in finished else []))
        bar.update(total - bar.n)
    return Dictionaries(clusters=[finished[c] for c in range(k)],
                        control_learned=finished.get(k),
                        validation_images=[len(t.validation) for t in tasks]
                        + ([len(control.validation)] if control is not None else []),
                        workers=workers, task_seconds=task_seconds)


def _measure_chunk(images: Images, clusters: np.ndarray, bases: list[np.ndarray],
                   control: np.ndarray | None, options: CSCOptions) -> HeldOut:
    """A chunk of held-out images measured on this worker's GPU or CPU."""
    return measure_by_cluster(images[np.arange(len(images))], clusters, bases, control,
                              options, device=default_device())


def _measure_held_out(run: _Run, images, held_out: np.ndarray, labels: np.ndarray,
                      dictionaries: Dictionaries, options: CSCOptions) -> HeldOut:
    """The held-out images reconstructed on the workers, in chunks that keep every worker
    busy (8 images at most, each solved twice)."""
    bases = run.client.scatter(dictionaries.bases, broadcast=True, hash=False)
    threads = sum(run.client.nthreads().values())
    size = max(1, min(8, -(-len(held_out) // (2 * threads))))
    chunks = [np.arange(s, min(s + size, len(held_out))) for s in range(0, len(held_out), size)]
    tasks = [run.client.submit(_measure_chunk, images(held_out[rows]), labels[rows], bases,
                               dictionaries.control, options, pure=False) for rows in chunks]
    with run.bar(len(held_out), "held-out", "img") as bar:
        for future in each_completed(as_completed(tasks), run.stop_requested):
            bar.update(len(future.result().psnr))
    return HeldOut.concatenate(gather(tasks, run.stop_requested))


def _machine(client: Client) -> dict:
    """Where the set was learned: the workers, their threads, and one worker's machine."""
    records = client.run(_worker_machine)
    return {"workers": len(records), "threads": sum(client.nthreads().values()),
            **next(iter(records.values()))}


def _worker_machine() -> dict:
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "device": device}

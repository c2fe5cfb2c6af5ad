"""The reconstruct flow: pending images -> tasks of a few images -> one chunk per image.

Each task reads its images where it runs (:func:`pipeline.datasets.load_item`),
assigns each to its cluster and reconstructs it with the cluster's dictionary
(:func:`pipeline.stratified.reconstruct_by_cluster`, by default with the
batched PyTorch solver, on the worker's GPU when it has one) and writes them
to the store (:func:`pipeline.store.write_images`), so pixels never travel
through the client.  In a sharded store a task is one shard's pending
images, so no two tasks write the same object.

Every task of the run is submitted at once, so the scheduler knows the
whole job (the dashboard's Progress panel reads ``reconstruct N / total``);
Dask's scheduler-side queuing (``distributed.scheduler.worker-saturation``)
keeps only about one task per worker thread in flight, and the client holds
futures, never pixels.  Finished tasks' results (a few bytes each) are held
until the run ends, so the panel counts them as done; should a worker be
lost, Dask runs its finished tasks again, and they skip the images the store
already marks done.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from distributed import Client, as_completed
from tqdm import tqdm

from flows.waiting import StopRequested, each_completed, never
from pipeline.basis import BasisSet
from pipeline.config import ComputeConfig, Config, StoreConfig
from pipeline.datasets import Dataset, load_item
from pipeline.errors import RunStopped
from pipeline.images import Fit, ImageReadError
from pipeline.lease import Lease
from pipeline.options import CSCOptions
from pipeline.storage import StorageOptions, is_url, location
from pipeline.store import (
    StoreLayout,
    already_written,
    check_guard,
    check_store,
    guard_store,
    open_group,
    open_store,
    pending,
    shard_blocks,
    shard_size,
    write_images,
)
from pipeline.stratified import reconstruct_by_cluster

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: counts, failures (name -> reason) and where the store is."""

    store: str | Path
    total: int
    done_before: int
    done_now: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.done_before + self.done_now


class StrictModeError(RunStopped):
    """An image failed and the run was asked to stop at the first failure."""


class LeaseLostError(RunStopped):
    """Another run took over the store's lease: this run stopped writing."""


@dataclass(frozen=True)
class TaskSettings:
    """What every reconstruct task of one run needs besides its images and the bases."""

    store_path: str
    options: CSCOptions
    size: int
    fit: Fit
    compute: ComputeConfig
    storage: StorageOptions = StorageOptions()


@dataclass(frozen=True)
class ImageOutcome:
    """One image of a task: its index, and why it failed (None when it was written)."""

    index: int
    failure: str | None = None


def reconstruct_task(indices: list[int], items: list, bases: BasisSet,
                     settings: TaskSettings) -> list[ImageOutcome]:
    """Load, assign, reconstruct and store a block of images (``items[k]`` is image
    ``indices[k]`` of the data set).

    An image that cannot be read is reported, not raised, so that one bad
    file costs only itself.  Images of one cluster are solved together
    (:func:`pipeline.stratified.reconstruct_by_cluster`).
    """
    group = open_group(settings.store_path, settings.storage, mode="r+")  # once per task
    written = already_written(group, indices)  # a task run again after its worker was lost
    outcomes = [ImageOutcome(index) for index in indices if index in written]
    todo = [(index, item) for index, item in zip(indices, items, strict=True)
            if index not in written]
    images, readable = [], []
    for (index, _), loaded in zip(todo, _load_images([item for _, item in todo], settings),
                                  strict=True):
        if isinstance(loaded, ImageReadError):
            outcomes.append(ImageOutcome(index, loaded.reason))
        else:
            images.append(loaded)
            readable.append(index)
    if not images:
        return outcomes
    reconstructions, n_iter, clusters = reconstruct_by_cluster(
        np.stack(images), bases, options=settings.options,
        batch_size=settings.compute.batch_size, device=settings.compute.device)
    write_images(group, readable, reconstructions, n_iter, clusters)
    return outcomes + [ImageOutcome(int(index)) for index in readable]


#: Threads a task decodes its images with when it solves on a GPU (one thread
#: decodes ~30 ImageNet JPEGs a second; the GPU solves 114 images of 224x224).
GPU_LOAD_THREADS = 8


def _load_images(items: list, settings: TaskSettings) -> list:
    """Each item's image, or the :class:`ImageReadError` it raised, in order, decoded on
    ``compute.load_threads`` threads (image decoders release the GIL)."""
    def load(item):
        try:
            return load_item(item, size=settings.size, fit=settings.fit)
        except ImageReadError as err:
            return err

    threads = settings.compute.load_threads or (
        GPU_LOAD_THREADS if _solves_on_gpu(settings) else 1)
    if threads == 1 or len(items) < 2:
        return [load(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(load, items))


def _solves_on_gpu(settings: TaskSettings) -> bool:
    return (settings.compute.device != "cpu" and settings.options.solver == "torch"
            and _worker_has_gpu())


@dataclass(frozen=True)
class StoreTarget:
    """Where a run writes: the store's location, the config's ``store`` section (type,
    sharding, guard) and how to reach object storage (``storage_options``)."""

    path: str | Path
    store: StoreConfig = StoreConfig()
    storage: StorageOptions = StorageOptions()

    @classmethod
    def of(cls, config: Config) -> StoreTarget:
        """The target a config names (``store.path``, or its default beside the outputs)."""
        return cls(config.store_path, config.store, config.storage_options)

    def resolved(self) -> StoreTarget:
        """A URL as it is; a local path made absolute (workers may run elsewhere)."""
        where = location(self.path)
        return replace(self, path=where if is_url(where) else Path(where).resolve())


def reconstruct_dataset(
    client: Client,
    dataset: Dataset,
    bases: BasisSet,
    target: StoreTarget,
    *,
    options: CSCOptions,
    compute: ComputeConfig = ComputeConfig(),
    attrs: dict | None = None,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool = True,
    stop_requested: StopRequested = never,
) -> RunSummary:
    """Reconstruct every image of ``dataset`` not yet done into the store at ``target``.

    ``bases`` (:func:`pipeline.basis.open_bases`) is sent once to every
    worker; each image is reconstructed with the basis of its cluster, and its
    record (files and checksums) goes into the store's settings.  Images that
    cannot be read are skipped and recorded (``strict`` stops at the first
    instead); a re-run does only what is left, and a second run on the same
    store while one is going is refused (:func:`pipeline.store.guard_store`).
    ``target.path`` may be a URL, reached with ``target.storage``; a
    ``target.store.images_per_shard`` above 1 makes a sharded store (one task
    per shard).  ``compute`` says where the solver runs and how many images a
    task takes.
    ``stop_requested`` is asked after each task: when it says True, the
    remaining tasks are cancelled and :class:`KeyboardInterrupt` is raised,
    every finished image kept.
    """
    started = time.perf_counter()
    target = target.resolved()
    store_path, storage = target.path, target.storage
    with guard_store(store_path, storage, guard=target.store.guard) as lease:
        group = open_store(store_path, _store_layout(dataset, bases, options, target.store),
                           labels=dataset.labels, attrs=attrs, overwrite=overwrite,
                           storage=storage)
        todo = pending(group)
        summary = RunSummary(store_path, len(dataset), len(dataset) - len(todo))
        if summary.done_before:
            log.info("resuming: %d of %d images already done", summary.done_before,
                     len(dataset))
        settings = TaskSettings(str(store_path), options, group["images"].shape[1], dataset.fit,
                                compute, storage)
        if shard_size(group) > 1:
            blocks = shard_blocks(todo, shard_size(group))
        else:
            per_task = compute.images_per_task or _default_images_per_task(
                client, compute, options.solver, len(todo))
            blocks = [todo[i:i + per_task] for i in range(0, len(todo), per_task)]
        _run_tasks(client, dataset, blocks, bases, settings, summary, strict=strict,
                   progress=progress, stop_requested=stop_requested, lease=lease)
        summary.seconds = time.perf_counter() - started
        group.attrs.update({
            "failed": summary.failed,
            "summary": {"total": summary.total, "done": summary.done,
                        "failed": len(summary.failed), "seconds": round(summary.seconds, 2)},
        })
        return summary


def check_run_store(dataset: Dataset, bases: BasisSet, target: StoreTarget, *,
                    options: CSCOptions, overwrite: bool = False) -> None:
    """Raise :class:`pipeline.store.StoreError` now if the run could not use its store.

    What :func:`reconstruct_dataset` would find when it opens the store (and
    whether another run holds it), for the commands to check before they
    start any workers.
    """
    target = target.resolved()
    check_store(target.path, _store_layout(dataset, bases, options, target.store),
                overwrite=overwrite, storage=target.storage)
    check_guard(target.path, target.storage, guard=target.store.guard)


def _store_layout(dataset: Dataset, bases: BasisSet, options: CSCOptions,
                  store: StoreConfig) -> StoreLayout:
    """The store's shape, type and sharding, and the settings that determine its pixels."""
    size = dataset.side()
    settings = {
        "dataset": {"name": dataset.name, "image_size": size, "fit": dataset.fit},
        "basis": bases.record,
        "csc": options.as_dict(),
    }
    return StoreLayout(names=dataset.names, image_shape=(size, size, 3), dtype=store.dtype,
                       settings=settings, images_per_shard=store.images_per_shard)


def _default_images_per_task(client: Client, compute: ComputeConfig, solver: str,
                             pending: int) -> int:
    """8 images per task on CPU workers (a few seconds of work), 256 when they have GPUs;
    fewer when there are too few images to give every worker thread two tasks."""
    gpus = compute.device != "cpu" and solver == "torch" and any(
        client.run(_worker_has_gpu).values())
    threads = sum(client.nthreads().values())
    return max(1, min(256 if gpus else 8, -(-pending // (2 * threads))))


def _worker_has_gpu() -> bool:
    import torch  # noqa: PLC0415

    return torch.cuda.is_available()


def _run_tasks(client: Client, dataset: Dataset, blocks: list[np.ndarray], bases: BasisSet,
               settings: TaskSettings, summary: RunSummary, *, strict: bool, progress: bool,
               stop_requested: StopRequested, lease: Lease | None = None) -> None:
    """Submit one task per block of pending images, all at once; tally as they finish."""
    # Unique keys per run: a re-run in the same client must not meet the
    # previous run's keys while the scheduler is still releasing them.
    run_id = uuid.uuid4().hex[:8]
    bases_future = client.scatter(bases, broadcast=True, hash=False)
    blocks = [[int(i) for i in block] for block in blocks]
    futures = client.map(reconstruct_task, blocks,
                         [[dataset.items[i] for i in block] for block in blocks],
                         bases=bases_future, settings=settings,
                         key=[f"reconstruct-{block[0]}-{run_id}" for block in blocks])
    running, finished = as_completed(futures), []
    del futures

    def check_lease() -> None:
        if lease is not None and lease.lost:
            client.cancel(list(running.futures))
            raise LeaseLostError(f"{summary.store}: {lease.lost}; this run stopped writing "
                                 "(its finished images are kept)")

    with tqdm(total=summary.total, initial=summary.done_before, unit="img",
              disable=not progress, desc="reconstruct") as bar:
        for future in each_completed(running, stop_requested, on_poll=check_lease):
            outcomes = future.result()
            finished.append(future)  # held to the end: the dashboard counts it as done
            check_lease()
            for outcome in outcomes:
                if outcome.failure is None:
                    summary.done_now += 1
                    continue
                name = dataset.names[outcome.index]
                summary.failed[name] = outcome.failure
                log.warning("skipped %s: %s", name, outcome.failure)
                if strict:
                    client.cancel(list(running.futures))
                    raise StrictModeError(f"{name}: {outcome.failure} "
                                          "(--strict stops at the first bad image)")
            bar.update(len(outcomes))

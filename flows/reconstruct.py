"""The reconstruct flow: pending images -> tasks of a few images -> one chunk per image.

Each task reads its images where it runs (:func:`pipeline.datasets.load_item`),
assigns each to its cluster, reconstructs them with the cluster's dictionary
(:func:`pipeline.csc.reconstruct`, by default the batched PyTorch solver, on
the worker's GPU when it has one) and writes each to its own chunk
(:func:`pipeline.store.write_image`), so pixels never travel through the
client.  Tasks are submitted in a bounded window, which keeps the client's
memory independent of the data set's size and drives the progress bar.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from distributed import Client, as_completed
from tqdm import tqdm

from pipeline.basis import BasisSet
from pipeline.config import ComputeConfig
from pipeline.csc import CSCOptions
from pipeline.datasets import Dataset, ImageReadError, load_item
from pipeline.defense import reconstruct_with_bases
from pipeline.store import check_store, lock_store, open_store, pending, write_image

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: counts, failures (name -> reason) and where the store is."""

    store: Path
    total: int
    done_before: int
    done_now: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.done_before + self.done_now


class StrictModeError(RuntimeError):
    """An image failed and the run was asked to stop at the first failure."""


def reconstruct_task(indices, items, bases: BasisSet, *, store_path, options, size, fit,
                     compute: ComputeConfig):
    """Load, assign, reconstruct and store a block of images; return [(index, n_iter, error)].

    An image that cannot be read is reported, not raised, so that one bad
    file costs only itself.  Images of one cluster are solved together
    (:func:`pipeline.defense.reconstruct_with_bases`).
    """
    results, images, readable = [], [], []
    for index, item in zip(indices, items, strict=True):
        try:
            images.append(load_item(item, size=size, fit=fit))
            readable.append(index)
        except ImageReadError as err:
            results.append((index, 0, str(err)))
    if not images:
        return results
    reconstructions, n_iter, clusters = reconstruct_with_bases(
        np.stack(images), bases, options=options, batch_size=compute.batch_size,
        device=compute.device)
    for index, image, iterations, cluster in zip(readable, reconstructions, n_iter, clusters,
                                                 strict=True):
        write_image(store_path, int(index), image, int(iterations), int(cluster))
        results.append((int(index), int(iterations), None))
    return results


def reconstruct_dataset(
    client: Client,
    dataset: Dataset,
    *,
    bases: BasisSet,
    options: CSCOptions,
    compute: ComputeConfig = ComputeConfig(),
    store_path: Path,
    dtype: str = "uint8",
    attrs: dict | None = None,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool = True,
    stop_requested: Callable[[], bool] = lambda: False,
) -> RunSummary:
    """Reconstruct every image of ``dataset`` not yet done into the store at ``store_path``.

    ``bases`` (:func:`pipeline.basis.open_bases`) is sent once to every
    worker; each image is reconstructed with the basis of its cluster, and its
    record (files and checksums) goes into the store's settings.  Images that
    cannot be read are skipped and recorded (``strict`` stops at the first
    instead); a re-run does only what is left, and a second run on the same
    store while one is going is refused (:func:`pipeline.store.lock_store`).
    ``compute`` says where the solver runs and how many images a task takes.
    ``stop_requested`` is asked after each task: when it says True, the
    remaining tasks are cancelled and :class:`KeyboardInterrupt` is raised,
    every finished image kept.
    """
    started = time.perf_counter()
    store_path = Path(store_path).resolve()
    with lock_store(store_path):
        group = open_store(store_path, **_store_layout(dataset, bases, options, dtype),
                           labels=dataset.labels, attrs=attrs, overwrite=overwrite)
        return _reconstruct_pending(client, dataset, group, bases, store_path, options, compute,
                                    strict=strict, progress=progress,
                                    stop_requested=stop_requested, started=started)


def check_run_store(dataset: Dataset, *, bases: BasisSet, options: CSCOptions,
                    store_path: Path, dtype: str = "uint8", overwrite: bool = False) -> None:
    """Raise :class:`pipeline.store.StoreError` now if the run could not use its store.

    What :func:`reconstruct_dataset` would find when it opens the store, for
    the commands to check before they start any workers.
    """
    check_store(Path(store_path).resolve(), **_store_layout(dataset, bases, options, dtype),
                overwrite=overwrite)


def _store_layout(dataset: Dataset, bases: BasisSet, options: CSCOptions, dtype: str) -> dict:
    """The store's shape and the settings that determine its pixels."""
    size = dataset.side()
    settings = {
        "dataset": {"name": dataset.name, "image_size": size, "fit": dataset.fit},
        "basis": bases.record,
        "csc": options.as_dict(),
    }
    return dict(names=dataset.names, image_shape=(size, size, 3), dtype=dtype,
                settings=settings)


def _reconstruct_pending(client, dataset, group, bases, store_path, options, compute, *,
                         strict, progress, stop_requested, started) -> RunSummary:
    """Run the images not yet done; record failures and the summary in the store."""
    size = group["images"].shape[1]
    todo = pending(group)
    summary = RunSummary(store_path, len(dataset), len(dataset) - len(todo))
    if summary.done_before:
        log.info("resuming: %d of %d images already done", summary.done_before, len(dataset))
    task = dict(store_path=str(store_path), options=options, size=size, fit=dataset.fit,
                compute=compute)
    per_task = compute.images_per_task or _default_images_per_task(client, compute,
                                                                   options.solver, len(todo))
    blocks = [todo[i:i + per_task] for i in range(0, len(todo), per_task)]
    _run_tasks(client, dataset, blocks, bases, task, summary, strict=strict, progress=progress,
               stop_requested=stop_requested)
    summary.seconds = time.perf_counter() - started
    group.attrs.update({
        "failed": summary.failed,
        "summary": {"total": summary.total, "done": summary.done,
                    "failed": len(summary.failed), "seconds": round(summary.seconds, 2)},
    })
    return summary


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


def _run_tasks(client, dataset, blocks, bases, task, summary, *, strict, progress,
               stop_requested) -> None:
    """Submit one task per block of pending images, a bounded window at a time; tally."""
    # Unique keys per run: a re-run in the same client must not meet the
    # previous run's keys while the scheduler is still releasing them.
    run_id = uuid.uuid4().hex[:8]
    bases_future = client.scatter(bases, broadcast=True, hash=False)

    def submit(block):
        indices = [int(i) for i in block]
        return client.submit(reconstruct_task, indices, [dataset.items[i] for i in indices],
                             bases_future, key=f"reconstruct-{indices[0]}-{run_id}", **task)

    window = max(4, 2 * sum(client.nthreads().values()))
    queue = iter(blocks)
    running = as_completed([submit(b) for _, b in zip(range(window), queue, strict=False)])
    with tqdm(total=summary.total, initial=summary.done_before, unit="img",
              disable=not progress, desc="reconstruct") as bar:
        for future in running:
            results = future.result()
            future.release()
            for index, _, error in results:
                if error is None:
                    summary.done_now += 1
                    continue
                summary.failed[dataset.names[index]] = error
                log.warning("skipped %s", error)
                if strict:
                    client.cancel(list(running.futures))
                    raise StrictModeError(f"{error} (--strict stops at the first bad image)")
            bar.update(len(results))
            if stop_requested():
                client.cancel(list(running.futures))
                raise KeyboardInterrupt
            next_block = next(queue, None)
            if next_block is not None:
                running.add(submit(next_block))

"""The reconstruct flow: every pending image -> one task -> its own chunk in the store.

Each task reads one image where it runs (:func:`pipeline.datasets.load_item`),
reconstructs it (:func:`pipeline.csc.reconstruct_image`) and writes it
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

from distributed import Client, as_completed
from tqdm import tqdm

from pipeline.basis import BasisSet
from pipeline.clustering import assign
from pipeline.csc import CSCOptions, reconstruct_image
from pipeline.dae import encode, load_model
from pipeline.datasets import Dataset, ImageReadError, load_item
from pipeline.store import open_store, pending, write_image

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


def reconstruct_task(index, item, bases: BasisSet, *, store_path, options, size, fit):
    """Load, assign, reconstruct and store image ``index``; return (index, n_iter, error)."""
    try:
        image = load_item(item, size=size, fit=fit)
    except ImageReadError as err:
        return index, 0, str(err)
    cluster = 0
    if bases.stratified:  # image -> 64x64 -> encoder -> PCA -> nearest centroid
        latent = encode(load_model(bases.dae_weights), image[None])
        cluster = int(assign(latent, bases.clusters)[0])
    result, n_iter = reconstruct_image(image, bases.bases[cluster], options)
    write_image(store_path, index, result, n_iter, cluster)
    return index, n_iter, None


def reconstruct_dataset(
    client: Client,
    dataset: Dataset,
    *,
    bases: BasisSet,
    options: CSCOptions,
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
    instead); a re-run does only what is left.  ``stop_requested`` is asked
    after each image: when it says True, the remaining tasks are cancelled
    and :class:`KeyboardInterrupt` is raised, every finished image kept.
    """
    started = time.perf_counter()
    size = dataset.side()
    settings = {
        "dataset": {"name": dataset.name, "image_size": size, "fit": dataset.fit},
        "basis": bases.record,
        "csc": options.as_dict(),
    }
    store_path = Path(store_path).resolve()
    group = open_store(store_path, names=dataset.names, image_shape=(size, size, 3),
                       dtype=dtype, settings=settings, labels=dataset.labels,
                       attrs=attrs, overwrite=overwrite)
    todo = pending(group)
    summary = RunSummary(store_path, len(dataset), len(dataset) - len(todo))
    if summary.done_before:
        log.info("resuming: %d of %d images already done", summary.done_before, len(dataset))
    task = dict(store_path=str(store_path), options=options, size=size, fit=dataset.fit)
    _run_tasks(client, dataset, todo, bases, task, summary, strict=strict, progress=progress,
               stop_requested=stop_requested)
    summary.seconds = time.perf_counter() - started
    group.attrs.update({
        "failed": summary.failed,
        "summary": {"total": summary.total, "done": summary.done,
                    "failed": len(summary.failed), "seconds": round(summary.seconds, 2)},
    })
    return summary


def _run_tasks(client, dataset, todo, bases, task, summary, *, strict, progress,
               stop_requested) -> None:
    """Submit one task per pending image, a bounded window at a time; tally the results."""
    # Unique keys per run: a re-run in the same client must not meet the
    # previous run's keys while the scheduler is still releasing them.
    run_id = uuid.uuid4().hex[:8]
    bases_future = client.scatter(bases, broadcast=True, hash=False)

    def submit(index: int):
        return client.submit(reconstruct_task, int(index), dataset.items[index], bases_future,
                             key=f"reconstruct-{index}-{run_id}", **task)

    window = max(4, 4 * sum(client.nthreads().values()))
    queue = iter(todo)
    running = as_completed([submit(i) for _, i in zip(range(window), queue, strict=False)])
    with tqdm(total=summary.total, initial=summary.done_before, unit="img",
              disable=not progress, desc="reconstruct") as bar:
        for future in running:
            index, _, error = future.result()
            future.release()
            if error is None:
                summary.done_now += 1
            else:
                summary.failed[dataset.names[index]] = error
                log.warning("skipped %s", error)
                if strict:
                    client.cancel(list(running.futures))
                    raise StrictModeError(f"{error} (--strict stops at the first bad image)")
            bar.update()
            if stop_requested():
                client.cancel(list(running.futures))
                raise KeyboardInterrupt
            next_index = next(queue, None)
            if next_index is not None:
                running.add(submit(next_index))

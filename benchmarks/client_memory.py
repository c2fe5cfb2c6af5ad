"""The client's memory with a whole reconstruct job on the scheduler: 5,000 and 50,000 images.

Every task of a run is submitted at once (:mod:`flows.reconstruct`), so the
client holds one future per task and the scheduler holds the tasks.  This
starts a ``dask scheduler`` and 2 ``dask worker`` processes (so that the
scheduler's memory is not counted as the client's, as it would be with a
LocalCluster, whose scheduler lives in the client's process); for each
size, in one run, it builds a data set of that many photo tiles
(descriptions, not pixels), starts
:func:`flows.reconstruct.reconstruct_dataset` (8 images per task), and
samples the resident memory of the client and of the scheduler every 50 ms
until the scheduler has every task and 3 s have passed; then it stops the
run (as Ctrl-C would) and reports:

* the client's RSS before the data set is built, after it is built, and its
  peak while the whole job is pending; the scheduler's RSS before and at
  its peak;
* how many tasks the scheduler held, and the seconds the submission took.

Usage::

    python benchmarks/client_memory.py [--sizes 5000 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from flows.reconstruct import StoreTarget, reconstruct_dataset
from pipeline.basis import DEFAULT_BASIS, open_bases
from pipeline.options import CSCOptions
from pipeline.photos import photo_tiles
from pipeline.runtime import connect, disconnect
from pipeline.worker import pre_spawn_environ

HERE = Path(__file__).resolve().parent
MB = 2**20


def tasks_known(dask_scheduler) -> int:
    group = dask_scheduler.task_groups.get("reconstruct")
    return sum(group.states.values()) if group is not None else 0


def measure(client, scheduler: psutil.Process, size: int, folder: Path) -> dict:
    me = psutil.Process()
    before, scheduler_before = me.memory_info().rss, scheduler.memory_info().rss
    scheduler_peak = scheduler_before
    dataset = photo_tiles(size, tile=64, seed=1)
    built = me.memory_info().rss
    peak, known, started = built, 0, time.perf_counter()
    submitted_after = None
    stop = threading.Event()

    def sample():
        nonlocal peak, scheduler_peak
        while not stop.is_set():
            peak = max(peak, me.memory_info().rss)
            scheduler_peak = max(scheduler_peak, scheduler.memory_info().rss)
            time.sleep(0.05)

    def enough() -> bool:  # the whole job on the scheduler, then stop as Ctrl-C would
        nonlocal known, submitted_after
        known = client.run_on_scheduler(tasks_known)
        if known >= -(-size // 8) and submitted_after is None:
            submitted_after = time.perf_counter() - started
        return submitted_after is not None and time.perf_counter() - started > \
            submitted_after + 3

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        reconstruct_dataset(client, dataset, open_bases(DEFAULT_BASIS),
                            StoreTarget(folder / f"{size}.zarr"), options=CSCOptions(),
                            progress=False, stop_requested=enough)
    except KeyboardInterrupt:
        pass
    stop.set()
    sampler.join()
    return {"images": size, "tasks_on_scheduler": known,
            "submission_seconds": round(submitted_after or float("nan"), 2),
            "client_rss_mb_before": round(before / MB, 1),
            "client_rss_mb_with_dataset": round(built / MB, 1),
            "client_rss_mb_peak_pending": round(peak / MB, 1),
            "client_job_mb": round((peak - built) / MB, 1),
            "scheduler_rss_mb_before": round(scheduler_before / MB, 1),
            "scheduler_rss_mb_peak_pending": round(scheduler_peak / MB, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    args = parser.parse_args()
    address = "tcp://127.0.0.1:8799"
    env = {**os.environ, **pre_spawn_environ()}
    dask = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                              "--port", "8799", "--dashboard-address", "127.0.0.1:0"],
                             stderr=subprocess.DEVNULL)]
    time.sleep(3)
    dask += [subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads",
                               "1", "--host", "127.0.0.1", "--preload", "pipeline.worker"],
                              stderr=subprocess.DEVNULL, env=env) for _ in range(2)]
    rows = []
    try:
        client = connect(address)
        client.wait_for_workers(2, timeout=120)
        with tempfile.TemporaryDirectory() as folder:
            for size in args.sizes:
                rows.append(measure(client, psutil.Process(dask[0].pid), size, Path(folder)))
                print(rows[-1], flush=True)
                client.cancel(list(client.futures))
                time.sleep(15)  # the cancelled run's last tasks end, the scheduler forgets
        disconnect(client)
    finally:
        for process in dask:
            process.kill()
    (HERE / "results_client_memory.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

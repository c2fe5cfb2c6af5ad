"""Faults on a real deployment: a `dask scheduler` and two `dask worker` processes.

The commands run as their own processes against the scheduler's address, as
on a shared cluster; workers, the command and the scheduler are killed in the
middle of runs, and the store is compared with an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr
from helpers import (
    SLOW_SOLVES,
    finished,
    launch,
    overrides,
    wait_until_done,
    write_config,
    write_photos,
)
from helpers.dask_processes import DaskProcesses

from pipeline.basis import DEFAULT_BASIS

pytestmark = pytest.mark.slow

N = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 real photograph crops in two classes, a config for them, and an uninterrupted run."""
    root = tmp_path_factory.mktemp("faults")
    write_photos(root / "photos")
    write_config(root / "photos.yaml",
                 dataset={"source": "folder", "path": str(root / "photos"), "image_size": 32},
                 basis=str(DEFAULT_BASIS), compute={"images_per_task": 1},
                 store={"path": str(root / "photos.zarr")})
    with DaskProcesses(workers=2) as dask:
        finished(reconstruct(root, "full.zarr", dask.address))
    return root


def reconstruct(root: Path, store: str, address: str) -> subprocess.Popen:
    return launch("pipeline.reconstruct", str(root / "photos.yaml"), "--out", str(root / store),
                  "--scheduler", address, *overrides("csc", SLOW_SOLVES))


def images(store: Path) -> np.ndarray:
    return zarr.open_group(store, mode="r")["images"][:]


def test_a_killed_worker_loses_nothing(folder):
    with DaskProcesses(workers=2) as dask:
        run = reconstruct(folder, "worker.zarr", dask.address)
        wait_until_done(folder / "worker.zarr", 3)
        dask.kill_worker_running("reconstruct-")
        output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output
    assert f"{N} of {N} images done" in output and f"({N} this run)" in output
    group = zarr.open_group(folder / "worker.zarr", mode="r")
    assert group["done"][:].all() and group.attrs["summary"]["done"] == N
    np.testing.assert_array_equal(group["images"][:], images(folder / "full.zarr"))


def test_a_killed_command_resumes_only_the_missing_images(folder):
    store = folder / "client.zarr"
    with DaskProcesses(workers=2) as dask:
        run = reconstruct(folder, "client.zarr", dask.address)
        wait_until_done(store, 3)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        # Whatever is marked done has its data: each done image equals the full run's.
        done = zarr.open_group(store, mode="r")["done"][:]
        assert 3 <= done.sum() < N
        np.testing.assert_array_equal(images(store)[done], images(folder / "full.zarr")[done])

        again = reconstruct(folder, "client.zarr", dask.address)
        output = again.communicate(timeout=300)[0]
    assert again.returncode == 0, output
    resumed = int(output.split("resuming: ")[1].split(" of")[0])
    assert resumed >= done.sum()  # tasks of the killed command may have finished since
    assert f"{N} of {N} images done" in output and f"({N - resumed} this run)" in output
    np.testing.assert_array_equal(images(store), images(folder / "full.zarr"))


def test_ctrl_c_on_the_command_stops_it_and_says_how_to_resume(folder):
    with DaskProcesses(workers=2) as dask:
        run = reconstruct(folder, "interrupted.zarr", dask.address)
        wait_until_done(folder / "interrupted.zarr", 1)
        os.kill(run.pid, signal.SIGINT)
        output = run.communicate(timeout=120)[0]
        assert run.returncode == 130, output
        assert "run the same command again to resume" in output and "Traceback" not in output
        with dask.client() as client:  # the scheduler and its workers are still there
            assert len(client.scheduler_info()["workers"]) == 2


def test_two_runs_on_one_store_at_once_one_is_refused(folder):
    with DaskProcesses(workers=2) as dask:
        runs = [reconstruct(folder, "shared.zarr", dask.address) for _ in range(2)]
        outputs = [run.communicate(timeout=300)[0] for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 2], outputs
    refused = outputs[[run.returncode for run in runs].index(2)]
    assert "another run is writing to this store" in refused and "Traceback" not in refused
    np.testing.assert_array_equal(images(folder / "shared.zarr"), images(folder / "full.zarr"))


def test_losing_the_scheduler_is_a_clear_error_in_bounded_time(folder):
    with DaskProcesses(workers=2) as dask:
        run = reconstruct(folder, "orphan.zarr", dask.address)
        wait_until_done(folder / "orphan.zarr", 1)
        os.killpg(dask.scheduler.pid, signal.SIGKILL)
        lost = time.monotonic()
        output = run.communicate(timeout=120)[0]
        seconds = time.monotonic() - lost
    assert run.returncode == 1, output
    assert "run failed: lost the connection to the Dask scheduler" in output
    assert "run the same command again to resume" in output and "Traceback" not in output
    assert seconds < 30


def test_a_worker_killed_while_learning_still_gives_the_same_basis_set(tmp_path):
    def learn(out: Path, address: str) -> subprocess.Popen:
        return launch("pipeline.learn", "--clusters", "2", "--out", str(out), "--filters", "8",
                      "--filter-size", "6", "--iterations", "30", "--dae-epochs", "2",
                      "--max-images", "64", "--scheduler", address)

    with DaskProcesses(workers=2) as dask:
        whole = learn(tmp_path / "whole", dask.address)
        assert whole.wait(timeout=300) == 0
        hit = learn(tmp_path / "hit", dask.address)
        dask.kill_worker_running("_learn_cluster")
        output = hit.communicate(timeout=300)[0]
    assert hit.returncode == 0, output
    files = [json.loads((tmp_path / s / "manifest.json").read_text())["files"]
             for s in ("whole", "hit")]
    assert files[0] == files[1]  # every file, by its SHA-256


def test_deployment_listens_on_localhost_only():
    with DaskProcesses(workers=2) as dask:
        processes = [psutil.Process(p.pid) for p in [dask.scheduler, *dask.workers]]
        processes += [c for p in processes for c in p.children(recursive=True)]
        listening = {c.laddr.ip for p in processes for c in p.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}

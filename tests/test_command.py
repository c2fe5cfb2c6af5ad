"""`python -m pipeline.reconstruct` end to end: real LocalClusters, real stores.

These start a LocalCluster of two workers per run (threads in the command's
process for these small data sets, worker processes where asked), so they
are marked slow; CI runs them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import (
    RUNTIME,
    SLOW_SOLVES,
    finished,
    launch,
    wait_until_done,
    write_config,
    write_photos,
)

from pipeline.basis import DEFAULT_BASIS
from pipeline.reconstruct import main

pytestmark = pytest.mark.slow


def photos_config(folder: Path, images: Path, **csc) -> Path:
    """A config of the photograph folder at 32x32, one image per task (so that a run can
    stop between images), and its store beside it."""
    return write_config(folder / "photos.yaml",
                        dataset={"source": "folder", "path": str(images), "image_size": 32,
                                 "fit": "center_crop"},
                        basis=str(DEFAULT_BASIS), csc={"max_iter": 200, **csc},
                        compute={"images_per_task": 1},
                        store={"path": str(folder / "photos.zarr")})


@pytest.fixture
def photos(tmp_path):
    return write_photos(tmp_path / "photos")


def command(*args: str, cwd: Path):
    return launch("pipeline.reconstruct", *args, *RUNTIME, cwd=cwd)


def test_command_end_to_end_and_second_run_does_nothing(photos, tmp_path):
    config = photos_config(tmp_path, photos)
    output = finished(command(str(config), "--export", str(tmp_path / "png"), cwd=tmp_path))
    assert "Dask dashboard: http://127.0.0.1:" in output
    assert "12 of 12 images done" in output
    group = zarr.open_group(tmp_path / "photos.zarr", mode="r")
    assert group["images"].shape == (12, 32, 32, 3) and group["images"].chunks == (1, 32, 32, 3)
    assert group["done"][:].all() and (group["n_iter"][:] > 0).all()
    assert group["names"][0] == "cats/photo_01.jpg"
    assert group["labels"][:].tolist() == [0] * 6 + [1] * 6
    assert group.attrs["config"]["csc"]["lmbda"] == 0.2
    assert len(list((tmp_path / "png").rglob("*.png"))) == 12

    output = finished(command(str(config), cwd=tmp_path))
    assert "12 of 12 images done" in output and "(0 this run)" in output


def test_killed_run_resumes_to_the_same_array(photos, tmp_path):
    config = photos_config(tmp_path, photos, **SLOW_SOLVES)
    full = command(str(config), "--out", str(tmp_path / "full.zarr"), cwd=tmp_path)
    assert full.wait(timeout=300) == 0

    store = tmp_path / "killed.zarr"
    victim = command(str(config), "--out", str(store), cwd=tmp_path)
    wait_until_done(store, 3)
    os.killpg(victim.pid, signal.SIGKILL)  # the client and its worker processes, mid-run
    victim.wait()
    done_at_kill = int(zarr.open_group(store, mode="r")["done"][:].sum())
    assert 3 <= done_at_kill < 12

    output = finished(command(str(config), "--out", str(store), cwd=tmp_path))
    assert f"resuming: {done_at_kill} of 12 images already done" in output
    expected = zarr.open_group(tmp_path / "full.zarr", mode="r")["images"][:]
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["images"][:], expected)


def test_a_small_job_runs_on_threads_and_writes_what_processes_write(photos, tmp_path):
    config = photos_config(tmp_path, photos, max_iter=20)
    said = {}
    for kind in ("auto", "processes"):
        said[kind] = finished(command(str(config), "--out", str(tmp_path / f"{kind}.zarr"),
                                      "--local-workers", kind, cwd=tmp_path))
    assert "(LocalCluster of 2 worker threads in this process)" in said["auto"]
    assert "(LocalCluster of 2 worker processes)" in said["processes"]
    threads, processes = (zarr.open_group(tmp_path / f"{kind}.zarr", mode="r")["images"][:]
                          for kind in ("auto", "processes"))
    np.testing.assert_array_equal(threads, processes)


def test_runs_on_an_existing_scheduler(photos, tmp_path, capsys):
    from distributed import LocalCluster

    config = photos_config(tmp_path, photos, max_iter=3)
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        assert main([str(config), "--scheduler", cluster.scheduler_address]) == 0
        assert len(cluster.workers) == 1  # the command left the cluster it was given alone
    err = capsys.readouterr().err
    assert "Dask dashboard: http://127.0.0.1:" in err and "12 of 12 images done" in err
    assert f"(scheduler {cluster.scheduler_address})" in err
    assert zarr.open_group(tmp_path / "photos.zarr", mode="r")["done"][:].all()


def test_a_failing_run_says_so_and_how_to_resume(photos, tmp_path,
                                                  capsys):
    config = photos_config(tmp_path, photos)
    # 4x4 images cannot be coded with 8x8 filters: every task fails on the workers
    assert main([str(config), "--set", "dataset.image_size=4", *RUNTIME]) == 1
    err = capsys.readouterr().err
    assert "run failed: ValueError: image (4, 4) is smaller than the filters (8, 8)" in err
    assert "run the same command again to resume" in err and "Traceback" not in err


def test_learn_then_reconstruct_with_the_set(tmp_path, capsys):
    from pipeline.learn import main as learn

    out = tmp_path / "set3"
    assert learn(["sample", "--clusters", "3", "--out", str(out), "--filters", "8",
                  "--filter-size", "6", "--iterations", "3", "--set",
                  "learn.dictionary.batch_size=4", "--dae-epochs", "2", *RUNTIME]) == 0
    err = capsys.readouterr().err
    assert f"wrote basis set {out}" in err
    assert f"reconstruct with it: python -m pipeline.reconstruct sample --basis-set {out}" in err
    assert "held-out images (of sources no stage saw), PSNR (dB) and code density" in err
    assert "      all      35" in err
    for plot in ("filters.png", "examples.png", "latents.png", "objective.png"):
        assert (out / plot).stat().st_size > 1000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["control"] == "control/8_p6_lm0.2.npy" and (out / manifest["control"]).is_file()
    assert manifest["held_out"][-1]["cluster"] == "all" and len(manifest["held_out_images"]) == 35
    assert (tmp_path / "set3.work" / "latents.zarr").is_dir()  # beside the set, not in it
    assert learn(["sample", "--clusters", "3", "--out", str(out)]) == 2  # never overwrites
    assert "a basis set is already there" in capsys.readouterr().err

    store = tmp_path / "sample.zarr"
    assert main(["sample", "--basis-set", str(out), "--set", "csc.max_iter=3", "--out",
                 str(store), *RUNTIME]) == 0
    group = zarr.open_group(store, mode="r")
    trained = ~np.isin(group["names"][:], manifest["held_out_images"])
    sizes = np.bincount(group["cluster"][:][trained], minlength=3)
    assert sizes.tolist() == manifest["cluster_sizes"]  # each image in its own cluster
    assert group.attrs["settings"]["basis"]["set"] == "set3"


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(photos, tmp_path):
    config = photos_config(tmp_path, photos, **SLOW_SOLVES)
    store = tmp_path / "photos.zarr"
    run = command(str(config), cwd=tmp_path)
    wait_until_done(store, 1)
    os.killpg(run.pid, signal.SIGINT)  # as Ctrl-C in a terminal: client and workers
    output = run.communicate(timeout=120)[0]
    assert run.returncode == 130, output
    assert "interrupted: images finished so far are kept in" in output
    assert "run the same command again to resume" in output and "Traceback" not in output
    done = int(zarr.open_group(store, mode="r")["done"][:].sum())
    assert 1 <= done < 12


def test_unreachable_scheduler_is_a_sentence_not_a_hang(tmp_path, monkeypatch, capsys):
    import socket

    from pipeline import runtime

    monkeypatch.setattr(runtime, "SCHEDULER_TIMEOUT", "2s")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    assert main(["sample", "--scheduler", address, "--out", str(tmp_path / "s.zarr")]) == 2
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert f"cannot reach the Dask scheduler at {address}" in err and "Traceback" not in err

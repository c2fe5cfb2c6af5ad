"""Data and stores in object storage: a real S3-protocol server (moto's), real Dask processes.

The scheduler and two workers run as `dask` processes, each worker in its
own empty working directory, so that the only thing they share with the
command is the object store.  The commands read a folder of photographs
from the bucket and write a store into it, and the result is compared,
object by object, with a run on local files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import SLOW_SOLVES, finished, launch, overrides, write_photos
from helpers.dask_processes import DaskProcesses
from helpers.s3_server import ACCESS_KEY, SECRET_KEY, S3Server

from pipeline.basis import DEFAULT_BASIS
from pipeline.config import ConfigError, load_config
from pipeline.lease import LeaseError, hold_lease
from pipeline.storage import StorageOptions

N = 12


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The server, the 12 photographs in ``s3://pipeline-test/photos`` and on disk, and a
    config of each."""
    root = tmp_path_factory.mktemp("s3")
    write_photos(root / "photos")
    with S3Server() as server:
        server.fs.put(str(root / "photos") + "/", f"{server.bucket}/photos/", recursive=True)
        for name, path in (("local", root / "photos"), ("remote", server.url("photos"))):
            (root / f"{name}.yaml").write_text(
                f"dataset:\n  source: folder\n  path: {path}\n  image_size: 32\n"
                f"basis: {DEFAULT_BASIS}\ncompute:\n  images_per_task: 1\n"
                f"storage_options:\n  endpoint_url: {server.endpoint}\n")
        server.root = root
        yield server


def reconstruct(s3: S3Server, config: str, out: str, *args: str) -> subprocess.Popen:
    return launch("pipeline.reconstruct", str(s3.root / f"{config}.yaml"), "--out", out,
                  *overrides("csc", SLOW_SOLVES), *args)


def done_count(s3: S3Server, store: str) -> int:
    try:
        return int(zarr.open_group(s3.url(store), mode="r", storage_options={
            "endpoint_url": s3.endpoint})["done"][:].sum())
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return 0


def wait_until_done(s3: S3Server, store: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while done_count(s3, store) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{store}: fewer than {count} images done after {timeout} s")
        time.sleep(0.2)


def same_objects(s3: S3Server, store: str, local: Path) -> None:
    """Every object of the store in the bucket equals the local store's file of that name,
    byte for byte; only the group's zarr.json differs (it records the config's paths)."""
    remote = s3.objects(store)
    files = {p.relative_to(local).as_posix(): p.read_bytes()
             for p in local.rglob("*") if p.is_file()}
    assert set(remote) == set(files)
    differing = sorted(name for name in files if remote[name] != files[name])
    assert differing == ["zarr.json"]


@pytest.fixture(scope="module")
def local_run(s3):
    """The reference: the same photographs reconstructed from local files to a local store."""
    finished(reconstruct(s3, "local", str(s3.root / "local.zarr"), "--workers", "2"))
    return s3.root / "local.zarr"


@pytest.mark.slow
def test_a_bucket_to_bucket_run_on_separate_workers_equals_the_local_run(s3, local_run):
    with DaskProcesses(workers=2, separate_folders=True, log_folder=s3.root) as dask:
        run = reconstruct(s3, "remote", s3.url("out/whole.zarr"), "--scheduler", dask.address,
                          "-v")  # the most verbose logs must not carry credentials either
        output = finished(run)
    assert f"{N} of {N} images done" in output
    same_objects(s3, "out/whole.zarr", local_run)
    assert not s3.fs.exists(f"{s3.bucket}/out/whole.zarr.lease")  # released at the end
    # Credentials are never written: not in any object, the output, or the workers' logs.
    logs = "".join(p.read_text() for p in s3.root.glob("*.log"))
    for text in [output, logs, *(b.decode("latin-1") for b in s3.objects("out").values())]:
        assert ACCESS_KEY not in text and SECRET_KEY not in text


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_a_killed_command_resumes(s3, local_run):
    store = "out/faults.zarr"
    with DaskProcesses(workers=2, separate_folders=True) as dask:
        run = reconstruct(s3, "remote", s3.url(store), "--scheduler", dask.address)
        wait_until_done(s3, store, 2)
        dask.kill_worker_running("reconstruct-")
        wait_until_done(s3, store, 4)
        os.killpg(run.pid, signal.SIGKILL)  # the command dies: its lease stays behind
        run.wait()
        done = done_count(s3, store)
        assert 4 <= done < N
        again = finished(reconstruct(s3, "remote", s3.url(store), "--scheduler",
                                     dask.address))
    # A dead process's lease on this machine is taken over at once.
    assert "resuming: " in again and f"{N} of {N} images done" in again
    resumed = int(again.split("resuming: ")[1].split(" of")[0])
    assert resumed >= done and f"({N - resumed} this run)" in again
    group = zarr.open_group(s3.url(store), mode="r",
                            storage_options={"endpoint_url": s3.endpoint})
    np.testing.assert_array_equal(group["images"][:],
                                  zarr.open_group(local_run, mode="r")["images"][:])


@pytest.mark.slow
def test_two_runs_on_one_bucket_store_one_is_refused(s3, local_run):
    store = "out/shared.zarr"
    first = reconstruct(s3, "remote", s3.url(store), "--workers", "1")
    wait_until_done(s3, store, 1)
    second = reconstruct(s3, "remote", s3.url(store), "--workers", "1")
    refused = second.communicate(timeout=120)[0]
    assert second.returncode == 2, refused
    assert f"another run is writing to it (it holds {s3.url(store)}.lease: process " \
        f"{first.pid} on {socket.gethostname()}" in refused
    assert "Traceback" not in refused
    finished(first)
    np.testing.assert_array_equal(
        zarr.open_group(s3.url(store), mode="r",
                        storage_options={"endpoint_url": s3.endpoint})["images"][:],
        zarr.open_group(local_run, mode="r")["images"][:])


def test_a_lease_of_another_machine_blocks_until_it_expires(s3):
    storage = StorageOptions(endpoint_url=s3.endpoint)
    url = s3.url("leases/other.zarr.lease")
    foreign = {"host": "elsewhere", "pid": 1, "token": "t", "expires": time.time() + 30}
    s3.fs.pipe_file(f"{s3.bucket}/leases/other.zarr.lease", json.dumps(foreign).encode())
    with pytest.raises(LeaseError, match="process 1 on elsewhere, until"):
        with hold_lease(url, storage, what="other.zarr"):
            pass
    foreign["expires"] = time.time() - 1  # that run died a while ago
    s3.fs.pipe_file(f"{s3.bucket}/leases/other.zarr.lease", json.dumps(foreign).encode())
    with hold_lease(url, storage, what="other.zarr") as lease:
        held = json.loads(s3.fs.cat_file(f"{s3.bucket}/leases/other.zarr.lease"))
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
        assert lease.lost is None
    assert not s3.fs.exists(f"{s3.bucket}/leases/other.zarr.lease")


def test_a_lease_taken_over_is_noticed_at_the_next_renewal(s3):
    storage = StorageOptions(endpoint_url=s3.endpoint)
    key = f"{s3.bucket}/leases/taken.zarr.lease"
    with hold_lease(s3.url("leases/taken.zarr.lease"), storage, seconds=0.6) as lease:
        s3.fs.pipe_file(key, json.dumps({"host": "elsewhere", "pid": 2, "token": "u",
                                         "expires": time.time() + 60}).encode())
        deadline = time.monotonic() + 10
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "another run took its lease over (process 2 on elsewhere" in lease.lost
    assert s3.fs.exists(key)  # the new holder's lease is left alone


def test_a_basis_set_and_a_data_set_read_from_the_bucket(s3):
    from pipeline.basis import STRATIFIED_SET, open_bases
    from pipeline.images import Sizing
    from pipeline.sources import image_folder

    storage = StorageOptions(endpoint_url=s3.endpoint)
    s3.fs.put(str(STRATIFIED_SET) + "/", f"{s3.bucket}/bases/photos-k10/", recursive=True)
    remote, local = open_bases(s3.url("bases/photos-k10"), storage), open_bases(
        STRATIFIED_SET)
    assert remote.record == local.record and len(remote.bases) == 10
    for a, b in zip(remote.bases, local.bases, strict=True):
        np.testing.assert_array_equal(a, b)
    dataset = image_folder(s3.url("photos"), sizing=Sizing(32), storage=storage)
    assert len(dataset) == N and dataset.classes == ["cats", "cups"]
    assert dataset.load(0).shape == (32, 32, 3)
    s3.fs.pipe_file(f"{s3.bucket}/bases/broken/manifest.json", b"{}")
    from pipeline.basis import BasisError

    with pytest.raises(BasisError, match=f"{s3.url('bases/broken/manifest.json')}: not a"):
        open_bases(s3.url("bases/broken"), storage)


def test_credentials_in_a_config_are_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("storage_options:\n  endpoint_url: http://127.0.0.1:9\n"
                      f"  secret: {SECRET_KEY}\n")
    with pytest.raises(ConfigError, match="storage_options.secret: credentials are never "
                       "read from a config") as err:
        load_config(str(config))
    assert SECRET_KEY not in str(err.value)


def test_npy_npz_and_zarr_data_sets_read_from_the_bucket(s3, tmp_path):
    """A .npy is read image by image with range requests; .npz whole; a Zarr store by chunks."""
    from pipeline.datasets import DatasetError
    from pipeline.photos import sample
    from pipeline.sources import array_file, zarr_images

    storage = StorageOptions(endpoint_url=s3.endpoint)
    pixels = np.stack(sample().items[:5])  # (5, 64, 64, 3) uint8
    np.save(tmp_path / "five.npy", pixels)
    np.savez(tmp_path / "five.npz", images=pixels, labels=np.arange(5))
    zarr.save_array(str(tmp_path / "five.zarr"), pixels, zarr_format=3)
    for name in ("five.npy", "five.npz"):
        s3.fs.put_file(str(tmp_path / name), f"{s3.bucket}/arrays/{name}")
    s3.fs.put(str(tmp_path / "five.zarr") + "/", f"{s3.bucket}/arrays/five.zarr/", recursive=True)
    for dataset in (array_file(s3.url("arrays/five.npy"), storage=storage),
                    array_file(s3.url("arrays/five.npz"), storage=storage),
                    zarr_images(s3.url("arrays/five.zarr"), storage=storage)):
        assert len(dataset) == 5
        for i in (0, 4):
            np.testing.assert_array_equal(dataset.load(i), pixels[i].astype(np.float32) / 255)
    with pytest.raises(DatasetError, match="arrays/missing.npy: array file not found"):
        array_file(s3.url("arrays/missing.npy"), storage=storage)


def test_a_run_whose_lease_is_taken_over_stops_and_keeps_its_images(s3, monkeypatch):
    """Another run takes the lease (as after a network partition longer than the lease):
    this run notices at its next renewal, stops with a clear error, keeps what it wrote."""
    import threading

    from flows.reconstruct import LeaseLostError, StoreTarget, reconstruct_dataset
    from pipeline.basis import open_bases
    from pipeline.config import ComputeConfig
    from pipeline.images import Sizing
    from pipeline.options import CSCOptions
    from pipeline.runtime import connect
    from pipeline.sources import image_folder

    monkeypatch.setattr("pipeline.lease.LEASE_SECONDS", 1.5)  # renewed every 0.5 s
    storage = StorageOptions(endpoint_url=s3.endpoint)
    dataset = image_folder(s3.url("photos"), sizing=Sizing(32), storage=storage)
    store = "out/taken.zarr"

    def take_over():
        wait_until_done(s3, store, 2)
        s3.fs.pipe_file(f"{s3.bucket}/{store}.lease", json.dumps(
            {"host": "elsewhere", "pid": 3, "token": "v", "expires": time.time() + 60}).encode())

    thief = threading.Thread(target=take_over)
    client = connect(n_workers=1, processes=False, dashboard_address="127.0.0.1:0")
    try:
        thief.start()
        with pytest.raises(LeaseLostError, match="another run took its lease over "
                           r"\(process 3 on elsewhere.*finished images are kept"):
            reconstruct_dataset(client, dataset, open_bases(DEFAULT_BASIS),
                                StoreTarget(s3.url(store), storage=storage),
                                options=CSCOptions(**SLOW_SOLVES),
                                compute=ComputeConfig(images_per_task=1), progress=False)
    finally:
        thief.join()
        client.close()
        client.cluster.close()
    assert 2 <= done_count(s3, store) < N
    assert json.loads(s3.fs.cat_file(f"{s3.bucket}/{store}.lease"))["host"] == "elsewhere"


@pytest.mark.slow
def test_a_lease_that_cannot_be_renewed_is_given_up_before_it_expires(s3):
    """A network failure does not kill the renewal silently: once two thirds of the lease's
    time have passed without a renewal, the run is told to stop."""
    from pipeline.lease import Lease

    unreachable = StorageOptions(endpoint_url="http://127.0.0.1:9")  # nothing listens there
    # The client retries for about 20 s before it gives up on an attempt.
    lease = Lease(s3.url("leases/cut.zarr.lease"), unreachable, "t", '"etag"', seconds=120,
                  renewed=time.time())
    lease.renew()
    assert lease.lost is None  # less than 80 s without a renewal: try again later
    lease.seconds = 30  # now two thirds of its time have passed
    lease.renew()
    assert re.match(r"it could not renew its lease for \d+ s \(EndpointConnectionError\), "
                    "and another run may take it over", lease.lost)


def test_object_storage_mistakes_are_one_sentence_before_any_worker(s3, tmp_path, capsys):
    from pipeline.reconstruct import main

    def run(*settings: str) -> str:
        assert main([str(s3.root / "remote.yaml"), *(a for s in settings for a in ("--set", s)),
                     "--workers", "1", "--dashboard-address", "127.0.0.1:0"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "Dask dashboard" not in err
        return err

    assert "s3://pipeline-test: a store must be a folder inside the bucket" in run(
        "store.path=s3://pipeline-test/")
    assert "s3://no-such-bucket/out.zarr: its bucket 'no-such-bucket' does not exist" in run(
        "store.path=s3://no-such-bucket/out.zarr")
    assert "cannot reach the object store at http://127.0.0.1:9 (EndpointConnectionError)" \
        in run("storage_options.endpoint_url=http://127.0.0.1:9")
    assert "endpoint_url must start with http:// or https://" in run(
        f"storage_options.endpoint_url={s3.endpoint[len('http://'):]}")
    assert "export must be a local folder, got 's3://pipeline-test/png'" in run(
        "export=s3://pipeline-test/png")
    assert "s3://no-such-bucket/photos: its bucket does not exist" in run(
        "dataset.path=s3://no-such-bucket/photos")


def test_a_file_url_is_a_local_path(s3):
    from pipeline.config import DatasetConfig
    from pipeline.sources import open_dataset

    config = DatasetConfig(source="folder", path=f"file://{s3.root / 'photos'}", image_size=32)
    dataset = open_dataset(config, "photos")
    assert len(dataset) == N and dataset.classes == ["cats", "cups"]

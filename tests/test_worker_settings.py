"""The project's worker settings reach every worker: `dask worker --preload pipeline.worker`,
the shipped Dask config file through DASK_CONFIG, the plugin a command registers, the
LocalCluster.

The slow tests run a real `dask scheduler` and `dask worker` (under its nanny, which sets
MALLOC_TRIM_THRESHOLD_=65536 unless told otherwise) and look inside the worker process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import dask
import pytest
import yaml
from helpers.dask_processes import DaskProcesses

import pipeline.worker
from pipeline.runtime import WORKER_MALLOC, connect, disconnect, local_cluster_config
from pipeline.worker import CONFIG_FILE, STAGE_MODULES, set_malloc

GLIBC = pipeline.worker._glibc() is not None


def settings_of_the_worker(address: str) -> tuple[dict, dict]:
    """(pipeline.worker.applied(), what the settings are) in the one worker, asked by a plain
    Dask client that registers nothing."""
    from distributed import Client  # noqa: PLC0415

    def inside_worker() -> dict:  # defined here so that it travels by value
        import ctypes  # noqa: PLC0415

        import numpy as np  # noqa: PLC0415
        import sporco.fft  # noqa: PLC0415
        import torch  # noqa: PLC0415

        found = {"torch_threads": torch.get_num_threads(),
                 "fft_threads": sporco.fft.pyfftw_threads,
                 "environ": {k: v for k, v in os.environ.items()
                             if k.startswith(("MALLOC_", "OMP_", "MKL_", "OPENBLAS_"))},
                 "modules": sorted(sys.modules)}
        try:  # does a 1 MiB array (a solver temporary at 64x64) come from a fresh mmap?
            class MallInfo2(ctypes.Structure):
                _fields_ = [(name, ctypes.c_size_t) for name in (
                    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                    "uordblks", "fordblks", "keepcost")]

            libc = ctypes.CDLL(None)
            libc.mallinfo2.restype = MallInfo2
            before = libc.mallinfo2().hblkhd
            block = np.ones(2**17)  # noqa: F841 (held while measuring)
            found["mmapped_1mib"] = libc.mallinfo2().hblkhd > before
        except (AttributeError, OSError):  # not glibc, or glibc older than 2.33
            found["mmapped_1mib"] = None
        return found

    with Client(address, timeout="30s") as client:
        [record] = client.run(pipeline.worker.applied).values()
        [found] = client.run(inside_worker).values()
    return record, found


def assert_applied(record: dict, found: dict, by: list[str]) -> None:
    assert record["by"] == by
    assert record["torch_threads"] == found["torch_threads"] == 1
    assert record["fft_threads"] == found["fft_threads"] == 1
    assert set(record["stages"]) == set(STAGE_MODULES) <= set(found["modules"])
    if GLIBC:
        assert record["malloc"] == WORKER_MALLOC
        assert found["mmapped_1mib"] in (False, None)
    else:
        assert record["malloc"] is None


def test_the_shipped_config_file_is_a_dask_config_with_the_settings():
    where = subprocess.run([sys.executable, "-m", "pipeline.worker"], capture_output=True,
                           text=True, check=True)
    assert where.stdout.strip() == str(CONFIG_FILE) and CONFIG_FILE.is_file()
    config = yaml.safe_load(CONFIG_FILE.read_text())["distributed"]
    assert config["worker"]["preload"] == ["pipeline.worker"]
    environ = config["nanny"]["pre-spawn-environ"]
    assert {k: environ[k] for k in WORKER_MALLOC} == WORKER_MALLOC
    assert WORKER_MALLOC["MALLOC_TRIM_THRESHOLD_"] > 65536  # not Dask's default
    assert all(environ[f"{name}_NUM_THREADS"] == 1 for name in ("OMP", "MKL", "OPENBLAS"))


def test_the_local_cluster_config_adds_the_file_to_the_users_config():
    with dask.config.set({"distributed.worker.preload": ["mine"],
                          "distributed.nanny.pre-spawn-environ.MINE": "1"}):
        config = local_cluster_config()["distributed"]
        assert config["worker"]["preload"] == ["mine", "pipeline.worker"]
        environ = config["nanny"]["pre-spawn-environ"]
        assert environ["MINE"] == "1"
        assert environ["MALLOC_TRIM_THRESHOLD_"] == WORKER_MALLOC["MALLOC_TRIM_THRESHOLD_"]
        assert config["scheduler"] == dask.config.get("distributed.scheduler")  # untouched


def test_malloc_settings_do_nothing_quietly_without_glibc(monkeypatch):
    monkeypatch.setattr(pipeline.worker, "_glibc", lambda: None)
    assert set_malloc(WORKER_MALLOC) is None


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_malloc_settings_are_accepted_by_glibc():
    assert set_malloc(WORKER_MALLOC) == WORKER_MALLOC


@pytest.mark.slow
def test_dask_worker_with_the_preload_has_the_settings(tmp_path):
    # The nanny's own environment, as a user's: Dask's MALLOC_TRIM_THRESHOLD_=65536.
    with DaskProcesses(workers=1, log_folder=tmp_path, worker_args=["--preload",
                       "pipeline.worker"], worker_env={}) as processes:
        record, found = settings_of_the_worker(processes.address)
    assert found["environ"]["MALLOC_TRIM_THRESHOLD_"] == "65536"  # mallopt did the work
    assert_applied(record, found, by=["preload"])


@pytest.mark.slow
def test_dask_worker_without_it_gets_the_settings_when_a_command_connects(tmp_path):
    with DaskProcesses(workers=1, log_folder=tmp_path, worker_env={}) as processes:
        record, found = settings_of_the_worker(processes.address)
        assert record == {}
        if found["mmapped_1mib"] is not None:
            assert found["mmapped_1mib"]  # what the nanny's default does to the solver
        client = connect(processes.address)
        disconnect(client)
        record, found = settings_of_the_worker(processes.address)
    assert_applied(record, found, by=["plugin"])


@pytest.mark.slow
def test_dask_config_gives_the_nanny_the_environment_and_the_preload(tmp_path):
    with DaskProcesses(workers=1, log_folder=tmp_path,
                       worker_env={"DASK_CONFIG": str(CONFIG_FILE)}) as processes:
        record, found = settings_of_the_worker(processes.address)
    expected = {k: str(v) for k, v in yaml.safe_load(CONFIG_FILE.read_text())
                ["distributed"]["nanny"]["pre-spawn-environ"].items()}
    assert {k: found["environ"].get(k) for k in expected} == expected
    assert_applied(record, found, by=["preload"])


@pytest.mark.slow
def test_the_local_cluster_takes_its_settings_from_the_same_file():
    client = connect(n_workers=1, dashboard_address="127.0.0.1:0")
    try:
        [record] = client.run(pipeline.worker.applied).values()
        [environ] = client.run(lambda: dict(os.environ)).values()
    finally:
        disconnect(client)
    assert record["by"] == ["preload", "plugin"]
    assert record["torch_threads"] == record["fft_threads"] == 1
    assert {k: environ[k] for k in WORKER_MALLOC} == {k: str(v) for k, v in WORKER_MALLOC.items()}

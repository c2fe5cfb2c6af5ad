"""The project's settings for a Dask worker process, wherever the worker runs.

A worker process of this project should run one solver thread (PyTorch's and
sporco's FFTs), use glibc's malloc with thresholds that keep the solver's
temporaries off ``mmap``, and have the stages imported before its first
task.  :func:`apply_worker_settings` does all of it in the process that calls
it, and three routes call it:

- ``dask worker tcp://host:8786 --preload pipeline.worker``: Dask imports this
  module in each worker process as it starts and calls :func:`dask_setup`;
- the Dask config file shipped beside this module, ``dask-worker.yaml``
  (``python -m pipeline.worker`` prints its path), used as
  ``DASK_CONFIG=<that file> dask worker ...`` or copied into ``~/.config/dask``:
  it names the preload and gives the nanny the environment to start worker
  processes with (the malloc thresholds, one OpenMP/MKL/OpenBLAS thread);
  the LocalCluster of :mod:`pipeline.runtime` is started with the same file;
- :class:`pipeline.runtime.SolverThreads`, the plugin every command registers
  when it connects, so workers started without either still get the settings
  before the command's first task.

Applying them twice costs nothing.  What was applied is kept, for a test or a
curious operator, in :func:`applied` (``client.run(pipeline.worker.applied)``).

The malloc thresholds matter most: Dask's nanny starts workers with
``MALLOC_TRIM_THRESHOLD_=65536``, which also pins glibc's mmap threshold at
128 KiB, and the 64x64 solve then took about 4x as long
(``benchmarks/README.md``).  glibc reads its ``MALLOC_*`` variables only when
a process starts, so inside a running worker the same values are set through
``mallopt``; on a C library that is not glibc nothing is done.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import ctypes
import gc
import os
import sys
import time
from functools import cache
from pathlib import Path

import yaml

#: The shipped Dask config file for worker processes: ``DASK_CONFIG=<this file>``, or a
#: copy in ``~/.config/dask``.
CONFIG_FILE = Path(__file__).resolve().parent / "dask-worker.yaml"

#: glibc's ``mallopt`` parameter for each of its start-up environment variables.
MALLOPT_PARAMETERS = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2,
                      "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_MMAP_MAX_": -4}

#: The stage modules that tasks run, imported at start (a few seconds: PyTorch,
#: sporco, scikit-image, zarr) so that the first task does not pay for them.
STAGE_MODULES = ("pipeline.datasets", "pipeline.store", "pipeline.stratified",
                 "pipeline.sporco_solver")

_applied: dict = {}


def dask_config() -> dict:
    """The shipped Dask config file, as a nested dict (a copy of its own)."""
    return copy.deepcopy(_read_config())


@cache
def _read_config() -> dict:
    try:
        return yaml.safe_load(CONFIG_FILE.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the project's Dask config file {CONFIG_FILE} is missing from the installation; "
            "reinstall the project") from None


def pre_spawn_environ() -> dict[str, str]:
    """The environment a nanny gives the worker processes it starts (from the config file)."""
    environ = dask_config()["distributed"]["nanny"]["pre-spawn-environ"]
    return {name: str(value) for name, value in environ.items()}


def worker_malloc() -> dict[str, int]:
    """The glibc malloc settings of the config file: ``{"MALLOC_TRIM_THRESHOLD_": ..., ...}``."""
    return {name: int(value) for name, value in pre_spawn_environ().items()
            if name in MALLOPT_PARAMETERS}


def apply_worker_settings(by: str) -> dict:
    """Give this process the project's worker settings; return what was applied.

    One PyTorch thread and one FFT thread with ``FFTW_ESTIMATE`` planning
    (:func:`pipeline.sporco_solver.configure_fft`), one thread for any
    OpenMP/BLAS pool already loaded, the malloc thresholds of the config
    file through glibc's ``mallopt``, the stage modules imported, and a
    process exit that skips the interpreter's last garbage collections.
    ``by`` says who asked ("preload", "plugin"), for the record.
    """
    started = time.perf_counter()
    import sporco.fft  # noqa: PLC0415 (the stages: imported here, never by the client)
    import torch  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    import pipeline.datasets  # noqa: F401, PLC0415
    import pipeline.store  # noqa: F401, PLC0415
    import pipeline.stratified  # noqa: F401, PLC0415
    from pipeline import sporco_solver  # noqa: PLC0415

    sporco_solver.configure_fft(threads=1)
    torch.set_num_threads(1)  # the batched solver and the DAE's encoder
    threadpool_limits(limits=1)  # what OMP_NUM_THREADS=1 does at start, for a running process
    malloc = set_malloc(worker_malloc())
    skip_collection_at_exit()
    first = not _applied
    _applied.update({
        "pid": os.getpid(),
        "by": [*_applied.get("by", []), by],
        "torch_threads": torch.get_num_threads(),
        "fft_threads": sporco.fft.pyfftw_threads,
        "fft_planner": sporco.fft.pyfftw_planner_effort,
        "malloc": malloc,
        "stages": [name for name in STAGE_MODULES if name in sys.modules],
    })
    if first:
        _applied["seconds"] = round(time.perf_counter() - started, 3)
    return applied()


def applied() -> dict:
    """What :func:`apply_worker_settings` applied in this process (empty: nothing yet).

    ``malloc`` is the ``mallopt`` settings that glibc accepted, or None where
    the C library is not glibc.
    """
    return {key: list(value) if isinstance(value, list) else value
            for key, value in _applied.items()}


def set_malloc(settings: dict[str, int]) -> dict[str, int] | None:
    """Set glibc malloc parameters in this running process, named as their variables.

    ``{"MALLOC_TRIM_THRESHOLD_": 134217728}`` calls
    ``mallopt(M_TRIM_THRESHOLD, 134217728)``.  Returns the settings that
    glibc accepted, or None (doing nothing) where the C library is not glibc.
    """
    libc = _glibc()
    if libc is None:
        return None
    return {name: value for name, value in settings.items()
            if libc.mallopt(MALLOPT_PARAMETERS[name], ctypes.c_int(value)) == 1}


@cache
def _glibc():
    try:
        os.confstr("CS_GNU_LIBC_VERSION")  # raises where the C library is not glibc
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (AttributeError, ValueError, OSError):
        return None
    return libc


@cache
def skip_collection_at_exit() -> None:
    """Let this process end without the interpreter's final garbage collections.

    With PyTorch, scikit-learn and Dask loaded, those collections walk
    millions of objects: 0.5 to 0.8 s for every process that ends, a
    worker's (which its nanny waits for when a LocalCluster closes) and a
    command's.  Freezing the collector at exit moves every object out of
    its reach; objects are still released by their reference counts.
    """
    atexit.register(gc.freeze)


def dask_setup(worker) -> None:
    """The preload hook: ``dask worker ... --preload pipeline.worker``."""
    apply_worker_settings("preload")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.worker",
        description="Where the project's Dask config file for worker processes is: "
        'DASK_CONFIG="$(python -m pipeline.worker)" dask worker ... '
        "(or copy the file into ~/.config/dask).")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config-file", action="store_true",
                       help="print the file's path (the default)")
    which.add_argument("--show", action="store_true", help="print the file's contents")
    args = parser.parse_args(argv)
    if args.show:
        sys.stdout.write(CONFIG_FILE.read_text())
    else:
        print(CONFIG_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where graphs run: a LocalCluster on this machine, or an existing scheduler.

The Dask side of the project is called runtime, scheduler and workers; a
"cluster" elsewhere in the project is always a KMeans cluster.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import CancelledError

import dask
from distributed import Client, LocalCluster
from distributed.comm.core import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin

from pipeline.errors import UserError
from pipeline.worker import apply_worker_settings, dask_config, worker_malloc

log = logging.getLogger(__name__)

DEFAULT_DASHBOARD = "127.0.0.1:8787"

#: How long the commands wait for a scheduler given with ``--scheduler``.
SCHEDULER_TIMEOUT = "30s"


class SchedulerError(UserError, ConnectionError):
    """The scheduler given by address could not be reached."""


def describe_failure(err: BaseException) -> str:
    """One line for a run that failed on the Dask side.

    When the scheduler goes away, Dask either cancels every pending future
    with "scheduler-connection-lost" (within about a second of the loss) or
    the result being fetched fails with a closed stream (the client talks
    only to the scheduler); either is said plainly.
    """
    lost = isinstance(err, CommClosedError) or (
        isinstance(err, CancelledError) and "scheduler-connection-lost" in str(err))
    if lost:
        return "lost the connection to the Dask scheduler (did it stop, or its machine?)"
    return f"{type(err).__name__}: {err}"

#: glibc malloc settings for worker processes, set before they start (read from
#: the shipped Dask config file, :data:`pipeline.worker.CONFIG_FILE`).  Dask's
#: nanny sets MALLOC_TRIM_THRESHOLD_=65536, which also pins glibc's mmap
#: threshold at 128 KiB, so every solver temporary (~1 MB at 64x64) is a fresh
#: mmap that page-faults on first touch: one 64x64 solve took 0.95 s instead of
#: 0.24 s (benchmarks/README.md).  These values measured the same as glibc's
#: defaults, and unlike "unset" they can also be given to `dask worker`.
WORKER_MALLOC = worker_malloc()


class SolverThreads(WorkerPlugin):
    """The project's worker settings (:func:`pipeline.worker.apply_worker_settings`).

    One solver thread per worker process, the malloc thresholds, the stages
    imported before the first task.  PyTorch's thread count and sporco's FFT
    settings are process-global and default to every core, so without this,
    N worker processes on N cores each start N threads.  Workers started
    with ``--preload pipeline.worker`` (or the shipped Dask config) already
    have the settings; registering the plugin costs them nothing, and gives
    them to workers started without it.
    """

    name = "pipeline-solver-threads"

    def setup(self, worker) -> None:
        apply_worker_settings("plugin")


class IgnoreInterrupts(WorkerPlugin):
    """Let Ctrl-C reach only the command, not the worker processes it started.

    A terminal sends SIGINT to the whole process group; the command then
    stops cleanly and closes its LocalCluster, while each worker process
    would otherwise print a KeyboardInterrupt traceback (and, closed in the
    middle of a task, the traceback of its interrupted heartbeat).
    Registered only on the LocalCluster's own worker processes, never on a
    scheduler's that the user runs.
    """

    name = "pipeline-ignore-interrupts"

    def setup(self, worker) -> None:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def teardown(self, worker) -> None:
        # The command closes these workers itself, after Ctrl-C while a task still
        # runs: a heartbeat that the closing interrupts would log a traceback
        # ("Failed to communicate with scheduler during heartbeat").
        logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)


def connect(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    dashboard_address: str = DEFAULT_DASHBOARD,
    processes: bool = True,
) -> Client:
    """A Dask client: on the scheduler at ``address``, or on a new LocalCluster.

    Parameters
    ----------
    address : str, optional
        Scheduler address such as ``tcp://host:8786``; None starts a
        LocalCluster with ``n_workers`` worker processes of one thread each.
    n_workers : int, optional
        Workers of the LocalCluster; default one per core.
    dashboard_address : str
        Where the LocalCluster's dashboard listens.  Dask's own default binds
        every interface, so the default here is localhost; pass
        ``0.0.0.0:8787`` to share it on purpose.
    processes : bool
        Worker processes (True) or threads in this process (False: a small
        job, which would wait longer for processes to start than it works).
    """
    if address:
        try:
            client = Client(address, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError) as err:
            raise SchedulerError(
                f"cannot reach the Dask scheduler at {address} ({err}); is it running, "
                "and is the address (tcp://host:port) right?") from None
    else:
        # Scheduler and workers listen on localhost only, threads as well as processes
        # (in-process transport would make the dashboard link name this machine's address).
        with dask.config.set(local_cluster_config()):
            cluster = LocalCluster(
                n_workers=n_workers or os.cpu_count() or 1,
                threads_per_worker=1,
                processes=processes,
                dashboard_address=dashboard_address,
                host="127.0.0.1",
                protocol="tcp://",
            )
        client = Client(cluster)
        if processes:
            client.register_plugin(IgnoreInterrupts())
        elif not log.isEnabledFor(logging.DEBUG):
            # A failed task is the command's to report, in one sentence (its traceback
            # under -v); a worker thread would log it here too, traceback and all.
            for name in ("distributed.worker", "distributed.worker_state_machine"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    client.register_plugin(SolverThreads())
    log.info("Dask dashboard: %s (%s)", client.dashboard_link,
             f"scheduler {address}" if address else _describe_local(client, processes))
    return client


def _describe_local(client: Client, processes: bool) -> str:
    workers = len(client.cluster.workers)
    if processes:
        return f"LocalCluster of {workers} worker process{'es' if workers != 1 else ''}"
    return f"LocalCluster of {workers} worker thread{'s' if workers != 1 else ''} in this process"


def local_cluster_config() -> dict:
    """Dask's config, with the shipped worker config file merged in, for the LocalCluster.

    The file's values win; its lists (the preloads) are added to any the
    user's own config names.
    """
    def merged(mine, theirs):
        if isinstance(mine, dict) and isinstance(theirs, dict):
            return {**theirs, **{key: merged(value, theirs.get(key))
                                 for key, value in mine.items()}}
        if isinstance(mine, list) and isinstance(theirs, list):
            return [*theirs, *(item for item in mine if item not in theirs)]
        return mine

    return {key: merged(value, dask.config.get(key, None))
            for key, value in dask_config().items()}


def disconnect(client: Client) -> None:
    """Close the client, and the LocalCluster when :func:`connect` started one."""
    cluster = client.cluster
    if client.status == "running":
        client.close()
    else:  # the scheduler is gone: Dask would log its reconnection attempt's traceback
        quiet = logging.getLogger("distributed.client")
        level, quiet.level = quiet.level, logging.CRITICAL
        try:
            client.close()
        finally:
            quiet.setLevel(level)
    if cluster is not None:
        cluster.close()

"""A real Dask deployment for tests: one ``dask scheduler`` and ``dask worker`` processes.

Everything listens on 127.0.0.1 at free ports, including the dashboards that
the CLI would otherwise open on every interface, and everything is torn
down at the end.  Workers run under nannies, as users run them, so a worker
process that is killed is replaced by its nanny.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from distributed import Client

from pipeline.runtime import WORKER_MALLOC


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DaskProcesses:
    """``with DaskProcesses(workers=2) as dask: ...`` then ``dask.address``."""

    def __init__(self, workers: int = 2, log_folder=None, separate_folders: bool = False, *,
                 worker_args: Sequence[str] = (), worker_env: dict[str, str] | None = None):
        """``separate_folders``: start each worker in its own new empty working directory
        (as on machines that share no file system with the client).

        ``worker_args`` are more arguments for each ``dask worker`` (e.g.
        ``["--preload", "pipeline.worker"]``).  By default the workers start
        with the project's ``MALLOC_*`` variables, as the README tells users
        to start them; ``worker_env`` replaces those with its own variables,
        on top of this process's environment without its ``MALLOC_*``.
        """
        self.n_workers = workers
        self.worker_args = list(worker_args)
        self.worker_env = worker_env
        self.separate_folders = separate_folders
        self._folders: list[tempfile.TemporaryDirectory] = []
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log_folder = log_folder
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def __enter__(self) -> DaskProcesses:
        self.scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port",
                                     str(self.port), "--dashboard-address",
                                     f"127.0.0.1:{free_port()}")
        for _ in range(self.n_workers):
            cwd = None
            if self.separate_folders:
                self._folders.append(tempfile.TemporaryDirectory(prefix="worker-"))
                cwd = self._folders[-1].name
            self.workers.append(self._start(
                "worker", self.address, "--nthreads", "1", "--host", "127.0.0.1",
                "--dashboard-address", "127.0.0.1:0", "--death-timeout", "60", *self.worker_args,
                cwd=cwd))
        with self.client() as client:
            client.wait_for_workers(self.n_workers, timeout=120)
        return self

    def __exit__(self, *exc) -> None:
        for process in [*self.workers, self.scheduler]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            if process is not None:
                process.wait()
        for folder in self._folders:
            folder.cleanup()

    def _start(self, role: str, *args: str, cwd: str | None = None) -> subprocess.Popen:
        log = subprocess.DEVNULL
        if self.log_folder is not None:
            log = open(self.log_folder / f"{role}-{len(self.workers)}.log", "w")  # noqa: SIM115
        env = {**os.environ, **{k: str(v) for k, v in WORKER_MALLOC.items()}}
        if role == "worker" and self.worker_env is not None:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
                   **self.worker_env}
        return subprocess.Popen([sys.executable, "-m", "dask", role, *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=cwd)

    def client(self) -> Client:
        return Client(self.address, timeout="30s")

    def kill_worker_running(self, prefix: str, timeout: float = 120) -> str:
        """SIGKILL a worker process while it executes a task whose key starts with ``prefix``.

        Returns the killed worker's address.
        """
        def executing(dask_worker) -> tuple[int, list]:
            # Defined here so that it travels by value: workers cannot import tests/.
            return os.getpid(), [task.key for task in dask_worker.state.executing]

        with self.client() as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for worker, (pid, keys) in client.run(executing).items():
                    if any(str(key).startswith(prefix) for key in keys):
                        os.kill(pid, signal.SIGKILL)
                        return worker
                time.sleep(0.05)
        raise TimeoutError(f"no worker ran a task {prefix!r} within {timeout} s")


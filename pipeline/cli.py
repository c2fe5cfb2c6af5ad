"""What the three commands share: arguments, logging, and one way to run and to end.

Each command (``pipeline.reconstruct``, ``pipeline.learn``,
``pipeline.evaluate``) builds its parser with :func:`command_parser` and
hands it, with the flags that are shortcuts for config keys and a function
that turns the config into a :class:`Job`, to :func:`run_command`, which
loads the config, answers ``--print-config``, runs the job on the runtime
and ends every run the same way:

- ``0``: the job finished (a job may return 1 itself, e.g. when nothing was
  done);
- ``1``: the run failed: a worker, the scheduler, the store, or a bug in a
  stage; one sentence, the traceback with ``-v`` (or it stopped for a stated
  reason, :class:`pipeline.errors.RunStopped`);
- ``2``: an error the user can fix (:class:`pipeline.errors.UserError`:
  config, data set, basis, store, scheduler address), one sentence that
  names the file;
- ``130``: interrupted (Ctrl-C): the job's ``kept`` says what survives and
  how to go on.

This list is the only statement of the exit statuses; each command adds
only what is its own.

The first Ctrl-C does not raise inside Dask's client code: it sets a flag
that the flows ask between results (:mod:`flows.waiting`), so the work in
hand finishes and the command stops cleanly; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline import __version__
from pipeline.config import Config, load_config
from pipeline.errors import RunStopped, UserError
from pipeline.runtime import DEFAULT_DASHBOARD, connect, describe_failure, disconnect
from pipeline.worker import skip_collection_at_exit

log = logging.getLogger("pipeline")

StopRequested = Callable[[], bool]


@dataclass(frozen=True)
class Job:
    """What a command runs once its inputs are checked.

    Attributes
    ----------
    run : callable
        ``run(client, stop_requested) -> exit status``; ``stop_requested()``
        says whether Ctrl-C asked the job to stop after the work in hand.
    what : str
        The job's name in a failure's sentence: "run", "learning", ...
    kept : str
        What survives a failure or an interruption, and how to go on.
    stopping : str
        What the first Ctrl-C waits for, e.g. "the images being reconstructed".
    parallel : int, optional
        The most tasks the job can run at once (e.g. the images it has to
        do): a LocalCluster started for it has no more worker processes
        than this, since each costs a few seconds to start.  None: no limit.
    small : bool
        The job's work takes about as long as starting worker processes (a
        few seconds): with ``--local-workers auto`` its LocalCluster's
        workers are threads in the command's process, which start at once.
    """

    run: Callable[[Any, StopRequested], int]
    what: str
    kept: str
    stopping: str = "the work in hand"
    parallel: int | None = None
    small: bool = False


def command_parser(prog: str, description: str, *, config_help: str,
                   default_config: str) -> argparse.ArgumentParser:
    """A parser with the arguments every command takes.

    The config (a shipped config's name or a YAML path), ``--set KEY=VALUE``,
    ``--print-config``, the runtime's ``--scheduler``, ``--workers``,
    ``--local-workers`` and ``--dashboard-address``, ``-v``/``-q`` and ``--version``.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("config", nargs="?", default=default_config, help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. csc.lmbda=0.3 "
                        "(repeatable)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on this Dask scheduler, e.g. tcp://host:8786 "
                        "(default: a LocalCluster on this machine)")
    parser.add_argument("--workers", type=int, help="LocalCluster worker processes "
                        "(default: one per core, no more than the job can use)")
    parser.add_argument("--local-workers", choices=("auto", "processes", "threads"),
                        default="auto", help="the LocalCluster's workers: processes, threads "
                        "in this process, or auto: threads for a small job, which would "
                        "otherwise wait seconds for processes to start (default: %(default)s)")
    parser.add_argument("--dashboard-address", default=DEFAULT_DASHBOARD,
                        help="LocalCluster dashboard address (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output; -v also shows the traceback of a failure")
    parser.add_argument("-q", "--quiet", action="count", default=0,
                        help="less output (no progress bars)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def load_command_config(args: argparse.Namespace, shortcuts: dict[str, str]) -> Config:
    """The config the arguments name, with ``--set`` and the shortcut flags applied.

    ``shortcuts`` maps an argument's name to the config key it sets (e.g.
    ``{"out": "store.path"}``); arguments left at None set nothing.
    """
    settings = {key: getattr(args, name) for name, key in shortcuts.items()
                if getattr(args, name) is not None}
    return load_config(args.config, args.overrides, settings)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None,
                shortcuts: dict[str, str],
                prepare: Callable[[argparse.Namespace, Config], Job]) -> int:
    """Parse, load the config, prepare the job, run it on the runtime; the exit status.

    ``prepare(args, config)`` opens and checks the inputs before any worker
    starts.  ``args.command_line`` is the command as typed, for records such
    as a basis set's manifest.
    """
    args = parser.parse_args(argv)
    args.command_line = f"{parser.prog} {shlex.join(sys.argv[1:] if argv is None else argv)}"
    configure_logging(args.verbose - args.quiet)
    skip_collection_at_exit()  # the process ends 0.5 to 0.8 s sooner
    job = None
    try:
        config = load_command_config(args, shortcuts)
        if args.print_config:
            print(yaml.safe_dump(config.as_dict(), sort_keys=False), end="")
            return 0
        job = prepare(args, config)
        return _run_on_runtime(job, args)
    except UserError as err:
        log.error("%s", err)
        return 2
    except RunStopped as err:
        log.error("%s", err)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted%s", f": {job.kept}" if job else "")
        return 130
    except Exception as err:  # a worker, the scheduler, the store, or a bug
        log.debug("traceback of the failure", exc_info=True)
        what = job.what if job else "preparing the run"
        kept = f"; {job.kept}" if job else ""
        log.error("%s failed: %s%s (-v shows the traceback)", what, describe_failure(err), kept)
        return 1


def _run_on_runtime(job: Job, args: argparse.Namespace) -> int:
    with stop_after_work_in_hand(job.stopping) as stop_requested:
        threads = args.local_workers == "threads" or (args.local_workers == "auto" and job.small)
        client = connect(args.scheduler, n_workers=args.workers or local_workers(job),
                         dashboard_address=args.dashboard_address, processes=not threads)
        try:
            return job.run(client, stop_requested)
        finally:
            disconnect(client)


def local_workers(job: Job) -> int:
    """Worker processes of a LocalCluster for ``job``: one per core, no more than it can use."""
    useful = sys.maxsize if job.parallel is None else job.parallel
    return max(1, min(os.cpu_count() or 1, useful))


@contextlib.contextmanager
def stop_after_work_in_hand(stopping: str = "the work in hand") -> Iterator[StopRequested]:
    """First Ctrl-C: ask the job to stop after ``stopping``; a second one stops at once.

    Yields the flag's reader.  Signal handlers belong to the main thread;
    elsewhere (a command called from a thread) Ctrl-C is left as it is.
    """
    requested = False

    def on_interrupt(signum, frame):
        nonlocal requested
        requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.warning("stopping after %s (Ctrl-C again to stop now)", stopping)

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)


def configure_logging(level_shift: int) -> None:
    """INFO by default; each ``-v`` one level more, each ``-q`` one level less."""
    level = logging.INFO - 10 * level_shift
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(message)s", force=True)
    import distributed  # noqa: F401, PLC0415 (it sets its loggers' levels when imported)

    # Dask's own INFO lines (workers starting, closing) would bury the progress bar.
    logging.getLogger("distributed").setLevel(max(level, logging.WARNING))
    # ART (the evaluation's attacks) logs every attack's start and success rate at INFO.
    logging.getLogger("art").setLevel(max(level, logging.WARNING))
    # Object storage's clients log every signed request at DEBUG, with the access key's id
    # and the session token in its headers: never shown, whatever the verbosity.
    for name in ("botocore", "aiobotocore", "boto3", "s3fs", "fsspec", "aiohttp", "urllib3"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))

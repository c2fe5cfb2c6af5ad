"""``python -m pipeline.reconstruct DATASET``: reconstruct a data set into a Zarr store.

DATASET names ``configs/<DATASET>.yaml`` (or is a path to a YAML file).  The
command parses, loads the config, and calls :func:`flows.reconstruct.reconstruct_dataset`.

Exit status: 0 when the run finished and at least one image is in the store,
even if some files could not be read (they are listed in the store and the
summary, and a re-run retries them); 1 when ``--strict`` stopped at a bad
image, when no image at all could be reconstructed, or when the run failed (a
worker, the scheduler or the store); 2 for an error found before any work
(config, data set, basis, store, another run holding the store); 130 when
interrupted.  After 1 or 130, the same command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

from pipeline import __version__
from pipeline.basis import BasisError, open_bases, resolve_basis_path
from pipeline.cli import add_runtime_arguments, configure_logging
from pipeline.config import ConfigError, load_config
from pipeline.datasets import DatasetError, ImageReadError, open_dataset
from pipeline.store import StoreError, export_images

log = logging.getLogger("pipeline.reconstruct")

USER_ERRORS = (ConfigError, DatasetError, BasisError, StoreError, ImageReadError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.reconstruct",
        description="Reconstruct every image of a data set with convolutional sparse coding "
        "and write the results to a Zarr store.",
    )
    parser.add_argument("dataset", nargs="?", default="sample",
                        help="config name in configs/ (default: sample) or a YAML path")
    parser.add_argument("--out", help="output Zarr store (default: the config's store.path)")
    parser.add_argument("--basis", "--basis-set", dest="basis",
                        help="a basis .npy file, or a basis-set folder made by pipeline.learn "
                        "(default: the config's basis)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. csc.lmbda=0.3")
    parser.add_argument("--export", metavar="DIR",
                        help="also write PNG files named after the sources")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the store afresh, also one made with other settings")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    add_runtime_arguments(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose - args.quiet)
    from flows.reconstruct import StrictModeError, check_run_store  # noqa: PLC0415 (fast --help)

    overrides = list(args.overrides)
    overrides += [f"store.path={args.out}"] if args.out else []
    overrides += [f"basis={args.basis}"] if args.basis else []
    overrides += [f"export={args.export}"] if args.export else []
    try:
        config = load_config(args.dataset, overrides)
        dataset = open_dataset(config.dataset, config.name)
        basis_path = resolve_basis_path(config.basis)
        bases = open_bases(basis_path)
        check_run_store(dataset, bases=bases, options=config.csc, store_path=config.store_path,
                        dtype=config.store.dtype, overwrite=args.overwrite)  # before any workers
        log.info("%s: %d images, %s %s, lambda %g", config.name, len(dataset),
                 f"basis set of {len(bases.bases)} clusters" if bases.stratified else "basis",
                 basis_path, config.csc.lmbda)
        return run(config, dataset, bases, args)
    except DatasetError as err:
        log.error("%s (dataset.path in the config; override with --set dataset.path=PATH)", err)
        return 2
    except USER_ERRORS as err:
        log.error("%s", err)
        return 2
    except StrictModeError as err:
        log.error("%s", err)
        return 1


def run(config, dataset, bases, args) -> int:
    """Start the runtime, run the flow, report; the runtime is closed on every path."""
    from flows.reconstruct import StrictModeError, reconstruct_dataset  # noqa: PLC0415
    from pipeline.runtime import (  # noqa: PLC0415
        SchedulerError,
        connect,
        describe_failure,
        disconnect,
    )

    try:
        client = connect(args.scheduler, n_workers=args.workers,
                         dashboard_address=args.dashboard_address)
    except SchedulerError as err:
        log.error("%s", err)
        return 2
    summary = None
    try:
        with interrupt_after_current_images() as stop_requested:
            summary = reconstruct_dataset(
                client, dataset, bases=bases, options=config.csc, compute=config.compute,
                store_path=config.store_path, dtype=config.store.dtype,
                attrs={"config": config.as_dict()}, overwrite=args.overwrite,
                strict=args.strict, progress=args.quiet == 0, stop_requested=stop_requested,
            )
    except KeyboardInterrupt:
        log.error("interrupted: images finished so far are kept in %s; "
                  "run the same command again to resume", config.store_path)
        return 130
    except USER_ERRORS + (StrictModeError,):
        raise
    except Exception as err:  # a worker, the scheduler or the store failed: keep what is done
        log.debug("traceback of the failure", exc_info=True)
        log.error("run failed: %s; images finished so far are kept in %s; run the same "
                  "command again to resume (-v shows the traceback)", describe_failure(err),
                  config.store_path)
        return 1
    finally:
        disconnect(client)
    log.info("%d of %d images done in %.1f s (%d this run) -> %s", summary.done,
             summary.total, summary.seconds, summary.done_now, summary.store)
    if config.export:
        import zarr  # noqa: PLC0415

        written = export_images(zarr.open_group(summary.store, mode="r"), config.export)
        log.info("exported %d PNG files to %s", written, config.export)
    if summary.failed:
        log.warning("%d images could not be read (listed in the store's 'failed' attribute):",
                    len(summary.failed))
        for name, reason in list(summary.failed.items())[:20]:
            log.warning("  %s: %s", name, reason)
    if summary.done == 0:
        log.error("no image could be reconstructed")
        return 1
    return 0


@contextlib.contextmanager
def interrupt_after_current_images():
    """First Ctrl-C: finish the image in hand, then stop; a second one stops at once.

    A KeyboardInterrupt raised at an arbitrary point inside Dask's client
    machinery can end in its own tracebacks; asking the flow to stop at its
    next result keeps the exit clean.
    """
    requested = False

    def on_interrupt(signum, frame):
        nonlocal requested
        requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.warning("stopping after the images being reconstructed (Ctrl-C again to stop now)")

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())

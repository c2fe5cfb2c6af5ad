"""What the two commands share: runtime arguments and logging."""

from __future__ import annotations

import argparse
import logging

from pipeline.runtime import DEFAULT_DASHBOARD


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scheduler``, ``--workers``, ``--dashboard-address``, ``-v`` and ``-q``."""
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on this Dask scheduler, e.g. tcp://host:8786 "
                        "(default: a LocalCluster on this machine)")
    parser.add_argument("--workers", type=int, help="LocalCluster worker processes "
                        "(default: one per core)")
    parser.add_argument("--dashboard-address", default=DEFAULT_DASHBOARD,
                        help="LocalCluster dashboard address (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="count", default=0)


def configure_logging(level_shift: int) -> None:
    """INFO by default; each ``-v`` one level more, each ``-q`` one level less."""
    level = logging.INFO - 10 * level_shift
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(message)s", force=True)
    import distributed  # noqa: F401, PLC0415 (it sets its loggers' levels when imported)

    # Dask's own INFO lines (workers starting, closing) would bury the progress bar.
    logging.getLogger("distributed").setLevel(max(level, logging.WARNING))
    # ART (the evaluation's attacks) logs every attack's start and success rate at INFO.
    logging.getLogger("art").setLevel(max(level, logging.WARNING))

"""``python -m pipeline.reconstruct DATASET``: reconstruct a data set into a Zarr store.

DATASET names a shipped config (``sample``, ``imagenet``, ``cifar10``) or is
a YAML path.  The command parses, loads the config, checks the data set, the
basis and the store before any worker starts, and calls
:func:`flows.reconstruct.reconstruct_dataset`.

Exit status: as every command's (:mod:`pipeline.cli`).  Files that could not
be read do not fail a run (they are listed in the store and the summary, and
a re-run retries them); 1 also when ``--strict`` stopped at a bad image or no
image at all could be reconstructed.  After 1 or 130, the same command
resumes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from flows.reconstruct import RunSummary, StoreTarget, check_run_store, reconstruct_dataset
from pipeline.basis import BasisSet, open_bases, resolve_basis_path
from pipeline.cli import Job, command_parser, run_command
from pipeline.config import Config
from pipeline.datasets import Dataset, DatasetError
from pipeline.sources import open_dataset
from pipeline.store import export_images, open_group

log = logging.getLogger("pipeline.reconstruct")

#: Data sets of at most this many images run on a LocalCluster of threads in the
#: command's process (``--local-workers auto``): worker processes take seconds to
#: start, each importing PyTorch, and far longer when other work shares the cores.
#: 8 photo tiles: 0.95x the whole time of worker processes on a quiet machine,
#: 0.56x on a busy one; 64 tiles 0.98x and 0.75x (benchmarks/README.md).
SMALL_JOB_IMAGES = 64

#: Flags that set a config key.
SHORTCUTS = {"out": "store.path", "basis": "basis", "export": "export"}


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m pipeline.reconstruct",
        "Reconstruct every image of a data set with convolutional sparse coding "
        "and write the results to a Zarr store.",
        config_help="a shipped config (sample, imagenet, cifar10; default: sample) or the path "
        "of a YAML file", default_config="sample")
    parser.add_argument("--out", help="output Zarr store (store.path)")
    parser.add_argument("--basis", "--basis-set", dest="basis",
                        help="a basis .npy file, or a basis-set folder made by pipeline.learn "
                        "(basis)")
    parser.add_argument("--export", metavar="DIR",
                        help="also write PNG files named after the sources (export)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the store afresh, also one made with other settings")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, SHORTCUTS, prepare)


def prepare(args: argparse.Namespace, config: Config) -> Job:
    """Open the data set, the bases and the store; no worker yet."""
    try:
        dataset = open_dataset(config.dataset, config.name, config.storage_options)
    except DatasetError as err:
        raise DatasetError(f"{err} (dataset.path in the config; override with "
                           "--set dataset.path=PATH)") from None
    basis_path = resolve_basis_path(config.basis)
    bases = open_bases(basis_path, config.storage_options)
    target = StoreTarget.of(config)
    check_run_store(dataset, bases, target, options=config.csc, overwrite=args.overwrite)
    log.info("%s: %d images, %s %s, lambda %g", config.name, len(dataset),
             f"basis set of {len(bases.bases)} clusters" if bases.stratified else "basis",
             basis_path, config.csc.lmbda)
    return Job(
        run=lambda client, stop_requested: run(client, config, dataset, bases, target, args,
                                               stop_requested),
        what="run",
        kept=f"images finished so far are kept in {config.store_path}; "
        "run the same command again to resume",
        stopping="the images being reconstructed",
        # At most one task per image (per shard): no more workers than that.
        parallel=-(-len(dataset) // config.store.images_per_shard),
        small=len(dataset) <= SMALL_JOB_IMAGES)


def run(client, config: Config, dataset: Dataset, bases: BasisSet, target: StoreTarget,
        args: argparse.Namespace, stop_requested) -> int:
    """The reconstruct flow, then the summary (and the PNG export)."""
    summary = reconstruct_dataset(
        client, dataset, bases, target, options=config.csc, compute=config.compute,
        attrs={"config": config.as_dict()}, overwrite=args.overwrite, strict=args.strict,
        progress=args.quiet == 0, stop_requested=stop_requested)
    log_summary(summary)
    if config.export:
        written = export_images(open_group(summary.store, config.storage_options),
                                config.export)
        log.info("exported %d PNG files to %s", written, config.export)
    if summary.done == 0:
        log.error("no image could be reconstructed")
        return 1
    return 0


def log_summary(summary: RunSummary) -> None:
    """What the run did, and each image that could not be read, with its reason."""
    log.info("%d of %d images done in %.1f s (%d this run) -> %s", summary.done,
             summary.total, summary.seconds, summary.done_now, summary.store)
    if summary.failed:
        log.warning("%d images could not be read (listed in the store's 'failed' attribute):",
                    len(summary.failed))
        for name, reason in list(summary.failed.items())[:20]:
            log.warning("  %s: %s", name, reason)


if __name__ == "__main__":
    sys.exit(main())

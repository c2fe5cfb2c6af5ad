"""``python -m pipeline.learn``: learn a convolutional dictionary on a data set.

This version learns the one-basis method (``--clusters 1``): one joint colour
dictionary on the high-pass parts of a seeded random subset of the data set's
images, written as ``<out>/<M>_p<P>_lm<lambda>.npy`` with a ``manifest.json``
that records its checksum, the settings, the objective per iteration and the
exact command.  Learning one dictionary per KMeans cluster needs the DAE
stage and is not available yet.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import __version__
from pipeline.basis import BasisError, basis_name, save_basis, write_manifest
from pipeline.config import ConfigError, load_config
from pipeline.csc import configure_fft, learn_dictionary
from pipeline.datasets import DatasetError, ImageReadError, open_dataset
from pipeline.reconstruct import configure_logging

log = logging.getLogger("pipeline.learn")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.learn",
                                     description="Learn a convolutional dictionary (basis).")
    parser.add_argument("--dataset", default="sample", help="config name (default: sample)")
    parser.add_argument("--clusters", type=int, default=1,
                        help="KMeans clusters; only 1 (one basis) is available so far")
    parser.add_argument("--out", default="basis/learned", help="output folder")
    parser.add_argument("--images", type=int, default=64, help="training images (random subset)")
    parser.add_argument("--filters", type=int, default=64, help="number of filters M")
    parser.add_argument("--filter-size", type=int, default=8, help="filter side P")
    parser.add_argument("--lmbda", type=float, default=0.2, help="sparsity weight")
    parser.add_argument("--iterations", type=int, default=200, help="learning iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="count", default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose - args.quiet)
    if args.clusters != 1:
        log.error("--clusters %d: clustered learning (DAE + KMeans) is not available yet; "
                  "use --clusters 1", args.clusters)
        return 2
    try:
        config = load_config(args.dataset)
        dataset = open_dataset(config.dataset, config.name)
        rng = np.random.default_rng(args.seed)
        chosen = np.sort(rng.choice(len(dataset), min(args.images, len(dataset)), replace=False))
        images = np.stack([dataset.load(int(i)) for i in chosen])
    except (ConfigError, DatasetError, ImageReadError) as err:
        log.error("%s", err)
        return 2
    log.info("learning %d filters of %dx%d on %d images of %s (%d iterations)", args.filters,
             args.filter_size, args.filter_size, len(images), config.name, args.iterations)
    configure_fft(threads=1)
    started = time.perf_counter()
    with tqdm(total=args.iterations, unit="it", desc="learn", disable=args.quiet > 0) as bar:
        basis, objective = learn_dictionary(
            images, n_filters=args.filters, filter_size=args.filter_size, lmbda=args.lmbda,
            max_iter=args.iterations, seed=args.seed, on_iteration=bar.update)
    path = Path(args.out) / basis_name(args.filters, args.filter_size, args.lmbda)
    try:
        sha256 = save_basis(path, basis)
    except BasisError as err:
        log.error("%s", err)
        return 2
    command = "python -m pipeline.learn " + shlex.join(argv if argv is not None else sys.argv[1:])
    write_manifest(path.parent, {path.name: {
        "sha256": sha256, "shape": list(basis.shape), "lmbda": args.lmbda,
        "dataset": config.name, "images": [dataset.names[i] for i in chosen],
        "iterations": args.iterations, "seed": args.seed, "objective": objective.tolist(),
        "seconds": round(time.perf_counter() - started, 1), "version": __version__,
        "command": command}})
    log.info("wrote %s (objective %.1f -> %.1f)", path, objective[0], objective[-1])
    log.info("reconstruct with it: python -m pipeline.reconstruct %s --basis %s",
             args.dataset, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m pipeline.learn --clusters 10``: learn a basis set, one dictionary per cluster.

DAE -> latents -> PCA + KMeans -> one convolutional dictionary per cluster, on
the data set a config names (the embedded sample by default).  Writes a basis
set folder (see :func:`pipeline.basis.save_basis_set`) with PNG plots, and
prints the command that reconstructs with it.  ``--clusters 1`` is the
one-basis method (no DAE, no clustering).

Exit status: 0 done; 2 an error found before or during learning (config, data
set, a cluster too small, an unreachable scheduler), printed as one sentence;
1 when the run failed on the Dask side (a task failing on every worker it was
tried on, the scheduler lost).  The set is written only after every cluster's
dictionary is learned, its manifest last, so a failed or interrupted run never
leaves a folder that loads as a basis set.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.basis import save_basis_set
from pipeline.cli import add_runtime_arguments, configure_logging
from pipeline.config import ConfigError, load_config
from pipeline.dae import DAEOptions
from pipeline.datasets import DatasetError, ImageReadError, open_dataset
from pipeline.runtime import SchedulerError, describe_failure

log = logging.getLogger("pipeline.learn")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.learn",
        description="Learn a basis set: DAE, KMeans clusters, one dictionary per cluster.")
    parser.add_argument("--clusters", type=int, default=10, help="KMeans clusters (default 10)")
    parser.add_argument("--dataset", default="sample", help="config name (default: sample)")
    parser.add_argument("--out", help="basis-set folder "
                        "(default: outputs/bases/<dataset>-k<clusters>)")
    parser.add_argument("--filters", type=int, default=64, help="filters per basis M")
    parser.add_argument("--filter-size", type=int, default=8, help="filter side P")
    parser.add_argument("--lmbda", type=float, default=0.2, help="sparsity weight")
    parser.add_argument("--iterations", type=int, default=100,
                        help="dictionary-learning iterations per cluster")
    parser.add_argument("--images-per-cluster", type=int, default=64,
                        help="training images per cluster dictionary (random subset)")
    parser.add_argument("--max-images", type=int, default=5000,
                        help="images used for the DAE and the clusters (random subset)")
    parser.add_argument("--dae-epochs", type=int, default=40, help="most DAE epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing set")
    add_runtime_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose - args.quiet)
    from flows.learn import CDLOptions, ClusterTooSmallError  # noqa: PLC0415

    out = Path(args.out or f"outputs/bases/{args.dataset}-k{args.clusters}")
    try:
        if args.clusters < 1:
            raise ConfigError(f"--clusters must be >= 1, got {args.clusters}")
        if (out / "manifest.json").exists() and not args.overwrite:
            raise ConfigError(f"{out}: a basis set is already there; pass --overwrite to "
                              "replace it, or --out to write elsewhere")
        config = load_config(args.dataset)
        dataset = open_dataset(config.dataset, config.name)
        cdl = CDLOptions(args.filters, args.filter_size, args.lmbda, args.iterations,
                         args.images_per_cluster, args.seed)
        dae = DAEOptions(max_epochs=args.dae_epochs, seed=args.seed)
        log.info("%s: %d images; %d clusters of %d %dx%d filters, lambda %g", config.name,
                 len(dataset), args.clusters, args.filters, args.filter_size,
                 args.filter_size, args.lmbda)
        result = learn(dataset, cdl, dae, args)
    except (ConfigError, DatasetError, ImageReadError, ClusterTooSmallError,
            SchedulerError) as err:
        log.error("%s", err)
        return 2
    except Exception as err:  # a worker or the scheduler failed: nothing is written
        log.debug("traceback of the failure", exc_info=True)
        log.error("learning failed: %s; nothing was written to %s (-v shows the traceback)",
                  describe_failure(err), out)
        return 1
    command = "python -m pipeline.learn " + shlex.join(argv if argv is not None else sys.argv[1:])
    write(out, result, cdl, dae, config.name, command)
    log.info("wrote basis set %s (%d clusters, %.0f s)", out, args.clusters,
             result.seconds["total"])
    log.info("reconstruct with it: python -m pipeline.reconstruct %s --basis-set %s",
             args.dataset, out)
    return 0


def learn(dataset, cdl, dae, args):
    from flows.learn import learn_bases  # noqa: PLC0415
    from pipeline.runtime import connect, disconnect  # noqa: PLC0415

    client = connect(args.scheduler, n_workers=args.workers,
                     dashboard_address=args.dashboard_address)
    try:
        return learn_bases(client, dataset, n_clusters=args.clusters, cdl=cdl, dae=dae,
                           max_images=args.max_images, progress=args.quiet == 0)
    finally:
        disconnect(client)


def write(out: Path, result, cdl, dae, dataset_name: str, command: str) -> None:
    """The basis set, its manifest and the plots next to it."""
    from flows.learn import manifest_settings  # noqa: PLC0415
    from pipeline import plots  # noqa: PLC0415

    sizes = np.bincount(result.labels, minlength=len(result.bases)).tolist()
    manifest = {
        "kind": "basis-set", "command": command, "dataset": dataset_name,
        "n_images": int(len(result.labels)), "cluster_sizes": sizes,
        "settings": manifest_settings(cdl, dae),
        "objective": [o.tolist() for o in result.objectives],
        "dae_history": result.dae_history, "seconds": result.seconds,
        "dictionary_images": [[result.names[i] for i in m] for m in result.cdl_members],
        "created_by_version": __version__,
    }
    save_basis_set(out, result.bases, clusters=result.clusters,
                   dae_weights=result.dae_weights, manifest=manifest)
    plots.plot_filters(result.bases, out / "filters.png")
    plots.plot_examples(result.images, result.labels, out / "examples.png")
    plots.plot_objectives(result.objectives, out / "objective.png")
    if result.latents is not None:
        plots.plot_latents(result.latents, result.labels, out / "latents.png")


if __name__ == "__main__":
    sys.exit(main())

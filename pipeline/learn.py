"""``python -m pipeline.learn [DATASET] --clusters 10``: learn one dictionary per cluster.

DAE -> latents -> PCA + KMeans -> one convolutional dictionary per cluster, on
the data set a config names (20,000 tiles of the shipped photographs by default), with the
config's ``learn`` section (the flags are shortcuts for its keys).  Writes a
basis set folder (see :func:`pipeline.basis.save_basis_set`) with PNG plots,
and prints the command that reconstructs with it.  ``--clusters 1`` is the
one-basis method (no DAE, no clustering).

Exit status: as every command's (:mod:`pipeline.cli`); a cluster too small
to learn from is a 2.  The set is written only after every cluster's
dictionary is learned, its manifest last, so a failed or interrupted run
never leaves a folder that loads as a basis set.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import zarr

from flows.learn import LearnResult, learn_bases, manifest_settings
from pipeline import __version__, plots
from pipeline.basis import MANIFEST, save_basis_set
from pipeline.cli import Job, command_parser, run_command
from pipeline.config import Config, ConfigError
from pipeline.datasets import Dataset
from pipeline.online_cdl import Learned
from pipeline.sources import open_dataset
from pipeline.split import split_images

log = logging.getLogger("pipeline.learn")

#: Flags that set a config key (``learn.*``).
SHORTCUTS = {
    "clusters": "learn.clusters", "out": "learn.out", "budget": "learn.budget",
    "feature": "learn.feature", "init": "learn.init", "shared_filters": "learn.shared_filters",
    "filters": "learn.dictionary.n_filters",
    "filter_size": "learn.dictionary.filter_size", "lmbda": "learn.dictionary.lmbda",
    "iterations": "learn.dictionary.max_iter", "images_per_cluster": "learn.images_per_cluster",
    "max_images": "learn.max_images", "dae_epochs": "learn.dae.max_epochs", "seed": "learn.seed",
}


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m pipeline.learn",
        "Learn a basis set: DAE, KMeans clusters, one dictionary per cluster.",
        config_help="the data set: a shipped config (default: photos, 20,000 tiles of the "
        "photographs the dependencies ship) or a YAML path", default_config="photos")
    flags = parser.add_argument_group("shortcuts for the config's learn section "
                                      "(defaults: python -m pipeline.learn --print-config)")
    flags.add_argument("--clusters", type=int, help="KMeans clusters (learn.clusters)")
    flags.add_argument("--budget", choices=["default", "converged"],
                       help="converged: every dictionary learns until it has converged on its "
                       "validation images (learn.budget; 31 min on 2 cores for 10 clusters and the "
                       "control, 5 min for one basis)")
    flags.add_argument("--feature", choices=["dae", "highpass"], help="what the clusters "
                       "group: DAE latents or high-pass texture features (learn.feature)")
    flags.add_argument("--init", help="start each cluster's dictionary at random (random), "
                       "from the one learned on all images first (control), or from a "
                       "one-basis set learned before (its name or folder) (learn.init)")
    flags.add_argument("--shared-filters", type=int, help="with --init control: filters every "
                       "cluster shares and keeps (learn.shared_filters)")
    flags.add_argument("--out", help="basis-set folder (learn.out; "
                       "default outputs/bases/<dataset>-k<clusters>)")
    flags.add_argument("--filters", type=int, help="filters per basis M "
                       "(learn.dictionary.n_filters)")
    flags.add_argument("--filter-size", type=int, help="filter side P "
                       "(learn.dictionary.filter_size)")
    flags.add_argument("--lmbda", type=float, help="sparsity weight (learn.dictionary.lmbda)")
    flags.add_argument("--iterations", type=int, help="most dictionary-learning steps per "
                       "cluster (learn.dictionary.max_iter)")
    flags.add_argument("--images-per-cluster", type=int, help="training images per cluster "
                       "dictionary, a random subset (learn.images_per_cluster)")
    flags.add_argument("--max-images", type=int, help="images used for the DAE and the "
                       "clusters, a random subset (learn.max_images)")
    flags.add_argument("--dae-epochs", type=int, help="most DAE epochs (learn.dae.max_epochs)")
    flags.add_argument("--seed", type=int, help="seed of every random choice (learn.seed)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing set")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, SHORTCUTS, prepare)


def prepare(args: argparse.Namespace, config: Config) -> Job:
    """Open the data set and check the output folder; no worker yet."""
    out = config.basis_set_path
    if (out / MANIFEST).exists() and not args.overwrite:
        raise ConfigError(f"{out}: a basis set is already there; pass --overwrite to "
                          "replace it, or --out to write elsewhere")
    dataset = open_dataset(config.dataset, config.name, config.storage_options)
    split = split_images(len(dataset), config.learn, dataset.sources)  # enough for the clusters?
    settings = config.learn
    log.info("%s: %d images (%d held out, of %d sources no stage sees); %d clusters of %d "
             "%dx%d filters, lambda %g, %s learner; budget %s: at most %d steps per "
             "dictionary, fewer when its validation objective has converged", config.name,
             len(split.training) + len(split.held_out), len(split.held_out),
             len(split.held_out_sources), settings.clusters, settings.dictionary.n_filters,
             settings.dictionary.filter_size, settings.dictionary.filter_size,
             settings.dictionary.lmbda, settings.dictionary.method, settings.budget,
             settings.dictionary.max_iter)
    if settings.budget == "converged":
        log.info("the progress bar counts every dictionary's cap and jumps ahead when one "
                 "stops; the shipped sets stopped after about 100 steps each")
    next_step = f"python -m pipeline.reconstruct {shlex.quote(args.config)} --basis-set {out}"
    return Job(
        run=lambda client, stop_requested: run(client, config, dataset, out, args.command_line,
                                               next_step,
                                               progress=args.quiet == 0,
                                               stop_requested=stop_requested),
        what="learning",
        kept=f"nothing was written to {out}; run the same command again to learn the set",
        stopping="the images being loaded or the dictionaries being learned")


def run(client, config: Config, dataset: Dataset, out: Path, command: str, next_step: str, *,
        progress: bool, stop_requested) -> int:
    """The learn flow, then the basis set, its report and its plots."""
    result = learn_bases(client, dataset, config.learn, workdir=latents_folder(out),
                         csc=config.csc, progress=progress, stop_requested=stop_requested)
    write(out, result, config, dataset, command)
    for line in held_out_lines(result, config.learn.clusters):
        log.info("%s", line)
    log.info("wrote basis set %s (%d clusters, %.0f s)", out, config.learn.clusters,
             result.seconds["total"])
    log.info("reconstruct with it: %s", next_step)
    return 0


def latents_folder(out: Path) -> Path:
    """Where the latents go: beside the basis set, not in it (``<out>.work``)."""
    return out.with_name(out.name + ".work")


def held_out_lines(result: LearnResult, n_clusters: int) -> list[str]:
    """The held-out measurement as a table: each image with its cluster's dictionary
    against one dictionary learned on all the images with the same budget."""
    if result.held_out is None:
        return []
    rows = result.held_out.table(n_clusters)
    control = "control_psnr" in rows[0]
    lines = ["held-out images (of sources no stage saw), PSNR (dB) and code density with "
             "their cluster's dictionary" + (" and with one dictionary learned on all the "
                                             "training images:" if control else ":"),
             "  cluster  images    PSNR  density" + ("  one-dict PSNR  density   gain"
                                                    if control else "")]
    for row in rows:
        if not row["images"]:
            continue
        line = f"  {row['cluster']!s:>7}  {row['images']:6d}  {row['psnr']:6.2f}  " \
               f"{row['density']:7.4f}"
        if control:
            line += f"  {row['control_psnr']:13.2f}  {row['control_density']:7.4f}  " \
                    f"{row['gain_db']:+5.2f}"
        lines.append(line)
    return lines


def write(out: Path, result: LearnResult, config: Config, dataset: Dataset,
          command: str) -> None:
    """The basis set, its manifest (with the held-out report) and the plots next to it."""
    strata, dictionaries = result.strata, result.dictionaries
    k = len(dictionaries.bases)
    sources = [dataset.classes[i] if dataset.classes else int(i)
               for i in result.split.held_out_sources] if dataset.sources is not None else None
    manifest = {
        "kind": "basis-set", "command": command, "dataset": config.name,
        "n_images": int(len(strata.labels)),
        "cluster_sizes": np.bincount(strata.labels, minlength=k).tolist(),
        "settings": manifest_settings(config.learn),
        "learning": [learning_record(learned, n) for learned, n in
                     zip(dictionaries.clusters, dictionaries.validation_images, strict=False)],
        "objective": [o.tolist() for o in dictionaries.objectives],
        "dae_history": strata.dae_history, "seconds": result.seconds,
        "machine": result.machine,
        "held_out_sources": sources,
        "held_out_images": [dataset.names[i] for i in result.split.held_out],
        "held_out": None if result.held_out is None else result.held_out.table(k),
        "created_by_version": __version__,
    }
    if dictionaries.control is not None:
        manifest["control_learning"] = learning_record(dictionaries.control_learned,
                                                       dictionaries.validation_images[-1])
        manifest["control_objective"] = dictionaries.control_objective.tolist()
    save_basis_set(out, dictionaries.bases, clusters=strata.clusters,
                   dae_weights=strata.dae_weights, feature=config.learn.feature,
                   control=dictionaries.control, manifest=manifest)
    plots.plot_filters(dictionaries.bases, out / "filters.png")
    shown = np.concatenate([np.flatnonzero(strata.labels == c)[:8] for c in range(k)])
    plots.plot_examples(np.stack([dataset.load(i) for i in result.split.training[shown]]),
                        strata.labels[shown], out / "examples.png")
    curves = {f"cluster {c}": learned.curve for c, learned in enumerate(dictionaries.clusters)}
    if dictionaries.control_learned is not None:
        curves["control"] = dictionaries.control_learned.curve
    plots.plot_validation(curves, out / "objective.png")
    if strata.latents is not None:
        rows = np.sort(np.random.default_rng(0).permutation(len(strata.labels))[:2000])
        latents = zarr.open_array(strata.latents, mode="r").oindex[rows]
        plots.plot_latents(latents, strata.labels[rows], out / "latents.png")


def learning_record(learned: Learned, validation_images: int) -> dict:
    """How one dictionary learned, as the manifest records it: its steps, why it stopped,
    the scoring its filters come from, and the validation curve."""
    return {"steps": learned.steps, "first_step": learned.first_step,
            "stopped": learned.stopped, "best_step": learned.best_step,
            "validation_images": validation_images, "usage": learned.usage.tolist(),
            "validation": {key: value.tolist() for key, value in learned.curve.items()}}


if __name__ == "__main__":
    sys.exit(main())

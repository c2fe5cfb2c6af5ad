"""``python -m pipeline.evaluate [scenes|digits]``: measure the defense, with its controls.

Trains a small CNN on a task built from data that installed packages ship,
attacks it (FGSM, PGD, DeepFool through ART), defends the attacked images
(CSC with one basis and with a basis set, each with the original and a
retrained classifier; JPEG, median, bit depth, TV), adds a transfer control
and the adaptive BPDA attack, and writes into ``--out``:

- ``results.csv`` (one row per cell: defense, attack, accuracy, se, n) and
  ``results.md`` (the table);
- ``accuracy_vs_eps.png``, ``examples.png``, ``lowpass_energy.png``;
- ``summary.json`` (settings, timings, low-pass shares);
- ``stores/``: the reconstructions (Zarr; a re-run resumes from them).

``python -m pipeline.evaluate cifar10 --classifier model.pt2`` does the same
on a data set a config names (``configs/cifar10.yaml``, or any YAML path),
with the user's classifier (a ``torch.export`` .pt2 file, a TorchScript file
or ``package.module:function``) and, with ``--transfer-classifier``, the
transfer control; there are no retrained rows, as the command has no training
set to retrain on.

Needs ART: ``pip install -e ".[evaluate]"``.  Exit status: 0 done; 1 the run
failed on the Dask side (a worker, the scheduler); 2 an error found before any
work (one sentence); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.basis import DEFAULT_BASIS, DEFAULT_BASIS_SET, BasisError, open_bases
from pipeline.cli import add_runtime_arguments, configure_logging
from pipeline.config import ConfigError, load_config
from pipeline.datasets import DatasetError, open_dataset
from pipeline.runtime import SchedulerError, describe_failure
from pipeline.tasks import TASKS

log = logging.getLogger("pipeline.evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate",
        description="Attack a classifier, defend with CSC and baselines, write the accuracy "
        "table and plots.")
    parser.add_argument("task", nargs="?", default="scenes",
                        help=f"built-in task ({', '.join(TASKS)}; default scenes), or a config "
                        "name or YAML path of your data set (needs --classifier)")
    parser.add_argument("--classifier", metavar="MODEL",
                        help="your classifier: a torch.export .pt2 file, a TorchScript file or "
                        "package.module:function; "
                        "it takes (N, 3, H, W) images in [0, 1] and returns logits")
    parser.add_argument("--transfer-classifier", metavar="MODEL",
                        help="a second classifier for the transfer control (same forms)")
    parser.add_argument("--out", help="output folder (default: outputs/evaluate/<task>)")
    parser.add_argument("--basis", default=str(DEFAULT_BASIS),
                        help="the one-basis CSC row (default: basis/sample-k1)")
    parser.add_argument("--basis-set", default=str(DEFAULT_BASIS_SET),
                        help="the per-cluster CSC row (default: basis/sample-k10)")
    parser.add_argument("--test-images", type=int, default=200,
                        help="test images, n of every cell (default 200)")
    parser.add_argument("--train-images", type=int, default=2000,
                        help="training images (default 2000; digits has at most 1597)")
    parser.add_argument("--epochs", type=int, default=10, help="classifier epochs (default 10)")
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--bpda-steps", type=int, default=10)
    parser.add_argument("--bpda-images", type=int,
                        help="test images under the BPDA attack (default: all)")
    parser.add_argument("--retrain-images", type=int,
                        help="training images reconstructed to retrain on (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose - args.quiet)
    try:
        import art  # noqa: F401, PLC0415
    except ImportError:
        log.error("pipeline.evaluate needs the Adversarial Robustness Toolbox: "
                  "pip install -e \".[evaluate]\"")
        return 2
    from flows.evaluate import EPSILONS, EvaluateOptions  # noqa: PLC0415
    from pipeline.tasks import load_task  # noqa: PLC0415

    out = Path(args.out or f"outputs/evaluate/{Path(args.task).stem}")
    try:
        bases = {"CSC one basis": open_bases(args.basis),
                 "CSC per-cluster": open_bases(args.basis_set)}
        task, models = _task_and_models(args, load_task)
    except (BasisError, ConfigError, DatasetError, ValueError) as err:
        log.error("%s", err)
        return 2
    options = EvaluateOptions(epsilons=EPSILONS.get(task.name, EPSILONS["scenes"]),
                              pgd_steps=args.pgd_steps,
                              bpda_steps=args.bpda_steps, epochs=args.epochs, seed=args.seed,
                              bpda_images=args.bpda_images, retrain_images=args.retrain_images)
    log.info("%s: %d training and %d test images, %d classes -> %s", task.name,
             len(task.train_images), len(task.test_images), len(task.classes), out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        result = run(task, bases, options, out, args, models)
    except SchedulerError as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted: finished reconstructions are kept in %s; run the same command "
                  "again to reuse them", out / "stores")
        return 130
    except Exception as err:  # a worker or the scheduler failed: say so, keep the stores
        log.debug("traceback of the failure", exc_info=True)
        log.error("evaluation failed: %s; finished reconstructions are kept in %s and a re-run "
                  "reuses them (-v shows the traceback)", describe_failure(err), out / "stores")
        return 1
    write_outputs(task, result, options, out, seconds=time.perf_counter() - started,
                  bases={row: str(path) for row, path in
                         (("CSC one basis", args.basis), ("CSC per-cluster", args.basis_set))})
    log.info("wrote %s (%.0f s)", out / "results.md", time.perf_counter() - started)
    return 0


def _task_sizes(args) -> dict:
    if args.task == "scenes":
        return {"train_per_class": max(1, args.train_images // 10),
                "test_per_class": max(1, args.test_images // 10), "seed": args.seed}
    return {"test_size": args.test_images, "train_size": args.train_images, "seed": args.seed}


def _task_and_models(args, load_task):
    """The built-in task, or the user's data set with their classifier(s)."""
    from pipeline.classifier import load_classifier  # noqa: PLC0415
    from pipeline.tasks import from_dataset  # noqa: PLC0415

    if args.task in TASKS:
        if args.classifier:
            raise ConfigError(f"--classifier is for your own data; the {args.task} task trains "
                              "its own")
        return load_task(args.task, **_task_sizes(args)), {}
    if not args.classifier:
        raise ConfigError(f"{args.task}: evaluating your own data needs your classifier: "
                          "--classifier model.pt2 (torch.export), model.pt (TorchScript) or "
                          "package.module:function")
    config = load_config(args.task)
    task = from_dataset(open_dataset(config.dataset, config.name),
                        test_images=args.test_images, seed=args.seed)
    models = {"model": load_classifier(args.classifier)}
    if args.transfer_classifier:
        models["transfer"] = load_classifier(args.transfer_classifier)
    return task, models


def run(task, bases, options, out, args, models):
    from flows.evaluate import evaluate  # noqa: PLC0415
    from pipeline.runtime import connect, disconnect  # noqa: PLC0415

    client = connect(args.scheduler, n_workers=args.workers,
                     dashboard_address=args.dashboard_address)
    try:
        return evaluate(client, task, bases, out=out, options=options,
                        progress=args.quiet == 0, **models)
    finally:
        disconnect(client)


def table_layout(result, options) -> tuple[list[str], list[str]]:
    """The table's rows and columns, in order."""
    from flows.evaluate import attack_columns, bpda_column  # noqa: PLC0415
    from pipeline.baselines import BASELINES  # noqa: PLC0415

    csc = list(result.reconstructions)
    rows = ["none", "transfer control", *csc, *(f"{r}, retrained" for r in csc), *BASELINES]
    rows = [row for row in rows if (row, "clean") in result.correct]  # those measured
    return rows, [c for c, _, _ in attack_columns(options)] + [bpda_column(options)]


def write_outputs(task, result, options, out: Path, *, seconds: float, bases: dict) -> None:
    """Table (CSV, Markdown), plots and summary.json."""
    from flows.evaluate import eps_label, main_pgd_column  # noqa: PLC0415
    from pipeline import plots  # noqa: PLC0415
    from pipeline.report import (  # noqa: PLC0415
        lowpass_energy_share,
        markdown_table,
        records,
        write_csv,
    )

    rows, columns = table_layout(result, options)
    cells = records(result.correct, rows, columns)
    write_csv(cells, out / "results.csv")
    (out / "results.md").write_text(markdown_table(cells, rows, columns))
    epsilons = [(eps_label(e), e) for e in options.epsilons]
    plots.plot_accuracy_vs_eps(cells, rows, epsilons, out / "accuracy_vs_eps.png")
    main, csc = main_pgd_column(options), list(result.reconstructions)[-1]
    shown = np.linspace(0, len(task.test_images) - 1, 8).astype(int)  # across the classes
    plots.plot_attack_examples(
        task.test_images[shown], result.sets[main][shown],
        result.reconstructions[csc][main][shown], task.test_labels[shown],
        {"clean": result.predictions["clean"][shown],
         "adversarial": result.predictions["adversarial"][shown],
         "reconstructed": result.predictions[csc][shown]}, task.classes, out / "examples.png")
    shares = {column: lowpass_energy_share(task.test_images, images, options.csc)
              for column, images in result.sets.items() if column != "clean"}
    plots.plot_lowpass_share(shares, out / "lowpass_energy.png")
    summary = {
        "task": task.name, "n_train": len(task.train_images), "n_test": len(task.test_images),
        "epsilons": list(options.epsilons), "pgd_steps": options.pgd_steps,
        "bpda_steps": options.bpda_steps, "bpda_images": options.bpda_images,
        "retrain_images": options.retrain_images, "epochs": options.epochs, "seed": options.seed,
        "csc": options.csc.as_dict(), "bases": bases, "version": __version__,
        "lowpass_energy_share_mean": {k: float(np.nanmean(v)) for k, v in shares.items()},
        "seconds": {**{k: round(v, 1) for k, v in result.seconds.items()},
                    "total": round(seconds, 1)},
        "command": "python -m pipeline.evaluate " + " ".join(sys.argv[1:]),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())

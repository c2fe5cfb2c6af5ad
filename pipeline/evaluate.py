"""``python -m pipeline.evaluate [CONFIG]``: measure the defense, with its controls.

The evaluation's command (the measuring itself is the ``evaluation``
package).  ``textures`` (the default), ``digits`` and the sanity task ``scenes``
are built-in tasks made of data that installed packages ship: the command
trains a small CNN, attacks it (FGSM, PGD, APGD, DeepFool through ART), defends
the attacked images (CSC with one basis and with a basis set, each with the
original and a retrained classifier; JPEG, median, bit depth, TV), adds a
transfer control, attacks every row adaptively through its defense (BPDA-PGD
with restarts, then APGD-CE/DLR through ART and APGD-T, FAB-T and Square from
AutoAttack; on the CSC rows PGD with the exact gradient of the unrolled solver;
and a sweep over epsilon), checks its own numbers (convergence, accuracy near
zero at the largest epsilon, adaptive <= oblivious, gradient masking) and
writes into the output folder:

- ``results.csv`` (one row per cell: defense, attack, accuracy, se, n) and
  ``results.md`` (the main table, the sanity checks, a verdict written from
  the numbers, every cell);
- ``accuracy_vs_eps.png``, ``adaptive_vs_eps.png``,
  ``adaptive_convergence.png``, ``examples.png``, ``lowpass_energy.png``;
- ``summary.json`` (settings, timings, checks, verdict, low-pass shares);
- ``stores/``: the reconstructions (Zarr; a re-run resumes from them).

``python -m pipeline.evaluate cifar10 --classifier model.pt2`` does the same
on the data set a config names, with the user's classifier (a
``torch.export`` .pt2 file, a TorchScript file or ``package.module:function``)
and, with ``--transfer-classifier``, the transfer control; there are no
retrained rows, as the command has no training set to retrain on.  Settings
come from the config's ``evaluate`` and ``csc`` sections; the flags are
shortcuts for them.

Needs ART and AutoAttack: ``pip install -e ".[evaluate]"``.  Exit status: as
every command's (:mod:`pipeline.cli`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from pipeline.basis import open_bases, resolve_basis_path
from pipeline.cli import Job, command_parser, run_command
from pipeline.config import Config, ConfigError
from pipeline.errors import UserError
from pipeline.sources import open_dataset

log = logging.getLogger("pipeline.evaluate")

#: Flags that set a config key (``evaluate.*``).
SHORTCUTS = {
    "classifier": "evaluate.classifier", "transfer_classifier": "evaluate.transfer_classifier",
    "out": "evaluate.out", "one_basis": "evaluate.one_basis",
    "basis_set": "evaluate.per_cluster",
    "test_images": "evaluate.test_images", "train_images": "evaluate.train_images",
    "epochs": "evaluate.epochs", "pgd_steps": "evaluate.pgd_steps",
    "bpda_steps": "evaluate.bpda_steps", "bpda_restarts": "evaluate.bpda_restarts",
    "bpda_images": "evaluate.bpda_images", "budget": "evaluate.budget",
    "retrain_images": "evaluate.retrain_images", "seed": "evaluate.seed",
}


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "python -m pipeline.evaluate",
        "Attack a classifier, defend with CSC and baselines, write the accuracy table and plots.",
        config_help="a built-in task (textures, digits, scenes; default textures), or the config "
        "(a shipped name or a YAML path) of your data set, with --classifier",
        default_config="textures")
    flags = parser.add_argument_group("shortcuts for the config's evaluate section "
                                      "(defaults: python -m pipeline.evaluate --print-config)")
    flags.add_argument("--classifier", metavar="MODEL",
                       help="your classifier: a torch.export .pt2 file, a TorchScript file or "
                       "package.module:function; it takes (N, 3, H, W) images in [0, 1] and "
                       "returns logits (evaluate.classifier)")
    flags.add_argument("--transfer-classifier", metavar="MODEL",
                       help="a second classifier for the transfer control "
                       "(evaluate.transfer_classifier)")
    flags.add_argument("--out", help="output folder (evaluate.out; default "
                       "outputs/evaluate/<config name>)")
    flags.add_argument("--one-basis", help="basis of the one-basis CSC row (evaluate.one_basis)")
    flags.add_argument("--basis-set", help="basis set of the per-cluster CSC row "
                       "(evaluate.per_cluster)")
    flags.add_argument("--test-images", type=int, help="test images, n of every cell "
                       "(evaluate.test_images)")
    flags.add_argument("--train-images", type=int, help="training images "
                       "(evaluate.train_images; digits has at most 1597)")
    flags.add_argument("--epochs", type=int, help="classifier epochs (evaluate.epochs)")
    flags.add_argument("--pgd-steps", type=int, help="PGD iterations (evaluate.pgd_steps)")
    flags.add_argument("--bpda-steps", type=int, help="steps of the adaptive BPDA-PGD per "
                       "restart (evaluate.bpda_steps)")
    flags.add_argument("--bpda-restarts", type=int, help="random restarts of the adaptive "
                       "BPDA-PGD (evaluate.bpda_restarts)")
    flags.add_argument("--bpda-images", type=int, help="test images under the adaptive "
                       "attacks (evaluate.bpda_images; a seeded draw across the classes)")
    flags.add_argument("--budget", choices=("default", "full"), help="full: at least the "
                       "literature's budgets for every adaptive attack, 100 steps x 5 "
                       "restarts on every test image (evaluate.budget; slow)")
    flags.add_argument("--retrain-images", type=int, help="training images reconstructed to "
                       "retrain on (evaluate.retrain_images; default all)")
    flags.add_argument("--seed", type=int, help="seed of data, training and attacks "
                       "(evaluate.seed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, SHORTCUTS, prepare)


def prepare(args: argparse.Namespace, config: Config) -> Job:
    """Load the task or data set, the classifiers and the bases; no worker yet."""
    try:
        import art  # noqa: F401, PLC0415
    except ImportError:
        raise UserError("pipeline.evaluate needs the Adversarial Robustness Toolbox: "
                        "pip install -e \".[evaluate]\"") from None
    from evaluation.options import EvaluateOptions  # noqa: PLC0415 (ART is optional)

    paths = {"CSC one basis": resolve_basis_path(config.evaluate.one_basis),
             "CSC per-cluster": resolve_basis_path(config.evaluate.per_cluster)}
    bases = {row: open_bases(path, config.storage_options) for row, path in paths.items()}
    task, models = task_and_models(config)
    options = EvaluateOptions.for_task(task.name, config.evaluate, config.csc)
    out = config.evaluate_path
    log.info("%s: %d training and %d test images, %d classes -> %s", task.name,
             len(task.train_images), len(task.test_images), len(task.classes), out)

    def run(client, stop_requested) -> int:
        from evaluation.flow import evaluate  # noqa: PLC0415
        from evaluation.outputs import write_outputs  # noqa: PLC0415

        started = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        result = evaluate(client, task, bases, out=out, options=options,
                          progress=args.quiet == 0, stop_requested=stop_requested, **models)
        write_outputs(task, result, options, out, seconds=time.perf_counter() - started,
                      bases={row: str(path) for row, path in paths.items()},
                      command=args.command_line)
        log.info("wrote %s (%.0f s)", out / "results.md", time.perf_counter() - started)
        return 0

    return Job(run=run, what="evaluation",
               kept=f"finished reconstructions are kept in {out / 'stores'} and a re-run "
               "reuses them", stopping="the attack or reconstruction in hand")


def task_and_models(config: Config):
    """The built-in task, or the user's data set with their classifier(s)."""
    from evaluation.classifier import load_classifier  # noqa: PLC0415
    from evaluation.tasks import from_dataset, load_task  # noqa: PLC0415

    settings = config.evaluate
    if settings.task is not None:
        if settings.classifier:
            raise ConfigError(f"--classifier is for your own data; the {settings.task} task "
                              "trains its own")
        return load_task(settings.task, test_images=settings.test_images,
                         train_images=settings.train_images, seed=settings.seed), {}
    if not settings.classifier:
        raise ConfigError(f"{config.name}: evaluating your own data needs your classifier: "
                          "--classifier model.pt2 (torch.export), model.pt (TorchScript) or "
                          "package.module:function")
    models = {"model": load_classifier(settings.classifier)}
    if settings.transfer_classifier:
        models["transfer"] = load_classifier(settings.transfer_classifier)
    task = from_dataset(open_dataset(config.dataset, config.name, config.storage_options),
                        test_images=settings.test_images, seed=settings.seed)
    return task, models


if __name__ == "__main__":
    sys.exit(main())

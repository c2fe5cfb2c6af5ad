"""The evaluation flow: classifiers -> attacks -> defenses -> accuracy table.

1. Train the classifier, and a second one with another seed (the transfer
   control: it sees the same adversarial images, undefended).
2. Attack the undefended classifier (ART: FGSM and PGD at each epsilon,
   DeepFool): the paper's threat model.
3. Reconstruct the clean test set, every attacked set and the training set
   with each CSC basis, through :func:`flows.reconstruct.reconstruct_dataset`
   on the Dask runtime, into one float32 store per basis (re-running resumes).
4. Retrain the classifier on each basis's reconstructed training set (the
   paper's protocol), apply the baseline defenses, and run the adaptive
   attack (PGD with BPDA through each CSC defense).
5. Score every (defense, attack) cell with its n and standard error.

Steps 1, 2, 4 and 5 run here, on the client; step 3 runs on the workers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zarr
from distributed import Client
from torch import nn

from evaluation.attacks import attack, bpda_pgd
from evaluation.baselines import BASELINES
from evaluation.classifier import predict, to_tensor, train_classifier
from evaluation.defense import CSCDefense
from evaluation.tasks import Task
from flows.reconstruct import reconstruct_dataset
from flows.waiting import StopRequested, never, stop_point
from pipeline.basis import BasisSet
from pipeline.config import EvaluateConfig
from pipeline.csc import CSCOptions
from pipeline.datasets import Dataset
from pipeline.store import read_images

log = logging.getLogger(__name__)

EPSILONS = {"scenes": (4 / 255, 8 / 255, 16 / 255), "digits": (0.05, 0.1, 0.2)}
"""L-inf budgets per task; the middle one is the main budget (BPDA, the plots' examples)."""


@dataclass(frozen=True)
class EvaluateOptions:
    """What one evaluation runs: the config's ``evaluate`` section, the CSC settings of its
    defended rows, and the L-inf budgets (``EPSILONS`` of the task)."""

    settings: EvaluateConfig = EvaluateConfig()
    csc: CSCOptions = CSCOptions()
    epsilons: tuple[float, ...] = EPSILONS["scenes"]

    @classmethod
    def for_task(cls, task: str, settings: EvaluateConfig, csc: CSCOptions) -> EvaluateOptions:
        """The task's budgets (the scenes task's for a data set of the user's)."""
        return cls(settings, csc, EPSILONS.get(task, EPSILONS["scenes"]))

    @property
    def main_eps(self) -> float:
        return self.epsilons[len(self.epsilons) // 2]


@dataclass
class Evaluation:
    """Every cell's per-image correctness, and the images the plots need."""

    correct: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    sets: dict[str, np.ndarray] = field(default_factory=dict)  # attack column -> images
    reconstructions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # the classifier's predictions for the plots: "clean", "adversarial" (main PGD) and,
    # per CSC row, the reconstructed adversarial images
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(kw_only=True)
class CSCRow:
    """One CSC basis measured: what its rows (original and retrained classifier) scored."""

    reconstructions: dict[str, np.ndarray]  # attack column -> reconstructed images
    correct: dict[tuple[str, str], np.ndarray]  # (row, column) -> per-image correctness
    predictions: np.ndarray  # the original classifier on the main PGD column's reconstructions
    seconds: dict[str, float]


def attack_columns(options: EvaluateOptions) -> list[tuple[str, str, float]]:
    """(column name, attack, epsilon) in table order, "clean" first."""
    columns = [("clean", "none", 0.0)]
    for name in ("fgsm", "pgd"):
        columns += [(f"{name.upper()} {eps_label(e)}", name, e) for e in options.epsilons]
    return columns + [("DeepFool", "deepfool", 0.0)]


def bpda_column(options: EvaluateOptions) -> str:
    return f"BPDA-PGD {eps_label(options.main_eps)}"


def main_pgd_column(options: EvaluateOptions) -> str:
    """The PGD column at the main budget: the plots' example attack."""
    return f"PGD {eps_label(options.main_eps)}"


def eps_label(eps: float) -> str:
    """8/255 for budgets in grey levels, 0.1 for round decimals."""
    if round(eps, 3) == eps or abs(eps * 255 - round(eps * 255)) > 1e-6:
        return f"{eps:g}"
    return f"{round(eps * 255)}/255"


def evaluate(client: Client, task: Task, bases: dict[str, BasisSet], *, out: Path,
             options: EvaluateOptions = EvaluateOptions(), progress: bool = True,
             stop_requested: StopRequested = never, model: nn.Module | None = None,
             transfer: nn.Module | None = None) -> Evaluation:
    """Run the whole evaluation of ``task``; ``bases`` maps a row name to a CSC basis set.

    ``model`` and ``transfer`` (the transfer control) are trained on the
    task's training images unless given.  A task without training images
    (a user's data set and classifier) has no retrained rows, and no
    transfer control unless ``transfer`` is given.  ``stop_requested`` is
    asked between steps (:mod:`flows.waiting`).
    """
    result, clock = Evaluation(), time.perf_counter()
    if model is None:
        model = _train(task.train_images, task.train_labels, options, options.settings.seed,
                       "classifier", len(task.classes))
    if transfer is None and len(task.train_images):
        transfer = _train(task.train_images, task.train_labels, options,
                          options.settings.seed + 1, "transfer control", len(task.classes))
    result.seconds["train"] = time.perf_counter() - clock

    clock = time.perf_counter()
    result.sets = _attacked_sets(model, task, options, stop_requested)
    result.seconds["attacks"] = time.perf_counter() - clock
    y, main = task.test_labels, main_pgd_column(options)
    for column, images in result.sets.items():
        predicted = predict(model, images)
        result.correct["none", column] = predicted == y
        log.info("%s: undefended accuracy %.3f", column, result.correct["none", column].mean())
        if column in ("clean", main):  # for the plots
            result.predictions["clean" if column == "clean" else "adversarial"] = predicted
        if transfer is not None:
            result.correct["transfer control", column] = predict(transfer, images) == y

    for row, basis in bases.items():
        scored = _score_csc_row(client, row, basis, model=model, task=task, sets=result.sets,
                                options=options, out=out, progress=progress,
                                stop_requested=stop_requested)
        result.reconstructions[row] = scored.reconstructions
        result.correct.update(scored.correct)
        result.predictions[row] = scored.predictions
        result.seconds.update(scored.seconds)

    clock = time.perf_counter()
    for row, defend in BASELINES.items():
        stop_point(stop_requested)
        for column, images in result.sets.items():
            result.correct[row, column] = predict(model, defend(images)) == y
    result.seconds["baselines"] = time.perf_counter() - clock
    return result


def _attacked_sets(model: nn.Module, task: Task, options: EvaluateOptions,
                   stop_requested: StopRequested) -> dict[str, np.ndarray]:
    """Attack column -> the test images it holds ("clean": the test images themselves)."""
    with torch.no_grad():
        n_classes = int(model(to_tensor(task.test_images[:1])).shape[1])
    sets = {}
    for column, name, eps in attack_columns(options):
        stop_point(stop_requested)
        sets[column] = task.test_images if name == "none" else attack(
            model, task.test_images, task.test_labels, name=name, eps=eps, n_classes=n_classes,
            pgd_steps=options.settings.pgd_steps, seed=options.settings.seed)
    return sets


def _score_csc_row(client: Client, row: str, basis: BasisSet, *, model: nn.Module, task: Task,
                   sets: dict[str, np.ndarray], options: EvaluateOptions, out: Path,
                   progress: bool, stop_requested: StopRequested) -> CSCRow:
    """Reconstruct everything with one basis; score the original classifier and one retrained
    on the reconstructions, and the adaptive BPDA attack through the defense."""
    settings, y, main = options.settings, task.test_labels, main_pgd_column(options)
    clock, seconds = time.perf_counter(), {}
    train = slice(settings.retrain_images)
    parts = {"train": task.train_images[train], **sets}
    if not len(parts["train"]):
        del parts["train"]
    # The store is named after its input's content: the same images resume, other
    # images (another seed, classifier or task size) get a store of their own.
    store = out / "stores" / f"{task.name}-{_slug(row)}-{_digest(parts)}.zarr"
    recs = _reconstruct_all(client, task.name, parts, basis, options.csc, store, progress,
                            stop_requested)
    seconds[f"reconstruct {row}"] = time.perf_counter() - clock
    classifiers = {row: model}
    if "train" in recs:
        classifiers[f"{row}, retrained"] = _train(
            recs.pop("train"), task.train_labels[train], options, settings.seed,
            f"classifier on {row} reconstructions", len(task.classes))
    predicted = {(name, column): predict(classifier, images)
                 for name, classifier in classifiers.items() for column, images in recs.items()}
    correct = {cell: labels == y for cell, labels in predicted.items()}

    clock = time.perf_counter()
    defense = CSCDefense(basis, options.csc, bpda=True, device="cpu")
    attacked = slice(settings.bpda_images)
    for name, classifier in classifiers.items():
        stop_point(stop_requested)
        correct[name, bpda_column(options)], _ = bpda_pgd(
            classifier, defense, task.test_images[attacked], y[attacked],
            eps=options.main_eps, steps=settings.bpda_steps)
        log.info("%s under %s: %.3f", name, bpda_column(options),
                 correct[name, bpda_column(options)].mean())
    seconds[f"BPDA {row}"] = time.perf_counter() - clock
    return CSCRow(reconstructions=recs, correct=correct, predictions=predicted[row, main],
                  seconds=seconds)


def _reconstruct_all(client: Client, name: str, parts: dict[str, np.ndarray], basis: BasisSet,
                     csc: CSCOptions, store: Path, progress: bool,
                     stop_requested: StopRequested) -> dict[str, np.ndarray]:
    """Each part (name -> images) through the reconstruct flow, all in one store."""
    names = [f"{part}/{i:05d}" for part, images in parts.items() for i in range(len(images))]
    items = [image for images in parts.values() for image in images]
    size = items[0].shape[0]
    dataset = Dataset(f"{name}-evaluation", names, items, image_size=size, fit="none")
    summary = reconstruct_dataset(client, dataset, bases=basis, options=csc, store_path=store,
                                  dtype="float32", progress=progress,
                                  stop_requested=stop_requested)
    if summary.failed:
        raise RuntimeError(f"{store}: {len(summary.failed)} images failed to reconstruct")
    stored = read_images(zarr.open_group(store, mode="r"))
    out, start = {}, 0
    for part, images in parts.items():
        out[part], start = stored[start:start + len(images)], start + len(images)
    return out


def _train(images: np.ndarray, labels: np.ndarray, options: EvaluateOptions, seed: int,
           what: str, n_classes: int = 10) -> nn.Module:
    clock = time.perf_counter()
    model = train_classifier(images, labels, n_classes=n_classes, seed=seed,
                             epochs=options.settings.epochs)
    log.info("trained the %s (%d images, %.0f s)", what, len(images),
             time.perf_counter() - clock)
    return model


def _digest(parts: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name, images in parts.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    return digest.hexdigest()[:12]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")

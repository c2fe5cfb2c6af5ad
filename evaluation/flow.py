"""The evaluation flow: classifiers -> attacks -> defenses -> accuracy table.

1. Train the classifier, and a second one with another seed (the transfer
   control: it sees the same adversarial images, undefended).
2. Attack the undefended classifier (ART: FGSM and PGD at each epsilon,
   DeepFool): the paper's threat model.
3. Reconstruct the clean test set, every attacked set and the training set
   with each CSC basis, through :func:`flows.reconstruct.reconstruct_dataset`
   on the Dask runtime, into one float32 store per basis (re-running resumes).
4. Retrain the classifier on each basis's reconstructed training set (the
   paper's protocol) and apply the baseline defenses.
5. Attack every row through its defense (:mod:`evaluation.adaptive`):
   BPDA-PGD with restarts, then APGD-CE and APGD-DLR through ART on the
   images it left standing, at the main budget; and BPDA-PGD at every budget
   of the sweep.  One task per row, budget and chunk of images, on the
   workers.
6. Score every (defense, attack) cell with its n and standard error.

Steps 1, 2 and 4 run here, on the client; steps 3 and 5 on the workers.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zarr
from distributed import Client, as_completed
from torch import nn
from tqdm.auto import tqdm

from evaluation.adaptive import NEVER, attack_through_defense, exact_pgd
from evaluation.attacks import attack
from evaluation.baselines import BASELINES
from evaluation.classifier import predict, to_tensor, train_classifier
from evaluation.defense import CSCDefense, TransformDefense
from evaluation.options import EvaluateOptions
from evaluation.table import (
    NONE,
    TRANSFER,
    adaptive_columns,
    attack_columns,
    autoattack_column,
    eps_label,
    exact_column,
    is_csc,
    main_pgd_column,
    pgd_column,
    retrained,
    sweep_column,
    sweep_worst_column,
    table_layout,
)
from evaluation.tasks import Task
from flows.reconstruct import StoreTarget, reconstruct_dataset
from flows.waiting import StopRequested, each_completed, never, stop_point
from pipeline.basis import BasisSet
from pipeline.config import StoreConfig
from pipeline.datasets import Dataset
from pipeline.options import CSCOptions
from pipeline.store import read_images

log = logging.getLogger(__name__)

CHUNK = 25
"""Images per adaptive-attack task: small enough to spread a row over the workers."""


@dataclass
class Evaluation:
    """Every cell's per-image correctness, and the images the plots need."""

    correct: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    sets: dict[str, np.ndarray] = field(default_factory=dict)  # attack column -> images
    reconstructions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # the classifier's predictions for the plots: "clean", "adversarial" (main PGD) and,
    # per CSC row, the reconstructed adversarial images
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    # the adaptive attacks, per row: BPDA-PGD's first fooling iterate of each image
    # (evaluation.adaptive.bpda_pgd) at the main budget, and per sweep budget
    fooled_at: dict[str, np.ndarray] = field(default_factory=dict)
    sweep_fooled_at: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    # the CSC rows: exact-gradient PGD's first fooling iterate, and per image the cosine
    # between BPDA's and the exact gradient (evaluation.adaptive.exact_pgd)
    exact_fooled_at: dict[str, np.ndarray] = field(default_factory=dict)
    gradient_cosine: dict[str, np.ndarray] = field(default_factory=dict)
    # per row, after BPDA-PGD: the images still standing after each attack of AutoAttack and
    # every attack before it ("APGD" for APGD-CE and -DLR, then evaluation.autoattack.REST)
    standing: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # the test images (indices, sorted) the main adaptive attacks and the sweep ran on
    adaptive_images: np.ndarray = field(default_factory=lambda: np.arange(0))
    sweep_images: np.ndarray = field(default_factory=lambda: np.arange(0))
    seconds: dict[str, float] = field(default_factory=dict)

    def layout(self, options: EvaluateOptions) -> tuple[list[str], list[str]]:
        """The table's rows (those measured) and columns, in order (:func:`table_layout`)."""
        measured = {row for row, column in self.correct if column == "clean"}
        return table_layout(list(self.reconstructions), measured, options)


@dataclass(kw_only=True)
class CSCRow:
    """One CSC basis measured: what its rows (original and retrained classifier) scored."""

    reconstructions: dict[str, np.ndarray]  # attack column -> reconstructed images
    correct: dict[tuple[str, str], np.ndarray]  # (row, column) -> per-image correctness
    predictions: np.ndarray  # the original classifier on the main PGD column's reconstructions
    classifiers: dict[str, nn.Module]  # row -> its classifier (original, retrained)
    seconds: dict[str, float]


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
                          options.settings.seed + 1, TRANSFER, len(task.classes))
    result.seconds["train"] = time.perf_counter() - clock

    clock = time.perf_counter()
    result.sets = _attacked_sets(model, task, options, stop_requested)
    result.seconds["attacks"] = time.perf_counter() - clock
    y, main = task.test_labels, main_pgd_column(options)
    for column, images in result.sets.items():
        predicted = predict(model, images)
        result.correct[NONE, column] = predicted == y
        log.info("%s: undefended accuracy %.3f", column, result.correct[NONE, column].mean())
        if column in ("clean", main):  # for the plots
            result.predictions["clean" if column == "clean" else "adversarial"] = predicted
        if transfer is not None:
            result.correct[TRANSFER, column] = predict(transfer, images) == y

    attacked = {NONE: (model, torch.nn.Identity())}
    for row, basis in bases.items():
        scored = _score_csc_row(client, row, basis, model=model, task=task, sets=result.sets,
                                options=options, out=out, progress=progress,
                                stop_requested=stop_requested)
        result.reconstructions[row] = scored.reconstructions
        result.correct.update(scored.correct)
        result.predictions[row] = scored.predictions
        result.seconds.update(scored.seconds)
        defense = CSCDefense(basis, options.csc, bpda=True, device="cpu")
        attacked.update({name: (classifier, defense)
                         for name, classifier in scored.classifiers.items()})

    clock = time.perf_counter()
    for row, defend in BASELINES.items():
        stop_point(stop_requested)
        for column, images in result.sets.items():
            result.correct[row, column] = predict(model, defend(images)) == y
        attacked[row] = (model, TransformDefense(defend, row))
    result.seconds["baselines"] = time.perf_counter() - clock

    clock = time.perf_counter()
    _attack_adaptively(client, attacked, task, options, result, progress, stop_requested)
    result.seconds["adaptive attacks"] = time.perf_counter() - clock
    return result


def _attacked_sets(model: nn.Module, task: Task, options: EvaluateOptions,
                   stop_requested: StopRequested) -> dict[str, np.ndarray]:
    """Attack column -> the test images it holds ("clean": the test images themselves)."""
    with torch.no_grad():
        n_classes = int(model(to_tensor(task.test_images[:1])).shape[1])
    sets = {}
    for column, name, eps in attack_columns(options):
        stop_point(stop_requested)
        steps = options.settings.apgd_steps if name == "autoattack" else options.settings.pgd_steps
        sets[column] = task.test_images if name == "none" else attack(
            model, task.test_images, task.test_labels, name=name, eps=eps, n_classes=n_classes,
            pgd_steps=steps, seed=options.settings.seed)
    return sets


def _score_csc_row(client: Client, row: str, basis: BasisSet, *, model: nn.Module, task: Task,
                   sets: dict[str, np.ndarray], options: EvaluateOptions, out: Path,
                   progress: bool, stop_requested: StopRequested) -> CSCRow:
    """Reconstruct everything with one basis; score the original classifier and one retrained
    on the reconstructions."""
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
        classifiers[retrained(row)] = _train(
            recs.pop("train"), task.train_labels[train], options, settings.seed,
            f"classifier on {row} reconstructions", len(task.classes))
    predicted = {(name, column): predict(classifier, images)
                 for name, classifier in classifiers.items() for column, images in recs.items()}
    correct = {cell: labels == y for cell, labels in predicted.items()}
    return CSCRow(reconstructions=recs, correct=correct, predictions=predicted[row, main],
                  classifiers=classifiers, seconds=seconds)


def _attack_adaptively(client: Client, attacked: dict[str, tuple[nn.Module, nn.Module]],
                       task: Task, options: EvaluateOptions, result: Evaluation,
                       progress: bool, stop_requested: StopRequested) -> None:
    """Every row through its defense, on the workers: BPDA-PGD then APGD at the main budget,
    BPDA-PGD alone at each budget of the sweep; the cells go into ``result``.

    ``attacked`` maps a row to (classifier, defense module); the
    undefended row's defense is the identity.  One task per (row, budget,
    chunk of :data:`CHUNK` images), the slow CSC rows first.
    """
    settings, main = options.settings, options.main_eps
    images, labels = task.test_images, task.test_labels
    jobs = []  # (row, eps or None for the main attacks, start, future)
    order = sorted(attacked, key=lambda row: not is_csc(row))
    shipped = {row: client.scatter(list(attacked[row]), hash=False) for row in order}
    result.adaptive_images = _subset(len(images), settings.bpda_images, settings.seed)
    result.sweep_images = _subset(len(images), settings.sweep_images, settings.seed)
    chosen = result.adaptive_images
    for row in [row for row in order if isinstance(attacked[row][1], CSCDefense)]:
        classifier, defense = shipped[row]
        for start in range(0, len(chosen), CHUNK):  # the slowest tasks first
            part = chosen[start:start + CHUNK]
            jobs.append((row, "exact", start, client.submit(
                exact_pgd, classifier, defense, images[part], labels[part], eps=main,
                budget=options.exact_budget, seed=settings.seed + start,
                key=f"adaptive-{_slug(row)}-exact-{start}-{uuid.uuid4().hex[:8]}")))
    plan = [(None, main, result.adaptive_images, options.budget),  # None: the main attacks
            *((eps, eps, result.sweep_images, options.sweep_budget) for eps in options.sweep)]
    for name, eps, chosen, budget in plan:
        for row in order:
            classifier, defense = shipped[row]
            for start in range(0, len(chosen), CHUNK):
                part = chosen[start:start + CHUNK]
                jobs.append((row, name, start, client.submit(
                    attack_through_defense, classifier, defense, images[part], labels[part],
                    eps=eps, budget=budget, seed=settings.seed + start, apgd=name is None,
                    key=f"adaptive-{_slug(row)}-{'main' if name is None else eps_label(eps)}"
                        f"-{start}-{uuid.uuid4().hex[:8]}")))
    bar = tqdm(total=len(jobs), desc="adaptive attacks", unit="task", disable=not progress)
    for future in each_completed(as_completed([job[-1] for job in jobs]), stop_requested):
        future.result()  # a failed task raises here, as soon as it fails
        bar.update()
    bar.close()
    _collect(jobs, options, result)


def _subset(total: int, n: int | None, seed: int) -> np.ndarray:
    """``n`` of ``total`` test images (all for None), drawn with ``seed`` and sorted: the test
    set is ordered by class, and its first ``n`` would miss classes."""
    if n is None or n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


def _collect(jobs: list, options: EvaluateOptions, result: Evaluation) -> None:
    """Join the finished chunks of each (row, budget) and write their cells into ``result``."""
    bpda, both, worst = adaptive_columns(options)
    autoattack = autoattack_column(options)
    at_main = [c for c, name, eps in attack_columns(options)
               if eps == options.main_eps and name != "none"]
    parts: dict[tuple[str, float | str | None], list] = {}
    for row, eps, start, future in jobs:
        parts.setdefault((row, eps), []).append((start, future.result()))
    for chunks in parts.values():
        chunks.sort(key=lambda chunk: chunk[0])
    for (row, eps), chunks in parts.items():  # first the exact attacks: the worst case takes them
        if eps == "exact":
            result.exact_fooled_at[row] = np.concatenate([fooled for _, (fooled, _) in chunks])
            result.gradient_cosine[row] = np.concatenate([cos for _, (_, cos) in chunks])
            result.correct[row, exact_column(options)] = result.exact_fooled_at[row] == NEVER
            log.info("%s: %s %.3f (gradient cosine with BPDA's: mean %.3f)", row,
                     exact_column(options), result.correct[row, exact_column(options)].mean(),
                     result.gradient_cosine[row].mean())
    for (row, eps), chunks in parts.items():
        if eps == "exact":
            continue
        fooled_at = np.concatenate([fooled for _, (fooled, _) in chunks])
        if eps is None:
            result.fooled_at[row] = fooled_at
            result.correct[row, bpda] = fooled_at == NEVER
            standing = {name: np.concatenate([after[name] for _, (_, after) in chunks])
                        for name in chunks[0][1][1]}
            result.standing[row] = standing
            result.correct[row, both] = standing["APGD"]
            after_all = list(standing.values())[-1]  # each attack ran on the last's survivors
            if len(standing) > 1:
                result.correct[row, autoattack] = after_all
            # AutoAttack's rule across every attack at this budget: robust only if none fooled it
            exact = result.correct.get((row, exact_column(options)))
            result.correct[row, worst] = np.logical_and.reduce(
                [after_all]
                + [result.correct[row, c][result.adaptive_images]
                                               for c in at_main]
                + ([] if exact is None else [exact]))
            log.info("%s: %s %.3f, %s %.3f, %s %.3f", row, bpda,
                     result.correct[row, bpda].mean(), both, result.correct[row, both].mean(),
                     worst, result.correct[row, worst].mean())
            log.info("%s: still standing after %s", row, ", ".join(
                f"{name} {after.mean():.3f}" for name, after in standing.items()))
        else:
            result.sweep_fooled_at[row, eps] = fooled_at
            result.correct[row, sweep_column(eps)] = fooled_at == NEVER
            transferred = result.correct.get((row, pgd_column(eps)))
            if transferred is not None:
                result.correct[row, sweep_worst_column(eps)] = (
                    (fooled_at == NEVER) & transferred[result.sweep_images])


def _reconstruct_all(client: Client, name: str, parts: dict[str, np.ndarray], basis: BasisSet,
                     csc: CSCOptions, store: Path, progress: bool,
                     stop_requested: StopRequested) -> dict[str, np.ndarray]:
    """Each part (name -> images) through the reconstruct flow, all in one store."""
    names = [f"{part}/{i:05d}" for part, images in parts.items() for i in range(len(images))]
    items = [image for images in parts.values() for image in images]
    size = items[0].shape[0]
    dataset = Dataset(f"{name}-evaluation", names, items, image_size=size, fit="none")
    target = StoreTarget(store, StoreConfig(dtype="float32"))  # the classifier reads floats
    summary = reconstruct_dataset(client, dataset, basis, target, options=csc,
                                  progress=progress, stop_requested=stop_requested)
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

"""What an evaluation writes: the table (CSV, Markdown), the plots and ``summary.json``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from evaluation import checks, plots
from evaluation.adaptive import accuracy_curve
from evaluation.baselines import BASELINES
from evaluation.flow import Evaluation
from evaluation.options import EvaluateOptions
from evaluation.scores import lowpass_energy_share, records
from evaluation.table import (
    adaptive_columns,
    eps_label,
    exact_column,
    is_adaptive,
    main_pgd_column,
    oblivious_apgd_column,
    pgd_column,
    summary_columns,
    sweep_column,
    sweep_worst_column,
)
from evaluation.tasks import Task
from pipeline import __version__


def sanity_checks(result: Evaluation, options: EvaluateOptions,
                  rows: list[str]) -> list[checks.Check]:
    """Convergence, the sweep's largest budget, adaptive <= oblivious on every row, at the
    main budget and at every budget of the sweep."""
    bpda, both, _ = adaptive_columns(options)
    labels = {eps: eps_label(eps) for eps in options.sweep}
    return [*checks.convergence(result.fooled_at, options.budget.iterates),
            *checks.sweep_reaches_zero(result.sweep_fooled_at, labels),
            *checks.adaptive_not_weaker(result.correct, rows,
                                        [(bpda, main_pgd_column(options)),
                                         (both, oblivious_apgd_column(options)),
                                         (exact_column(options), main_pgd_column(options))],
                                        result.adaptive_images),
            *checks.exact_not_weaker(result.correct, exact_column(options), bpda,
                                     result.gradient_cosine),
            *checks.gradient_masking(result.standing, result.exact_fooled_at),
            *checks.adaptive_not_weaker(result.correct, rows,
                                        [(sweep_column(eps), pgd_column(eps))
                                         for eps, label in labels.items()],
                                        result.sweep_images)]


def write_outputs(task: Task, result: Evaluation, options: EvaluateOptions, out: Path, *,
                  seconds: float, bases: dict[str, str], command: str = "") -> None:
    """Tables (CSV, Markdown) with the sanity checks and the verdict, plots and summary.json.

    ``bases`` maps each CSC row to the basis it used; ``command`` is the
    command line that ran the evaluation, recorded in the summary.
    """
    rows, columns = result.layout(options)
    cells = records(result.correct, rows, columns)
    write_csv(cells, out / "results.csv")
    found = sanity_checks(result, options, rows)
    worst = adaptive_columns(options)[-1]
    csc = list(result.reconstructions)
    verdict = checks.verdict(result.correct, csc_rows=csc, baselines=list(BASELINES),
                             oblivious=main_pgd_column(options), adaptive=worst,
                             images=result.adaptive_images, checks=found)
    (out / "results.md").write_text(results_markdown(cells, rows, columns, options, found,
                                                    verdict))
    write_plots(task, result, options, cells, rows, out)
    settings = options.settings
    shares = {column: lowpass_energy_share(task.test_images, images, options.csc)
              for column, images in result.sets.items() if column != "clean"}
    plots.plot_lowpass_share(shares, out / "lowpass_energy.png")
    summary = {
        "task": task.name, "n_train": len(task.train_images), "n_test": len(task.test_images),
        "epsilons": list(options.epsilons), "sweep_epsilons": list(options.sweep),
        "pgd_steps": settings.pgd_steps, "adaptive": {
            "budget": settings.budget, "bpda_steps": settings.bpda_steps,
            "bpda_restarts": settings.bpda_restarts, "apgd_steps": settings.apgd_steps,
            "apgd_restarts": settings.apgd_restarts, "target_classes": settings.target_classes,
            "square_queries": settings.square_queries, "bpda_images": settings.bpda_images,
            "sweep_steps": settings.sweep_steps, "sweep_restarts": settings.sweep_restarts,
            "sweep_images": settings.sweep_images},
        "retrain_images": settings.retrain_images, "epochs": settings.epochs,
        "seed": settings.seed, "csc": options.csc.as_dict(), "bases": bases,
        "version": __version__,
        "sanity_checks": [{"ok": c.ok, "text": c.text} for c in found], "verdict": verdict,
        "lowpass_energy_share_mean": {k: float(np.nanmean(v)) for k, v in shares.items()},
        "seconds": {**{k: round(v, 1) for k, v in result.seconds.items()},
                    "total": round(seconds, 1)},
        "command": command,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_per_image(result, rows, columns, out / "correct.json")


def write_per_image(result: Evaluation, rows: list[str], columns: list[str], path: Path) -> None:
    """correct.json: each cell's 0/1 per image, so that two rows can be compared pairwise.

    Oblivious cells hold every test image; the main adaptive cells the images at
    ``adaptive_images``, the sweep's cells those at ``sweep_images`` (positions
    among the test images), in that order.
    """
    correct = {row: {column: np.asarray(result.correct[row, column]).astype(int).tolist()
                     for column in columns if (row, column) in result.correct} for row in rows}
    path.write_text(json.dumps({"adaptive_images": np.asarray(result.adaptive_images).tolist(),
                                "sweep_images": np.asarray(result.sweep_images).tolist(),
                                "correct": correct}) + "\n")


def results_markdown(cells: list[dict], rows: list[str], columns: list[str],
                    options: EvaluateOptions, found: list[checks.Check], verdict: str) -> str:
    """results.md: the main table, the sanity checks, the verdict, then every cell."""
    budget, sweep = options.budget, options.sweep_budget
    main = summary_columns(options)
    oblivious = [c for c in columns if c not in main and not is_adaptive(c)]
    swept = [sweep_column(eps) for eps in options.sweep]
    worst = [sweep_worst_column(eps) for eps in options.sweep]
    return "\n".join([
        f"## At {eps_label(options.main_eps)}: oblivious and adaptive attacks", "",
        f"Oblivious: made on the undefended classifier (PGD {options.settings.pgd_steps} "
        f"steps; APGD-CE then APGD-DLR, {budget.apgd_steps} iterations). Adaptive, through "
        f"each row's defense with the identity as its gradient (BPDA): BPDA-PGD "
        f"{budget.steps} steps x {budget.restarts} restarts, worst iterate; BPDA+APGD: "
        f"then APGD-CE and APGD-DLR ({budget.apgd_steps} iterations x "
        f"{budget.apgd_restarts} restarts, through ART) on the images left standing; "
        f"BPDA+AutoAttack: then the rest of standard AutoAttack (the reference package), "
        f"each on the images still standing: APGD-T and FAB-T ({budget.apgd_steps} "
        f"iterations for each of {budget.target_classes} target classes) and the "
        f"gradient-free Square ({budget.square_queries} queries); "
        f"exact-PGD (CSC rows): PGD with the exact gradient, back-propagated through the "
        f"unrolled solver, {options.exact_budget.steps} steps x "
        f"{options.exact_budget.restarts} restarts; worst "
        f"case: robust only if no attack at {eps_label(options.main_eps)}, oblivious or "
        "adaptive, fooled it (the defense's robust accuracy).", "",
        markdown_table(cells, rows, main),
        "## Sanity checks", "", *(f"- {c.line()}" for c in found), "",
        "## Verdict", "", verdict, "",
        "## Every oblivious attack", "", markdown_table(cells, rows, oblivious),
        f"## Adaptive sweep (BPDA-PGD {sweep.steps} steps x {sweep.restarts} restarts)", "",
        markdown_table(cells, rows, swept),
        "## Worst case at every budget of the sweep", "",
        "Per image, robust only if neither the sweep's BPDA-PGD nor PGD made on the "
        "undefended classifier (transferred) fooled it, on the sweep's images.", "",
        markdown_table(cells, rows, worst)])


def write_csv(cells: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["defense", "attack", "accuracy", "se", "n"])
        writer.writeheader()
        for cell in cells:
            writer.writerow({**cell, "accuracy": f"{cell['accuracy']:.4f}",
                             "se": f"{cell['se']:.4f}"})


def markdown_table(cells: list[dict], rows: list[str], columns: list[str]) -> str:
    """Rows x columns of "accuracy ± se"; "—" where a cell was not measured, and no line for a
    row with no cell in these columns."""
    by_cell = {(c["defense"], c["attack"]): c for c in cells}
    rows = [row for row in rows if any((row, col) in by_cell for col in columns)]
    ns = sorted({by_cell[row, col]["n"] for row in rows for col in columns
                 if (row, col) in by_cell})
    lines = ["| defense | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for row in rows:
        values = [f"{by_cell[row, col]['accuracy']:.3f} ± {by_cell[row, col]['se']:.3f}"
                  if (row, col) in by_cell else "—" for col in columns]
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    lines.append("")
    lines.append(f"Accuracy ± standard error; n = {', '.join(map(str, ns))} test images per cell.")
    return "\n".join(lines) + "\n"


def write_plots(task: Task, result: Evaluation, options: EvaluateOptions, cells: list[dict],
                rows: list[str], out: Path) -> None:
    """accuracy_vs_eps.png, adaptive_vs_eps.png, adaptive_convergence.png, examples.png."""
    epsilons = [(eps_label(e), e) for e in options.epsilons]
    plots.plot_accuracy_vs_eps(cells, rows, epsilons, out / "accuracy_vs_eps.png")
    sweep = [(sweep_worst_column(e), e) for e in options.sweep]
    plots.plot_adaptive_vs_eps(cells, rows, sweep, out / "adaptive_vs_eps.png")
    iterates = options.budget.iterates
    curves = {row: accuracy_curve(first, iterates) for row, first in result.fooled_at.items()}
    plots.plot_convergence(curves, options.budget.steps + 1, out / "adaptive_convergence.png")
    main, csc = main_pgd_column(options), list(result.reconstructions)[-1]
    shown = np.linspace(0, len(task.test_images) - 1, 8).astype(int)  # across the classes
    plots.plot_attack_examples(
        task.test_images[shown], result.sets[main][shown],
        result.reconstructions[csc][main][shown], task.test_labels[shown],
        {"clean": result.predictions["clean"][shown],
         "adversarial": result.predictions["adversarial"][shown],
         "reconstructed": result.predictions[csc][shown]}, task.classes, out / "examples.png")

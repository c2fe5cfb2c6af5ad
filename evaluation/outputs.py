"""What an evaluation writes: the table (CSV, Markdown), the plots and ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation import plots
from evaluation.baselines import BASELINES
from evaluation.flow import (
    EvaluateOptions,
    Evaluation,
    attack_columns,
    bpda_column,
    eps_label,
    main_pgd_column,
)
from evaluation.report import lowpass_energy_share, markdown_table, records, write_csv
from evaluation.tasks import Task
from pipeline import __version__


def table_layout(result: Evaluation, options: EvaluateOptions) -> tuple[list[str], list[str]]:
    """The table's rows and columns, in order."""
    csc = list(result.reconstructions)
    rows = ["none", "transfer control", *csc, *(f"{r}, retrained" for r in csc), *BASELINES]
    rows = [row for row in rows if (row, "clean") in result.correct]  # those measured
    return rows, [c for c, _, _ in attack_columns(options)] + [bpda_column(options)]


def write_outputs(task: Task, result: Evaluation, options: EvaluateOptions, out: Path, *,
                  seconds: float, bases: dict[str, str], command: str = "") -> None:
    """Table (CSV, Markdown), plots and summary.json in ``out``.

    ``bases`` maps each CSC row to the basis it used; ``command`` is the
    command line that ran the evaluation, recorded in the summary.
    """
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
    settings = options.settings
    summary = {
        "task": task.name, "n_train": len(task.train_images), "n_test": len(task.test_images),
        "epsilons": list(options.epsilons), "pgd_steps": settings.pgd_steps,
        "bpda_steps": settings.bpda_steps, "bpda_images": settings.bpda_images,
        "retrain_images": settings.retrain_images, "epochs": settings.epochs,
        "seed": settings.seed, "csc": options.csc.as_dict(), "bases": bases,
        "version": __version__,
        "lowpass_energy_share_mean": {k: float(np.nanmean(v)) for k, v in shares.items()},
        "seconds": {**{k: round(v, 1) for k, v in result.seconds.items()},
                    "total": round(seconds, 1)},
        "command": command,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

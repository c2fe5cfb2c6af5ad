"""The evaluation's numbers: accuracy with standard errors, the low-pass share.

Plain functions over per-image results, so a table can be rebuilt from them
without rerunning anything.
"""

from __future__ import annotations

import numpy as np

from pipeline.options import CSCOptions
from pipeline.sporco_solver import split_low_high


def accuracy_cell(correct: np.ndarray) -> dict:
    """Accuracy of a (n,) bool array, its binomial standard error sqrt(p(1-p)/n), and n."""
    n = len(correct)
    p = float(np.mean(correct)) if n else float("nan")
    return {"accuracy": p, "se": float(np.sqrt(p * (1 - p) / n)) if n else float("nan"), "n": n}


def records(correct: dict[tuple[str, str], np.ndarray], rows: list[str],
            columns: list[str]) -> list[dict]:
    """One record per table cell that was measured: defense, attack, accuracy, se, n."""
    return [{"defense": row, "attack": column, **accuracy_cell(correct[row, column])}
            for row in rows for column in columns if (row, column) in correct]


def lowpass_energy_share(clean: np.ndarray, adversarial: np.ndarray,
                         options: CSCOptions = CSCOptions()) -> np.ndarray:
    """Share of each perturbation's energy in the low-pass band that CSC passes through.

    The perturbation ``adversarial - clean`` is split by the same Tikhonov
    filter as the images (:func:`pipeline.sporco_solver.split_low_high`); returns
    ``||low||^2 / ||perturbation||^2`` per image, (N,) in [0, 1]-ish (NaN
    where the perturbation is zero).
    """
    shares = []
    for a, b in zip(clean, adversarial, strict=True):
        delta = (b.astype(np.float32) - a.astype(np.float32))
        low, _ = split_low_high(delta, lmbda=options.filter_lmbda, pad=options.pad)
        total = float(np.sum(delta.astype(np.float64) ** 2))
        shares.append(float(np.sum(low.astype(np.float64) ** 2)) / total if total else np.nan)
    return np.array(shares)

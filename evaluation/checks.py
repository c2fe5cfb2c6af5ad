"""The sanity checks of an adaptive evaluation, and the verdict written from the numbers.

Following Carlini et al. 2019 ("On Evaluating Adversarial Robustness") and
Athalye et al. 2018, an evaluation is trusted only when its own numbers pass:

- the adaptive attack has converged: few images fall in its last quarter of
  iterates (:func:`convergence`);
- accuracy falls with epsilon and is near zero at the largest budget for
  every row, or the attack is broken (:func:`sweep_reaches_zero`);
- the adaptive attack is at least as strong as the oblivious one on every
  row, on the same images (:func:`adaptive_not_weaker`);
- on the CSC rows, PGD with the exact gradient of the unrolled solver is at
  least as strong as BPDA-PGD, or the gradients' cosine says why not
  (:func:`exact_not_weaker`);
- the gradient-free Square finds (almost) nothing that every gradient attack
  missed; where it does, the row masks its gradient and the verdict says so
  (:func:`gradient_masking`).

Plain functions over per-image results; each returns :class:`Check` lines
that the report prints, a failed one as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.adaptive import NEVER, accuracy_curve
from evaluation.table import NONE

CONVERGED_SHARE = 0.01
"""Images first fooled in the last quarter of the iterates, as a share of n, that still
count as converged (at least one image is always allowed)."""

MASKING_SHARE = 0.05
"""Images that only Square fooled, as a share of n, above which a row is flagged as masking
its gradient (and at least two images)."""

LARGEST_EPS_ACCURACY = 0.1
"""Accuracy every row must fall to at the sweep's largest budget."""


@dataclass(frozen=True)
class Check:
    """One sanity check: passed or not, and what it measured, in a sentence."""

    ok: bool
    text: str
    row: str | None = None  # the table row it is about, where it is about one

    def line(self) -> str:
        return f"{'ok' if self.ok else 'WARNING'}: {self.text}"


def convergence(fooled_at: dict[str, np.ndarray], iterates: int) -> list[Check]:
    """Per row: did BPDA-PGD stop finding new adversarial images before its budget ran out?"""
    checks = []
    for row, first in fooled_at.items():
        curve = accuracy_curve(first, iterates)
        tail = int(0.75 * iterates)
        late = int(np.sum((first > tail) & (first != NEVER)))
        allowed = max(1, int(CONVERGED_SHARE * len(first)))
        checks.append(Check(late <= allowed, (
            f"{row}: BPDA-PGD accuracy {curve[tail]:.3f} after three quarters of its "
            f"{iterates} iterates, {curve[-1]:.3f} at the end ({late} of {len(first)} images "
            f"fell in the last quarter{'' if late <= allowed else '; not converged'})")))
    return checks


def sweep_reaches_zero(sweep: dict[tuple[str, float], np.ndarray],
                       labels: dict[float, str]) -> list[Check]:
    """Per row: accuracy falls with epsilon and reaches <= 0.1 at the largest one."""
    checks = []
    for row in dict.fromkeys(row for row, _ in sweep):
        epsilons = sorted(eps for r, eps in sweep if r == row)
        accuracy = [float(np.mean(sweep[row, eps] == NEVER)) for eps in epsilons]
        n = len(sweep[row, epsilons[-1]])
        rises = [f"{labels[a]} -> {labels[b]}" for a, b, x, y in
                 zip(epsilons, epsilons[1:], accuracy, accuracy[1:], strict=False)
                 if y > x + 1 / n]
        ok = accuracy[-1] <= LARGEST_EPS_ACCURACY and not rises
        text = (f"{row}: adaptive accuracy {accuracy[-1]:.3f} at {labels[epsilons[-1]]} "
                f"(must be <= {LARGEST_EPS_ACCURACY})")
        if accuracy[-1] > LARGEST_EPS_ACCURACY:
            text += "; the attack does not break this row at a budget that changes the image "
            text += "beyond recognition: treat its numbers as unreliable"
        if rises:
            text += f"; accuracy rose with epsilon ({', '.join(rises)})"
        checks.append(Check(ok, text))
    return checks


def adaptive_not_weaker(correct: dict[tuple[str, str], np.ndarray], rows: list[str],
                        pairs: list[tuple[str, str]], images: np.ndarray) -> list[Check]:
    """Per row and (adaptive, oblivious) column pair: adaptive accuracy <= oblivious accuracy,
    both on the test images the adaptive attack ran on (``images``, indices)."""
    checks = []
    for row in rows:
        for adaptive, oblivious in pairs:
            if (row, adaptive) not in correct or (row, oblivious) not in correct:
                continue
            strong = correct[row, adaptive]
            weak = correct[row, oblivious][images]
            a, b = float(np.mean(strong)), float(np.mean(weak))
            checks.append(Check(a <= b, f"{row}: {adaptive} {a:.3f} "
                                f"{'<=' if a <= b else '>'} {oblivious} {b:.3f} "
                                f"(same {len(strong)} images)"))
    return checks


def exact_not_weaker(correct: dict[tuple[str, str], np.ndarray], exact: str, bpda: str,
                     cosines: dict[str, np.ndarray]) -> list[Check]:
    """Per CSC row: exact-gradient PGD <= BPDA-PGD, on the same images, with the cosine
    between the two gradients that says how far BPDA's identity is from the solver's."""
    checks = []
    for row, cosine in cosines.items():
        if (row, exact) not in correct or (row, bpda) not in correct:
            continue
        a, b = float(np.mean(correct[row, exact])), float(np.mean(correct[row, bpda]))
        checks.append(Check(a <= b, (
            f"{row}: {exact} {a:.3f} {'<=' if a <= b else '>'} {bpda} {b:.3f} on the same "
            f"{len(correct[row, exact])} images; cosine between the exact and the BPDA "
            f"gradient: mean {np.mean(cosine):.2f}, range {np.min(cosine):.2f} to "
            f"{np.max(cosine):.2f}")))
    return checks


def gradient_masking(standing: dict[str, dict[str, np.ndarray]],
                     exact_fooled_at: dict[str, np.ndarray]) -> list[Check]:
    """Per row: did Square, which uses no gradient, fool images that every gradient attack
    (BPDA-PGD, APGD-CE/DLR, APGD-T, FAB-T and, on CSC rows, exact-PGD) left standing?

    ``standing`` is :attr:`evaluation.flow.Evaluation.standing`; rows without
    Square are skipped.  More than :data:`MASKING_SHARE` of n (and at least two
    images) fails the check: the gradient attacks are blind on that row.
    """
    checks = []
    for row, after in standing.items():
        if "Square" not in after:
            continue
        gradient_proof = after["FAB-T"].copy()  # standing before Square
        if row in exact_fooled_at:
            gradient_proof &= exact_fooled_at[row] == NEVER
        only_square = int(np.sum(gradient_proof & ~after["Square"]))
        n, resisted = len(gradient_proof), int(np.sum(gradient_proof))
        masked = only_square >= 2 and only_square > MASKING_SHARE * n
        checks.append(Check(not masked, row=row, text=(
            f"{row}: the gradient-free Square fooled {only_square} of the {resisted} images "
            f"(of {n}) that every gradient attack left standing"
            + ("; gradient masking: the gradient attacks are blind on this row, so its "
               "gradient-based numbers overstate it" if masked else ""))))
    return checks


def verdict(correct: dict[tuple[str, str], np.ndarray], *, csc_rows: list[str],
            baselines: list[str], oblivious: str, adaptive: str, images: np.ndarray,
            checks: list[Check]) -> str:
    """One paragraph from the numbers: what the defense keeps against an attacker who knows it.

    ``oblivious`` and ``adaptive`` are the columns compared (the paper's
    threat model, and the strongest adaptive attack); accuracies are on the
    adaptive attack's test images (``images``, indices).
    """
    def acc(row: str, column: str) -> tuple[float, float]:
        values = correct[row, column]
        values = values if column == adaptive else values[images]
        p = float(np.mean(values))
        return p, float(np.sqrt(p * (1 - p) / len(values)))

    n = len(correct[NONE, adaptive])
    none, _ = acc(NONE, adaptive)
    parts = [f"On {n} test images, the undefended classifier keeps {none:.3f} against "
             f"every attack together ({adaptive})."]
    for row in csc_rows:
        if (row, adaptive) not in correct:
            continue
        (strong, se), (weak, _) = acc(row, adaptive), acc(row, oblivious)
        gain = strong - none
        parts.append(
            f"{row} keeps {strong:.3f} ± {se:.3f} (the oblivious {oblivious} showed "
            f"{weak:.3f}, overstating it by {weak - strong:+.3f}); "
            + (f"{gain:+.3f} over no defense, within two standard errors: no measurable "
               "robustness against an attacker who knows the defense."
               if abs(gain) <= 2 * se else f"{gain:+.3f} over no defense."))
    measured = [row for row in baselines if (row, adaptive) in correct]
    if measured:
        best = max(measured, key=lambda row: acc(row, adaptive)[0])
        parts.append(f"The best baseline under the same attack is {best} with "
                     f"{acc(best, adaptive)[0]:.3f}.")
    masked = [c.row for c in checks if not c.ok and "gradient masking" in c.text]
    if masked:
        parts.append(f"Gradient masking on {', '.join(masked)}: Square, which uses no "
                     "gradient, fooled images that every gradient attack left standing.")
    failed = [c for c in checks if not c.ok]
    parts.append(f"All {len(checks)} sanity checks passed." if not failed else
                 f"{len(failed)} of {len(checks)} sanity checks failed (listed above): "
                 "read the adaptive numbers as upper bounds.")
    return " ".join(parts)

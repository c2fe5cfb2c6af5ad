"""The evaluation's table: its rows and columns, their names and their order, in one place.

Every module that fills, checks, writes or plots the table names a row or a
column through this one (:mod:`evaluation.flow`, :mod:`evaluation.checks`,
:mod:`evaluation.outputs`, :mod:`evaluation.plots`).  Rows are defenses:
:data:`NONE`, :data:`TRANSFER` (a second classifier attacked with the first
one's adversarial images), one row per CSC basis set (named ``CSC ...``) and
the same with a classifier retrained on its reconstructions, then the
baselines.  Columns are attacks at a budget: the oblivious ones, made on the
undefended classifier, and the adaptive ones, made through each row's
defense.
"""

from __future__ import annotations

from evaluation.baselines import BASELINES
from evaluation.options import EvaluateOptions

NONE = "none"
"""The undefended classifier's row."""
TRANSFER = "transfer control"
"""The transfer control's row: a second classifier, the first one's adversarial images."""
CSC_PREFIX = "CSC"
"""How every CSC row's name begins (``CSC one basis``, ``CSC per-cluster``)."""
_RETRAINED = ", retrained"


def retrained(row: str) -> str:
    """The row of ``row``'s defense with a classifier retrained on its reconstructions."""
    return row + _RETRAINED


def is_retrained(row: str) -> bool:
    return row.endswith(_RETRAINED)


def is_csc(row: str) -> bool:
    """A CSC row, with the original or a retrained classifier."""
    return row.startswith(CSC_PREFIX)


def is_adaptive(column: str) -> bool:
    """A column of an attack made through the defense (or the worst case over all)."""
    return column.startswith(("BPDA", "exact-PGD", "worst case"))


def attack_columns(options: EvaluateOptions) -> list[tuple[str, str, float]]:
    """(column name, attack, epsilon) in table order, "clean" first.

    PGD runs at every budget of the table and of the adaptive sweep: at each
    sweep budget the worst case takes it with the adaptive attack.
    """
    columns = [("clean", "none", 0.0)]
    columns += [(f"FGSM {eps_label(e)}", "fgsm", e) for e in options.epsilons]
    columns += [(pgd_column(e), "pgd", e)
                for e in sorted(set(options.epsilons) | set(options.sweep))]
    return columns + [(oblivious_apgd_column(options), "autoattack", options.main_eps),
                      ("DeepFool", "deepfool", 0.0)]


def adaptive_columns(options: EvaluateOptions) -> list[str]:
    """The adaptive attacks at the main budget: BPDA-PGD alone, with APGD after it, and the
    worst case over every attack at that budget (adaptive and oblivious)."""
    label = eps_label(options.main_eps)
    return [f"BPDA-PGD {label}", f"BPDA+APGD {label}", f"worst case {label}"]


def autoattack_column(options: EvaluateOptions) -> str:
    """BPDA-PGD, then the whole of standard AutoAttack through the defense (APGD-CE, APGD-DLR,
    APGD-T, FAB-T, Square), each on the images the attacks before left standing."""
    return f"BPDA+AutoAttack {eps_label(options.main_eps)}"


def exact_column(options: EvaluateOptions) -> str:
    """PGD with the exact gradient through the unrolled solver, at the main budget."""
    return f"exact-PGD {eps_label(options.main_eps)}"


def sweep_column(eps: float) -> str:
    return f"BPDA-PGD {eps_label(eps)} sweep"


def sweep_worst_column(eps: float) -> str:
    """Per image, robust only if neither the sweep's BPDA-PGD nor the transferred PGD at
    ``eps`` fooled it."""
    return f"worst case {eps_label(eps)} sweep"


def oblivious_apgd_column(options: EvaluateOptions) -> str:
    return f"APGD {eps_label(options.main_eps)}"


def pgd_column(eps: float) -> str:
    """Oblivious PGD at ``eps`` (made on the undefended classifier)."""
    return f"PGD {eps_label(eps)}"


def main_pgd_column(options: EvaluateOptions) -> str:
    """The PGD column at the main budget: the plots' example attack."""
    return pgd_column(options.main_eps)


def eps_label(eps: float) -> str:
    """8/255 for budgets in grey levels, 0.1 for round decimals."""
    if round(eps, 3) == eps or abs(eps * 255 - round(eps * 255)) > 1e-6:
        return f"{eps:g}"
    return f"{round(eps * 255)}/255"


def table_layout(csc_rows: list[str], measured: set[str],
                 options: EvaluateOptions) -> tuple[list[str], list[str]]:
    """The table's rows and columns, in order.

    Rows: the undefended classifier, the transfer control, each CSC row
    (``csc_rows``), each retrained, the baselines; only those ``measured``.
    Columns: every oblivious attack, then the adaptive ones and the sweep.
    """
    rows = [NONE, TRANSFER, *csc_rows, *map(retrained, csc_rows), *BASELINES]
    columns = [c for c, _, _ in attack_columns(options)] + _adaptive(options)
    return [row for row in rows if row in measured], (
        columns + [sweep_column(eps) for eps in options.sweep]
        + [sweep_worst_column(eps) for eps in options.sweep])


def summary_columns(options: EvaluateOptions) -> list[str]:
    """The main table at the main budget: clean, oblivious PGD and APGD, adaptive ones."""
    return ["clean", main_pgd_column(options), oblivious_apgd_column(options),
            *_adaptive(options)]


def _adaptive(options: EvaluateOptions) -> list[str]:
    """The main budget's adaptive columns, exact-gradient PGD before the worst case."""
    bpda, both, worst = adaptive_columns(options)
    return [bpda, both, autoattack_column(options), exact_column(options), worst]

"""What one evaluation runs: its settings, the CSC options of its rows, its budgets.

The L-inf budgets per task are here (:data:`EPSILONS`, :data:`SWEEP`); the
attacks' iterations come from the config's ``evaluate`` section
(:class:`pipeline.config.EvaluateConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

from evaluation.adaptive import Budget
from pipeline.config import EvaluateConfig
from pipeline.options import CSCOptions

_IN_GREY_LEVELS = (4 / 255, 8 / 255, 16 / 255)
_SWEEP_IN_GREY_LEVELS = tuple(k / 255 for k in (2, 4, 8, 16, 32, 64))

EPSILONS = {"textures": _IN_GREY_LEVELS, "scenes": _IN_GREY_LEVELS, "digits": (0.05, 0.1, 0.2)}
"""L-inf budgets per task; the middle one is the main budget (the adaptive attacks, the
plots' examples)."""

SWEEP = {"textures": _SWEEP_IN_GREY_LEVELS, "scenes": _SWEEP_IN_GREY_LEVELS,
         "digits": (0.025, 0.05, 0.1, 0.2, 0.3, 0.4)}
"""L-inf budgets of the adaptive sweep per task: from small to where nothing should survive."""

@dataclass(frozen=True)
class EvaluateOptions:
    """What one evaluation runs: the config's ``evaluate`` section, the CSC settings of its
    defended rows, and the L-inf budgets (``EPSILONS`` of the task)."""

    settings: EvaluateConfig = EvaluateConfig()
    csc: CSCOptions = CSCOptions()
    epsilons: tuple[float, ...] = EPSILONS["textures"]
    sweep: tuple[float, ...] = SWEEP["textures"]

    @classmethod
    def for_task(cls, task: str, settings: EvaluateConfig, csc: CSCOptions) -> EvaluateOptions:
        """The task's budgets (the textures task's, in grey levels, for a data set of the
        user's)."""
        known = task if task in EPSILONS else "textures"
        return cls(settings, csc, EPSILONS[known], SWEEP[known])

    @property
    def main_eps(self) -> float:
        return self.epsilons[len(self.epsilons) // 2]

    @property
    def budget(self) -> Budget:
        """The main adaptive attacks' iterations."""
        s = self.settings
        return Budget(s.bpda_steps, s.bpda_restarts, s.apgd_steps, s.apgd_restarts,
                      s.target_classes, s.square_queries)

    @property
    def exact_budget(self) -> Budget:
        """Exact-gradient PGD's iterations (the CSC rows; no APGD)."""
        return Budget(self.settings.exact_steps, self.settings.exact_restarts, 0, 0)

    @property
    def sweep_budget(self) -> Budget:
        """The sweep's BPDA-PGD iterations (no APGD)."""
        return Budget(self.settings.sweep_steps, self.settings.sweep_restarts, 0, 0)

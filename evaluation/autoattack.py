"""The rest of standard AutoAttack through a defense: APGD-T, FAB-T and Square.

Standard AutoAttack (Croce and Hein 2020) runs APGD-CE, APGD-T (targeted DLR
loss, 9 target classes), FAB-T (targeted, minimal L-inf perturbation, 9
targets) and Square (5,000 queries), each on the images the attacks before
left correctly classified.  APGD-CE and APGD-DLR come from ART
(:mod:`evaluation.adaptive`); the three here are the authors' reference
implementation (the ``pyautoattack`` package), attacking ``model(defense(.))``:

- the defense's forward pass is the real one, and its backward pass is the
  defense's own (BPDA's identity for a CSC or transform defense with
  ``bpda=True``), so APGD-T and FAB-T are adaptive gradient attacks;
- Square only reads the defended classifier's outputs.  It is the standard
  check against gradient masking: a defense that hides or breaks its gradient
  stops the gradient attacks but not Square (:func:`evaluation.checks.gradient_masking`).

Every attack keeps any point that fooled the defended classifier within the
L-inf ball (APGD's best adversarial iterate, FAB's smallest in-budget
perturbation, Square's first success); a returned point outside the ball
does not count.  Images are (N, H, W, 3) float32 in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from evaluation.classifier import to_tensor

REST = ("APGD-T", "FAB-T", "Square")
"""The attacks of :func:`rest_of_autoattack`, in AutoAttack's order; Square is the last and
the only one that uses no gradient."""


class Defended(nn.Module):
    """``model(defense(x))``: (N, 3, H, W) in [0, 1] -> logits; the attacks' target."""

    def __init__(self, model: nn.Module, defense: nn.Module):
        super().__init__()
        self.model, self.defense = model, defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.defense(x))


def rest_of_autoattack(model: nn.Module, defense: nn.Module, images: np.ndarray,
                       labels: np.ndarray, standing: np.ndarray, *, eps: float, steps: int,
                       target_classes: int, square_queries: int, seed: int = 0,
                       attacks: tuple[str, ...] = REST) -> dict[str, np.ndarray]:
    """APGD-T, FAB-T and Square through ``defense``, each on the images still ``standing``.

    Parameters
    ----------
    standing : (N,) bool
        The images the attacks before left correctly classified.
    steps : int
        Iterations of APGD-T and of FAB-T per target class (AutoAttack: 100).
    target_classes : int
        Target classes of the targeted attacks, the most likely wrong ones
        first (AutoAttack: 9; at most the classes less one).  APGD-T's loss
        needs four classes or more (it reads the fourth largest logit): with
        fewer it is skipped, as AutoAttack's own check advises.
    square_queries : int
        Queries of Square per image (AutoAttack: 5,000).
    attacks : tuple of str
        Those of :data:`REST` to run, in AutoAttack's order.

    Returns
    -------
    dict
        Attack name (:data:`REST`) -> (N,) bool, still standing after it and
        every attack before it.
    """
    from pyautoattack.autopgd_base import APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    defended = Defended(model, defense).eval()
    x, y = to_tensor(images), torch.from_numpy(np.asarray(labels, np.int64))
    with torch.no_grad():
        n_classes = int(defended(x[:1]).shape[1])
    targets = max(1, min(target_classes, n_classes - 1))
    built = {
        "APGD-T": APGDAttack_targeted(defended, n_iter=steps, eps=eps, seed=seed,
                                      n_target_classes=targets, device="cpu"),
        "FAB-T": FABAttack_PT(defended, n_iter=steps, eps=eps, seed=seed, targeted=True,
                              n_target_classes=targets, device="cpu"),
        "Square": SquareAttack(defended, n_queries=square_queries, eps=eps, p_init=0.8,
                               seed=seed, resc_schedule=False, device="cpu"),
    }
    robust, after = np.asarray(standing, bool).copy(), {}
    for name in [name for name in REST if name in attacks]:
        attack = built[name]
        chosen = np.flatnonzero(robust)
        if len(chosen) and (name != "APGD-T" or n_classes >= 4):
            adversarial = attack.perturb(x[chosen].clone(), y[chosen].clone()).detach()
            robust[chosen[_fooled(defended, x[chosen], adversarial, y[chosen], eps)]] = False
        after[name] = robust.copy()
    return after


def _fooled(defended: nn.Module, x: torch.Tensor, adversarial: torch.Tensor, y: torch.Tensor,
            eps: float) -> np.ndarray:
    """(n,) bool: the point is in the L-inf ball and in [0, 1], and the defended classifier
    is wrong on it."""
    distance = (adversarial - x).abs().flatten(1).amax(1)
    inside = (distance <= eps + 1e-6) & (adversarial.flatten(1).amin(1) >= 0) \
        & (adversarial.flatten(1).amax(1) <= 1)
    with torch.no_grad():
        wrong = defended(adversarial).argmax(1) != y
    return (inside & wrong).numpy()

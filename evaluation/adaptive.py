"""Adaptive attacks through a defense: BPDA-PGD with restarts, and ART's APGD through it.

Every defended row (and the undefended one, through the identity) is attacked
the same way, with the defense in the forward pass and the identity as its
gradient (BPDA, Athalye et al. 2018):

- :func:`bpda_pgd`: L-inf PGD on the cross-entropy, ``steps`` steps whose size
  falls geometrically from eps/4 to eps/40, from a random start, ``restarts``
  times; the defended classifier is scored at every iterate, and an image
  counts as robust only if it was right at all of them (the worst iterate of
  the worst restart decides).  An image is dropped from the batch as soon as
  it is fooled, so a converged attack costs little: the budget is spent on
  the images that resist.
- :func:`apgd_images`: ART's ``AutoProjectedGradientDescent`` (Croce and
  Hein 2020; cross-entropy or DLR loss) on a ``PyTorchClassifier`` whose
  preprocessing defence is the defense (:mod:`evaluation.art_adapter`), the
  way a user of ART attacks it.
- :func:`apgd_ce_then_dlr`: APGD-CE, then APGD-DLR, each on the images the
  attacks before left standing (AutoAttack's rule); after BPDA-PGD, the
  evaluation's BPDA+APGD (:func:`adaptive_autoattack`).
- :func:`exact_pgd`: on a CSC row, the same PGD with the exact gradient of
  the reconstruction (back-propagated through the unrolled solver,
  :mod:`pipeline.unrolled`), and the cosine between that gradient and
  BPDA's (:func:`gradient_cosine`).

Images are (N, H, W, 3) float32 in [0, 1]; epsilons are L-inf in that range.
Each function returns, per image, the first iterate at which the defended
classifier was wrong (:func:`bpda_pgd`) or whether it was never wrong.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from evaluation.autoattack import rest_of_autoattack
from evaluation.classifier import to_tensor

NEVER = -1
"""``fooled_at`` of an image the attack never fooled."""


@dataclass(frozen=True)
class Budget:
    """Iterations of the adaptive attacks: BPDA-PGD ``steps`` x ``restarts``; APGD
    ``apgd_steps`` x ``apgd_restarts`` for each of its two losses; APGD-T and FAB-T
    ``apgd_steps`` for each of ``target_classes``; Square ``square_queries``
    (:mod:`evaluation.autoattack`; 0: not run)."""

    steps: int = 100
    restarts: int = 5
    apgd_steps: int = 100
    apgd_restarts: int = 1
    target_classes: int = 9
    square_queries: int = 5000

    @property
    def iterates(self) -> int:
        """Points scored by BPDA-PGD: each restart scores its start and every step."""
        return self.restarts * (self.steps + 1)


def step_sizes(eps: float, steps: int) -> np.ndarray:
    """(steps,) step sizes falling geometrically from eps/4 to eps/40."""
    if steps == 1:
        return np.array([eps / 4])
    return eps / 4 * 0.1 ** (np.arange(steps) / (steps - 1))


def bpda_pgd(model: nn.Module, defense: nn.Module, images: np.ndarray, labels: np.ndarray, *,
             eps: float, steps: int, restarts: int = 1, seed: int = 0) -> np.ndarray:
    """PGD through ``defense`` (identity backward), scored at every iterate.

    Returns ``fooled_at``: (N,) int, for each image the first iterate at which
    ``model(defense(.))`` was wrong: 0 the clean image, ``1 + r * (steps + 1)
    + s`` the ``s``-th point of restart ``r`` (``s = 0`` its random start);
    :data:`NEVER` (-1) for an image right at every iterate.
    """
    x = to_tensor(images)
    y = torch.from_numpy(np.asarray(labels, np.int64))
    generator = torch.Generator().manual_seed(seed)
    fooled_at = np.full(len(x), NEVER)
    with torch.no_grad():
        fooled_at[(model(defense(x)).argmax(1) != y).numpy()] = 0
    sizes = step_sizes(eps, steps)
    for restart in range(restarts):
        active = np.flatnonzero(fooled_at == NEVER)
        if not len(active):
            break
        start = x[active]
        noise = (torch.rand(start.shape, generator=generator) * 2 - 1) * eps
        adversarial, wanted = torch.clamp(start + noise, 0, 1), y[active]
        for step in range(steps + 1):
            adversarial.requires_grad_(True)
            logits = model(defense(adversarial))
            wrong = (logits.argmax(1) != wanted).numpy()
            fooled_at[active[wrong]] = 1 + restart * (steps + 1) + step
            if step == steps or wrong.all():
                break
            # Summed, not averaged: each image's gradient does not depend on the batch.
            loss = nn.functional.cross_entropy(logits, wanted, reduction="sum")
            grad, = torch.autograd.grad(loss, adversarial)
            keep = torch.from_numpy(~wrong)
            with torch.no_grad():
                moved = adversarial[keep] + float(sizes[step]) * grad[keep].sign()
                adversarial = torch.clamp(torch.min(torch.max(moved, start[keep] - eps),
                                                    start[keep] + eps), 0, 1)
            active, start, wanted = active[~wrong], start[keep], wanted[keep]
    return fooled_at


def apgd_images(model: nn.Module, defense: nn.Module | None, images: np.ndarray,
                labels: np.ndarray, *, eps: float, loss: str, steps: int, restarts: int = 1,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ART's APGD (``loss``: "cross_entropy" or "difference_logits_ratio") through ``defense``.

    The defense is ART's preprocessing defence of the attacked
    ``PyTorchClassifier`` (a CSC defense through
    :class:`evaluation.art_adapter.CSCPreprocessor`, others through
    :class:`~evaluation.art_adapter.DefensePreprocessor`; None: undefended).
    Returns the adversarial images ART made (N, H, W, 3) and (N,) bool, True
    where the defended classifier is still right on them.
    """
    from art.attacks.evasion import AutoProjectedGradientDescent

    from evaluation.art_adapter import art_classifier

    classifier = art_classifier(model, defense, n_classes=_n_classes(model, images),
                                size=images.shape[1])
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (ART draws its random start from NumPy's global generator)
    attack = AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps,
                                          max_iter=steps, nb_random_init=restarts,
                                          loss_type=loss, batch_size=128, verbose=False)
    x = to_tensor(images).numpy()
    adversarial = np.clip(attack.generate(x=x, y=np.asarray(labels)), 0.0, 1.0)
    still_right = classifier.predict(adversarial).argmax(1) == np.asarray(labels)
    return adversarial.transpose(0, 2, 3, 1).astype(np.float32), still_right


def apgd_ce_then_dlr(model: nn.Module, defense: nn.Module | None, images: np.ndarray,
                     labels: np.ndarray, standing: np.ndarray, *, eps: float, steps: int,
                     restarts: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """APGD-CE, then APGD-DLR (3 classes or more), through ``defense``, each on the images
    still ``standing`` (N,) bool (AutoAttack's rule).

    Returns ``(adversarial, robust)``: each image's adversarial version (the
    first that fooled it, else the last loss's; ``images`` where no attack
    ran) and the (N,) bool still standing after both losses.
    """
    adversarial, robust = images.copy(), np.asarray(standing, bool).copy()
    for loss in apgd_losses(_n_classes(model, images)):
        chosen = np.flatnonzero(robust)
        if not len(chosen):
            break
        adversarial[chosen], robust[chosen] = apgd_images(
            model, defense, images[chosen], labels[chosen], eps=eps, loss=loss, steps=steps,
            restarts=restarts, seed=seed)
    return adversarial, robust


def adaptive_autoattack(model: nn.Module, defense: nn.Module | None, images: np.ndarray,
                        labels: np.ndarray, robust: np.ndarray, *, eps: float, budget: Budget,
                        seed: int = 0) -> np.ndarray:
    """:func:`apgd_ce_then_dlr` with the budget's APGD iterations, on the images still
    ``robust`` (N,) bool after the attacks before (BPDA-PGD's survivors); returns the (N,)
    bool still standing."""
    return apgd_ce_then_dlr(model, defense, images, labels, robust, eps=eps,
                            steps=budget.apgd_steps, restarts=budget.apgd_restarts,
                            seed=seed)[1]


def accuracy_curve(fooled_at: np.ndarray, iterates: int) -> np.ndarray:
    """(iterates + 1,) accuracy after each iterate: the share of images not fooled so far."""
    fooled_at = np.asarray(fooled_at)
    first = np.where(fooled_at == NEVER, iterates + 1, fooled_at)
    return np.array([(first > k).mean() for k in range(iterates + 1)])


def apgd_losses(n_classes: int) -> tuple[str, ...]:
    """AutoAttack's two losses; DLR needs three classes or more (it uses the third logit)."""
    return ("cross_entropy", "difference_logits_ratio")[:1 if n_classes < 3 else 2]


def _n_classes(model: nn.Module, images: np.ndarray) -> int:
    with torch.no_grad():
        return int(model(to_tensor(images[:1])).shape[1])


def gradient_cosine(model: nn.Module, bpda: nn.Module, exact: nn.Module, images: np.ndarray,
                    labels: np.ndarray) -> np.ndarray:
    """(N,) cosine between each image's loss gradient through ``bpda`` (the identity as the
    reconstruction's gradient) and through ``exact`` (the unrolled solver's)."""
    x, y = to_tensor(images), torch.from_numpy(np.asarray(labels, np.int64))
    gradients = []
    for defense in (bpda, exact):
        point = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(defense(point)), y, reduction="sum")
        gradient, = torch.autograd.grad(loss, point)
        gradients.append(gradient.flatten(1))
    return nn.functional.cosine_similarity(*gradients, dim=1).numpy()


def exact_pgd(model: nn.Module, defense: nn.Module, images: np.ndarray, labels: np.ndarray, *,
              eps: float, budget: Budget, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One task of the evaluation: PGD with the exact gradient through a CSC ``defense``.

    :func:`bpda_pgd` through a copy of the defense that back-propagates
    through the unrolled solver (``exact=True``), with the budget's steps and
    restarts; returns its (N,) ``fooled_at`` and the (N,) cosine between the
    BPDA and the exact gradient at the clean images (:func:`gradient_cosine`).
    """
    exact = copy.copy(defense)
    exact.exact = True
    cosine = gradient_cosine(model, defense, exact, images, labels)
    fooled_at = bpda_pgd(model, exact, images, labels, eps=eps, steps=budget.steps,
                         restarts=budget.restarts, seed=seed)
    return fooled_at, cosine


def attack_through_defense(model: nn.Module, defense: nn.Module, images: np.ndarray,
                   labels: np.ndarray, *, eps: float, budget: Budget, seed: int = 0,
                   apgd: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One task of the evaluation: BPDA-PGD, then (``apgd``) the whole of standard AutoAttack
    on its survivors: APGD-CE and -DLR (ART), then APGD-T, FAB-T and Square
    (:func:`evaluation.autoattack.rest_of_autoattack`).

    Returns ``(fooled_at, standing)``: BPDA-PGD's (N,) first fooling iterate
    (:func:`bpda_pgd`) and, per attack after it ("APGD", then
    :data:`~evaluation.autoattack.REST`), the (N,) bool still standing after it
    and every attack before it (empty without ``apgd``).
    """
    fooled_at = bpda_pgd(model, defense, images, labels, eps=eps, steps=budget.steps,
                         restarts=budget.restarts, seed=seed)
    if not apgd:
        return fooled_at, {}
    defended = None if isinstance(defense, nn.Identity) else defense
    robust = adaptive_autoattack(model, defended, images, labels, fooled_at == NEVER, eps=eps,
                                 budget=budget, seed=seed)
    standing = {"APGD": robust}
    if budget.square_queries:
        standing.update(rest_of_autoattack(
            model, defense, images, labels, robust, eps=eps, steps=budget.apgd_steps,
            target_classes=budget.target_classes, square_queries=budget.square_queries,
            seed=seed))
    return fooled_at, standing

"""The oblivious attacks: ART's FGSM, PGD, DeepFool and APGD, made on the undefended classifier.

The paper's threat model: the attacker does not know the defense, and the
defended rows meet the images made on the bare classifier.  The attacks come
from the Adversarial Robustness Toolbox (ART, an optional dependency:
``pip install -e ".[evaluate]"``); the adaptive attacks through the defense
are :mod:`evaluation.adaptive`.

Images are (N, H, W, 3) float32 in [0, 1]; epsilons are L-inf in that range.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from evaluation.classifier import to_tensor

ATTACKS = ("fgsm", "pgd", "deepfool", "autoattack")


def attack(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, name: str,
           eps: float, n_classes: int = 10, pgd_steps: int = 20, seed: int = 0) -> np.ndarray:
    """Adversarial versions of ``images`` made on ``model`` (white box, undefended).

    ``fgsm``: one signed-gradient step of size ``eps``; ``pgd``: ``pgd_steps``
    steps of ``eps / 4`` from a random start, projected onto the L-inf ball;
    ``deepfool``: minimal L2 steps to the nearest decision boundary (``eps``
    unused: its perturbation is as large as it needs); ``autoattack``:
    APGD-CE then APGD-DLR (``pgd_steps`` iterations each; Croce and Hein
    2020), the second on the images the first left correctly classified.
    """
    if name == "autoattack":
        from evaluation.adaptive import apgd_ce_then_dlr

        return apgd_ce_then_dlr(model, None, images, labels, np.ones(len(images), bool),
                                eps=eps, steps=pgd_steps, seed=seed)[0]
    from art.attacks.evasion import DeepFool, FastGradientMethod, ProjectedGradientDescent

    from evaluation.art_adapter import art_classifier

    classifier = art_classifier(model, n_classes=n_classes, size=images.shape[1])
    if name == "fgsm":
        method = FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=100)
    elif name == "pgd":
        torch.manual_seed(seed)
        np.random.seed(seed)  # noqa: NPY002 (ART draws its random start from NumPy's global generator)
        method = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=eps / 4,
                                          max_iter=pgd_steps, num_random_init=1,
                                          batch_size=100, verbose=False)
    elif name == "deepfool":
        method = DeepFool(classifier, max_iter=50, nb_grads=n_classes, batch_size=100,
                          verbose=False)
    else:
        raise ValueError(f"unknown attack {name!r}; one of {', '.join(ATTACKS)}")
    x = to_tensor(images).numpy()
    adversarial = method.generate(x=x, y=np.asarray(labels))
    return np.clip(adversarial.transpose(0, 2, 3, 1), 0.0, 1.0).astype(np.float32)

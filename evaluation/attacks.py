"""Adversarial attacks for the evaluation: ART's FGSM, PGD and DeepFool, and BPDA-PGD.

The attacks on the undefended classifier come from the Adversarial Robustness
Toolbox (ART, an optional dependency: ``pip install -e ".[evaluate]"``).
The adaptive attack runs PGD through the defense with an identity gradient
for the reconstruction (BPDA) and scores every iterate, so an image counts as
defended only if no iterate fooled the defended classifier.

Images are (N, H, W, 3) float32 in [0, 1]; epsilons are L-inf in that range.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from evaluation.classifier import to_tensor

ATTACKS = ("fgsm", "pgd", "deepfool")


def art_classifier(model: nn.Module, *, n_classes: int, size: int, defences=None):
    """Wrap ``model`` as ART's ``PyTorchClassifier`` on (N, 3, size, size) inputs in [0, 1]."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(3, size, size),
                             nb_classes=n_classes, clip_values=(0.0, 1.0),
                             preprocessing_defences=defences, device_type="cpu")


def attack(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, name: str,
           eps: float, n_classes: int = 10, pgd_steps: int = 20, seed: int = 0) -> np.ndarray:
    """Adversarial versions of ``images`` made on ``model`` (white box, undefended).

    ``fgsm``: one signed-gradient step of size ``eps``; ``pgd``: ``pgd_steps``
    steps of ``eps / 4`` from a random start, projected onto the L-inf ball;
    ``deepfool``: minimal L2 steps to the nearest decision boundary (``eps``
    unused: its perturbation is as large as it needs).
    """
    from art.attacks.evasion import DeepFool, FastGradientMethod, ProjectedGradientDescent

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


def bpda_pgd(model: nn.Module, defense: nn.Module, images: np.ndarray, labels: np.ndarray,
             *, eps: float, steps: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """PGD through ``defense`` (whose backward pass is the identity), scored at every iterate.

    Returns ``(defended, final)``: (N,) bool, True where the defended
    classifier was right at every one of the ``steps`` iterates (the worst
    iterate decides), and the final adversarial images.
    """
    x = to_tensor(images)
    y = torch.from_numpy(np.asarray(labels, np.int64))
    adversarial = x.clone()
    defended = torch.ones(len(x), dtype=torch.bool)
    for step in range(steps + 1):
        adversarial.requires_grad_(True)
        logits = model(defense(adversarial))
        if step > 0:  # iterate 0 is the clean image
            defended &= logits.argmax(1) == y
        if step == steps:
            break
        grad, = torch.autograd.grad(nn.functional.cross_entropy(logits, y), adversarial)
        with torch.no_grad():
            adversarial = adversarial + (eps / 4) * grad.sign()
            adversarial = torch.clamp(torch.min(torch.max(adversarial, x - eps), x + eps), 0, 1)
    final = adversarial.detach().permute(0, 2, 3, 1).numpy()
    return defended.numpy(), final

"""The defenses as preprocessing defences of the Adversarial Robustness Toolbox (ART).

``PyTorchClassifier(model, ..., preprocessing_defences=[CSCPreprocessor(bases)])``
puts the reconstruction in front of the classifier: ART's predictions go
through it, and ART's attacks get the identity gradient through it (BPDA),
which makes them adaptive attacks on the defended classifier.
:class:`DefensePreprocessor` does the same for any module of
:mod:`evaluation.defense` (the baselines).  Needs ART
(``pip install -e ".[evaluate]"``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from art.estimators.classification import PyTorchClassifier

from evaluation.defense import CSCDefense, TransformDefense
from pipeline.basis import BasisSet
from pipeline.options import CSCOptions


class DefensePreprocessor(PreprocessorPyTorch):
    """ART preprocessor: x (N, 3, H, W) in [0, 1] -> ``defense(x)``; labels unchanged.

    ``defense`` is a :class:`evaluation.defense.TransformDefense` with
    ``bpda=True``: ART differentiates through ``forward``, so its attacks get
    the identity gradient of the transformation.  ``apply_fit`` and
    ``apply_predict`` are ART's switches (transform training data too, or
    only inputs at prediction time, the default).
    """

    def __init__(self, defense: TransformDefense, *, apply_fit: bool = False,
                 apply_predict: bool = True):
        super().__init__(device_type="cpu", is_fitted=True, apply_fit=apply_fit,
                         apply_predict=apply_predict)
        if not defense.bpda:
            raise ValueError("an ART preprocessor needs the BPDA gradient: bpda=True")
        self.defense = defense

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        return self.defense(x), y


class CSCPreprocessor(DefensePreprocessor):
    """ART preprocessor: x (N, 3, H, W) in [0, 1] -> its CSC reconstruction; labels unchanged.

    Parameters
    ----------
    bases : BasisSet, str or Path
        As :class:`evaluation.defense.CSCDefense`.
    options : CSCOptions
        Solver settings.
    apply_fit, apply_predict : bool
        ART's switches: reconstruct training data too (the retrained-classifier
        protocol), or only inputs at prediction time (the default).
    """

    params = ["options"]

    def __init__(self, bases: BasisSet | str | Path, options: CSCOptions = CSCOptions(), *,
                 apply_fit: bool = False, apply_predict: bool = True):
        super().__init__(CSCDefense(bases, options, bpda=True, device="cpu"),
                         apply_fit=apply_fit, apply_predict=apply_predict)
        self.options = options


def art_classifier(model: torch.nn.Module, defense: torch.nn.Module | None = None, *,
                   n_classes: int, size: int) -> PyTorchClassifier:
    """ART's ``PyTorchClassifier`` on (N, 3, size, size) inputs in [0, 1], with ``defense``
    (None: none) as its preprocessing defence."""
    if isinstance(defense, CSCDefense):
        defences = [CSCPreprocessor(defense.bases, defense.options)]
    elif isinstance(defense, TransformDefense):
        defences = [DefensePreprocessor(defense)]
    elif defense is None or isinstance(defense, torch.nn.Identity):
        defences = None
    else:
        raise TypeError(f"no ART preprocessor for {type(defense).__name__}")
    return PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(),
                             input_shape=(3, size, size), nb_classes=n_classes,
                             clip_values=(0.0, 1.0), preprocessing_defences=defences,
                             device_type="cpu")

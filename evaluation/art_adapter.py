"""The CSC defense as a preprocessing defence of the Adversarial Robustness Toolbox (ART).

``PyTorchClassifier(model, ..., preprocessing_defences=[CSCPreprocessor(bases)])``
puts the reconstruction in front of the classifier: ART's predictions go
through it, and ART's attacks get the identity gradient through it (BPDA),
which makes them adaptive attacks on the defended classifier.  Needs ART
(``pip install -e ".[evaluate]"``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

from evaluation.defense import CSCDefense
from pipeline.basis import BasisSet
from pipeline.csc import CSCOptions


class CSCPreprocessor(PreprocessorPyTorch):
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
        super().__init__(device_type="cpu", is_fitted=True, apply_fit=apply_fit,
                         apply_predict=apply_predict)
        self.options = options
        self.defense = CSCDefense(bases, options, bpda=True, device="cpu")

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        return self.defense(x), y

"""How well a basis codes images: reconstruction PSNR and code density, per image.

Two dictionaries compared at the same sparsity weight are only comparable
with both numbers: a dictionary can reconstruct more detail by coding with
more non-zero coefficients, which is also more room for adversarial noise.
"""

from __future__ import annotations

import numpy as np

from pipeline.batched import reconstruct_and_count
from pipeline.csc import CSCOptions


def coding_quality(
    images: np.ndarray,
    basis: np.ndarray,
    options: CSCOptions = CSCOptions(),
    *,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """PSNR of each image's reconstruction, and the density of its sparse code.

    The reconstruction is the pipeline's (the batched solver: the low-pass
    part plus ``D * Y``, finished as ``options.output`` says).

    Parameters
    ----------
    images : (N, H, W, 3) ndarray, float32
        Images in [0, 1].
    basis : (P, P, 3, M) ndarray, float32
        Joint colour dictionary.
    options : CSCOptions
        Solver settings.
    device : str
        Where the solver runs.

    Returns
    -------
    psnr : (N,) ndarray, float64
        ``10 log10(1 / MSE)`` in dB.
    density : (N,) ndarray, float64
        Fraction of the ``M x H x W`` coefficients of ``Y`` that are not zero.

    Examples
    --------
    >>> from pipeline.basis import DEFAULT_BASIS, load_basis
    >>> images = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    >>> psnr, density = coding_quality(images, load_basis(DEFAULT_BASIS))
    >>> psnr.shape, bool(np.all((density > 0) & (density < 1)))
    ((2,), True)
    """
    reconstructions, _, density = reconstruct_and_count(images, basis, options, device=device)
    error = np.mean((reconstructions.astype(np.float64) - images) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(1 / np.maximum(error, 1e-20)), density

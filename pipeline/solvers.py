"""Reconstruction with one dictionary, by whichever solver ``CSCOptions.solver`` names.

Three implementations of one algorithm (sporco's ConvBPDN with the
reference's settings, :class:`pipeline.options.CSCOptions`) share one signature
and one registry, :data:`SOLVERS`:

- ``"torch"``: :func:`pipeline.torch_solver.reconstruct_batch`, many images at once
  on the CPU or a GPU (the default);
- ``"sporco"``: sporco's ConvBPDN, one image at a time (the reference's code
  path and the tests' oracle);
- ``"woodbury"``: the same with an exact, faster X-step.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from pipeline import torch_solver
from pipeline.options import CSCOptions
from pipeline.solver_io import check_image, check_images
from pipeline.sporco_solver import reconstruct_sporco


def _sporco(images, basis, options, *, batch_size=None, device="cpu", woodbury=False):
    """sporco's solvers take one image at a time on the CPU: batch_size and device unused."""
    return reconstruct_sporco(images, basis, options, woodbury=woodbury)


Solver = Callable[..., tuple[np.ndarray, np.ndarray]]

SOLVERS: dict[str, Solver] = {
    "torch": torch_solver.reconstruct_batch,
    "sporco": _sporco,
    "woodbury": partial(_sporco, woodbury=True),
}
"""Solver name -> ``f(images, basis, options, *, batch_size, device)``, which returns
``(reconstructions, n_iter)``; the keys are :data:`pipeline.options.SOLVER_NAMES`."""


def reconstruct(
    images: np.ndarray,
    basis: np.ndarray,
    *,
    options: CSCOptions = CSCOptions(),
    batch_size: int | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruct a batch of images with one dictionary.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray, float32
        Images in [0, 1].
    basis : (P, P, 3, M) ndarray, float32
        Joint colour dictionary.
    options : CSCOptions
        Solver settings; ``options.solver`` picks the implementation.
    batch_size : int, optional
        Images the ``"torch"`` solver iterates together (default: 1 on a
        CPU, what fits on a GPU).  The sporco solvers take one at a time.
    device : {"cpu", "cuda", "auto"}
        Where the ``"torch"`` solver runs.

    Returns
    -------
    reconstructions : (N, H, W, 3) ndarray, float32
        In [0, 1].
    n_iter : (N,) ndarray, int
        ADMM iterations per image.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> basis = rng.standard_normal((4, 4, 3, 4)).astype(np.float32)
    >>> images = rng.random((2, 16, 16, 3), dtype=np.float32)
    >>> result, n_iter = reconstruct(images, basis, options=CSCOptions(max_iter=5))
    >>> result.shape, n_iter.tolist()
    ((2, 16, 16, 3), [5, 5])
    """
    check_images(images, basis)
    return SOLVERS[options.solver](images, basis, options, batch_size=batch_size, device=device)


def reconstruct_image(
    image: np.ndarray, basis: np.ndarray, options: CSCOptions = CSCOptions()
) -> tuple[np.ndarray, int]:
    """Reconstruct one (H, W, 3) image; return it (float32 in [0, 1]) and its ADMM iterations."""
    check_image(image, basis)
    result, n_iter = reconstruct(image[None], basis, options=options)
    return result[0], int(n_iter[0])

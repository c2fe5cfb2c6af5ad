"""What every CSC solver checks on the way in and finishes on the way out.

The solvers (:mod:`pipeline.sporco_solver`, :mod:`pipeline.torch_solver`) and
the registry that picks one (:mod:`pipeline.solvers`) all build on this
module, which imports neither sporco nor PyTorch.

Layouts, named once (see also :mod:`pipeline.basis`):

- images are channels-last, ``(H, W, 3)`` for one image and ``(N, H, W, 3)``
  for a batch, float32 in [0, 1];
- a basis (dictionary) uses sporco's layout ``(P, P, 3, M)``: ``M`` filters of
  ``P x P`` pixels over the three colour channels (one joint colour dictionary).
"""

from __future__ import annotations

import numpy as np


def check_images(images: np.ndarray, basis: np.ndarray) -> None:
    """Raise ValueError unless ``images`` is ``(N, H, W, C)`` that ``basis`` can code."""
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")
    _check_image_shape(images.shape[1:], basis.shape)


def check_image(image: np.ndarray, basis: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is ``(H, W, C)`` with the basis's ``C`` channels
    and at least as large as its filters."""
    _check_image_shape(image.shape, basis.shape)


def _check_image_shape(shape: tuple[int, ...], basis_shape: tuple[int, ...]) -> None:
    if len(shape) != 3 or shape[-1] != basis_shape[2]:
        raise ValueError(f"image must have shape (H, W, {basis_shape[2]}) to match the basis "
                         f"{basis_shape}, got {shape}")
    if shape[0] < basis_shape[0] or shape[1] < basis_shape[1]:
        raise ValueError(f"image {shape[:2]} is smaller than the filters {basis_shape[:2]}")


def finish_output(reconstructions: np.ndarray, output: str = "clip") -> np.ndarray:
    """``low + D*X`` for (N, H, W, 3) images -> the reconstructions, float32 in [0, 1].

    ``output="max_rescale"`` divides each image by its maximum first (the
    reference's ``x / max(x)``); then values are clipped to [0, 1].  Every
    solver ends with this function, so their outputs are finished alike.
    """
    if output == "max_rescale":
        peak = reconstructions.max(axis=(1, 2, 3), keepdims=True)
        reconstructions = reconstructions / np.maximum(peak, np.finfo(np.float32).tiny)
    return np.clip(reconstructions, 0.0, 1.0).astype(np.float32, copy=False)

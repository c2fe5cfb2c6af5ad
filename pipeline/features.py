"""Texture features of an image's high-pass part: what the dictionaries code.

The paper clusters images by DAE latents, which summarise the whole image
(its brightness and colours as much as its texture); the dictionaries only
code the high-pass part.  :func:`highpass_features` describes that part
directly, so KMeans can group images by what their dictionaries will model:
how strong the texture is, how fine, how coloured, how heavy-tailed (edges
against noise-like texture) and which way it runs.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.dae import to_dae_input
from pipeline.torch_solver import split_low_high

N_ORIENTATIONS = 8
"""Bins of the gradient-orientation histogram, over [0, pi)."""

N_FEATURES = 4 + N_ORIENTATIONS
"""Length of a feature vector of :func:`highpass_features`."""


@torch.inference_mode()
def highpass_features(images: np.ndarray, *, filter_lmbda: float = 5.0,
                      pad: int = 16) -> np.ndarray:
    """Energy, scale, colour, tails and orientations of each image's high-pass part.

    Images are first brought to 64x64, as for the DAE, and split as the
    reconstruction splits them (Tikhonov filter, ``filter_lmbda``, ``pad``).
    With ``h`` the high-pass part, ``l`` its mean over the colour channels
    and ``g`` the forward differences of ``l``:

    - ``log10 mean(l^2)``: the texture's strength;
    - ``log10 (mean |g|^2 / mean l^2)``: its fineness (high for fine texture);
    - ``sum |h - l|^2 / sum |h|^2``: the share of its energy in colour;
    - ``log10 (mean l^4 / mean(l^2)^2)``: its kurtosis (edges score high,
      noise-like texture low);
    - ``|g|^2``-weighted histogram of the gradient orientations over
      [0, pi), :data:`N_ORIENTATIONS` bins summing to 1.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray, float32
        Images in [0, 1].

    Returns
    -------
    (N, N_FEATURES) ndarray, float32

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> stripes = np.tile(np.sin(np.arange(64) / 2)[None, :, None], (64, 1, 3)) / 2 + 0.5
    >>> features = highpass_features(np.stack([stripes, rng.random((64, 64, 3))]))
    >>> features.shape, int(np.argmax(features[0, 4:]))  # vertical stripes: gradients along x
    ((2, 12), 0)
    """
    batch = torch.from_numpy(np.ascontiguousarray(to_dae_input(images))).permute(0, 3, 1, 2)
    _, high = split_low_high(batch.double(), lmbda=filter_lmbda, pad=pad)
    luma = high.mean(dim=1)
    gx = luma[:, :-1, 1:] - luma[:, :-1, :-1]
    gy = luma[:, 1:, :-1] - luma[:, :-1, :-1]
    power = luma.square().mean(dim=(1, 2)) + 1e-12
    magnitude = gx.square() + gy.square()
    angle = torch.remainder(torch.atan2(gy, gx), torch.pi)
    bins = torch.clamp((angle / torch.pi * N_ORIENTATIONS).long(), max=N_ORIENTATIONS - 1)
    histogram = torch.zeros(len(images), N_ORIENTATIONS, dtype=torch.float64)
    histogram.scatter_add_(1, bins.flatten(1), magnitude.flatten(1))
    histogram /= histogram.sum(dim=1, keepdim=True) + 1e-12
    colour = (high - luma[:, None]).square().sum(dim=(1, 2, 3)) / (
        high.square().sum(dim=(1, 2, 3)) + 1e-12)
    features = torch.stack([
        torch.log10(power), torch.log10(magnitude.mean(dim=(1, 2)) / power + 1e-12), colour,
        torch.log10(luma.pow(4).mean(dim=(1, 2)) / power.square() + 1e-12)], dim=1)
    return torch.cat([features, histogram], dim=1).float().numpy()

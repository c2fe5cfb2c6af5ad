"""The reconstruction as a differentiable function of the images: ADMM unrolled.

An adaptive attacker who knows the defense need not approximate the
reconstruction's gradient by the identity (BPDA): the solver is PyTorch, so
the gradient of the reconstruction as the solver computes it is within
reach.  :func:`reconstruct` runs :func:`pipeline.torch_solver.solve`'s iterations
(the PyTorch path's maths, sporco's ConvBPDN) under autograd, each image
stopping at the iteration its own test stops it, and returns
``low + D * Y`` finished as the pipeline finishes it.  Back-propagation then
goes through every iteration the forward pass made.

The penalty updates (``rho``'s factor after each iteration) and the stopping
test are decisions taken on the forward pass's values: constants for the
gradient, as a step size is.  :class:`Schedule` records them, and passing it
back replays them exactly, so a finite-difference check (and an attacker who
wants a smooth function) sees the same piecewise-smooth map.  The soft
threshold's derivative is 1 where a coefficient is non-zero, 0 elsewhere.

Memory: each iteration keeps only its inputs ``Y`` and ``U`` and recomputes
the rest on the backward pass (activation checkpointing), about two
``(B, M, H, W)`` float32 maps per iteration and image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from pipeline.options import CSCOptions
from pipeline.torch_solver import (
    CONVBPDN_AUTORHO,
    RELAXATION,
    DictionarySpectrum,
    dictionary_spectrum,
    penalty_factor,
    residuals,
    split_low_high,
    synthesize,
)


@dataclass
class Schedule:
    """The forward pass's decisions, per iteration: the penalty factors and which images
    were still iterating.

    Attributes
    ----------
    factors : list of (B,) float32 ndarrays
        ``rho``'s factor after each iteration (1: unchanged).
    active : list of (B,) bool ndarrays
        Which images that iteration updated (an image stops after the
        iteration whose residuals pass its test).
    """

    factors: list[np.ndarray] = field(default_factory=list)
    active: list[np.ndarray] = field(default_factory=list)

    @property
    def n_iter(self) -> np.ndarray:
        """(B,) iterations each image made."""
        return np.sum(self.active, axis=0).astype(np.int64)


def reconstruct(images: torch.Tensor, basis: np.ndarray, options: CSCOptions = CSCOptions(),
                *, schedule: Schedule | None = None) -> tuple[torch.Tensor, Schedule]:
    """Reconstruct ``(B, 3, H, W)`` images in [0, 1] with one dictionary, differentiably.

    Parameters
    ----------
    images : (B, 3, H, W) float32 tensor
        May require gradients; on the CPU or a GPU.
    basis : (P, P, 3, M) float32 ndarray
        Joint colour dictionary.
    options : CSCOptions
        Solver settings (lambda, tolerances, output).
    schedule : Schedule, optional
        Decisions to replay instead of taking them (a previous call's).

    Returns
    -------
    reconstructions : (B, 3, H, W) float32 tensor
        As :func:`pipeline.torch_solver.reconstruct_batch` makes them (to float32
        rounding), with a gradient back to ``images``.
    schedule : Schedule
        The decisions this call took (or replayed).
    """
    spectrum = dictionary_spectrum(basis, tuple(images.shape[-2:]), images.device)
    low, high = split_low_high(images, lmbda=options.filter_lmbda, pad=options.pad)
    dsf = torch.einsum("cmhw,bchw->bmhw", spectrum.filters.conj(), torch.fft.rfft2(high))
    n, m = len(images), basis.shape[-1]
    y = images.new_zeros((n, m, *images.shape[-2:]))
    u = torch.zeros_like(y)
    lmbda = np.float32(options.lmbda)
    xi = np.float32(1.0 + 18.3 ** (np.log10(lmbda) + 1.0))  # ConvBPDN's residual ratio
    rho = np.full(n, 50.0 * lmbda + 1.0, dtype=np.float32)
    rows = np.arange(n)  # the images still iterating, as positions in the input
    finished = []  # (positions, their final Y)
    replay, schedule = schedule, Schedule()
    for k in range(options.max_iter if replay is None else len(replay.factors)):
        per_image = torch.from_numpy(np.stack([rho, 1 / rho, lmbda / rho])).to(images.device)
        y_new, u, norms = checkpoint(_iteration, y, u, dsf, per_image, spectrum,
                                     use_reentrant=False)
        if replay is None:
            r, s = residuals(*norms.detach().cpu().numpy().T.astype(np.float32), rho)
            update = k != 0 and (k + 1) % CONVBPDN_AUTORHO.period == 0
            factor = (penalty_factor(r, s, xi, CONVBPDN_AUTORHO) if update
                      else np.ones(len(rows), np.float32))
            done = (r < options.rel_stop_tol) & (s < options.rel_stop_tol)
        else:
            factor, done = replay.factors[k][rows], ~replay.active[k + 1][rows] \
                if k + 1 < len(replay.active) else np.ones(len(rows), bool)
        active = np.zeros(n, bool)
        active[rows] = True
        full_factor = np.ones(n, np.float32)
        full_factor[rows] = factor
        schedule.active.append(active)
        schedule.factors.append(full_factor)
        u = u / torch.from_numpy(factor).to(u)[:, None, None, None]
        rho, y = rho * factor, y_new
        if done.any():  # finished images leave the batch, as in pipeline.torch_solver.solve
            keep = torch.from_numpy(np.flatnonzero(~done)).to(images.device)
            finished.append((rows[done], y[torch.from_numpy(np.flatnonzero(done))
                                          .to(images.device)]))
            rows, rho = rows[~done], rho[~done]
            y, u, dsf = y[keep], u[keep], dsf[keep]
        if not len(rows):
            break
    if len(rows):  # stopped by max_iter
        finished.append((rows, y))
    order = np.concatenate([positions for positions, _ in finished])
    codes = torch.cat([codes for _, codes in finished])
    codes = codes[torch.from_numpy(np.argsort(order)).to(images.device)]
    out = low + synthesize(codes, spectrum)
    if options.output == "max_rescale":
        peak = out.amax(dim=(1, 2, 3), keepdim=True)
        out = out / peak.clamp_min(np.finfo(np.float32).tiny)
    return out.clamp(0.0, 1.0), schedule


def _iteration(y: torch.Tensor, u: torch.Tensor, dsf: torch.Tensor, per_image: torch.Tensor,
               spectrum: DictionarySpectrum) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ADMM iteration for every image, out of place: new ``Y``, ``U`` (before the
    penalty's rescaling) and the ``(B, 5)`` norms ``|X|, |Y|, |U|, |X - Y|, |Y - Y_prev|``."""
    rho, inverse_rho, threshold = (v[:, None, None, None] for v in per_image)
    b = torch.fft.rfft2(rho * (y - u)) + dsf
    t = torch.stack([(spectrum.w[d] * b).sum(1) for d in range(3)], 1)
    t = t / (rho + spectrum.eigenvalues)
    b = b - sum(spectrum.w_conj[d] * t[:, d, None] for d in range(3))
    x = torch.fft.irfft2(b, s=spectrum.shape) * inverse_rho
    v = u + RELAXATION * x + (1.0 - RELAXATION) * y
    u_new = torch.minimum(torch.maximum(v, -threshold), threshold)
    y_new = v - u_new
    norms = torch.stack([torch.linalg.vector_norm(a, dim=(1, 2, 3)) for a in
                         (x, y_new, u_new, x - y_new, y_new - y)], 1)
    return y_new, u_new, norms

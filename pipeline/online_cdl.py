"""Online convolutional dictionary learning in PyTorch, on the reconstruction's solver.

The algorithm is sporco's ``OnlineConvBPDNDictLearn`` (Liu, Garcia-Cardona,
Wohlberg et al. [1]_), step for step, with sporco's defaults, so that sporco
is its test oracle (:class:`pipeline.csc.CDLOptions` gives the objective).
At step ``t`` (from 0), for a mini-batch of ``K`` images:

1. the high-pass parts ``s_k`` (the same Tikhonov split as the
   reconstruction) are coded with the current filters: CBPDN by ADMM over
   the whole mini-batch as one problem (one penalty, one stopping test;
   :func:`pipeline.batched.solve` with ``joint=True`` and sporco's online
   penalty rule :data:`pipeline.batched.ONLINE_CDL_AUTORHO`, at most
   ``coding_max_iter`` iterations, tolerance ``coding_rel_stop_tol``); the
   codes are the sparse variable ``Y``;
2. the gradient of the data term with respect to the filters is taken in the
   frequency domain, ``g_c = sum_k conj(Y_k) (sum_m d_cm Y_km - s_kc)`` at every
   frequency of the image size, and the filters move by ``-eta_t g`` with
   ``eta_t = eta_a / (t + eta_b)``;
3. back in space, the filters are cut to their ``P x P`` support, made
   zero-mean in each channel and of unit norm (:func:`pipeline.basis.project_filters`).

Only the filters and one mini-batch are held, so memory does not depend on
the number of training images.  The same code runs on the CPU and a GPU.

References
----------
.. [1] J. Liu, C. Garcia-Cardona, B. Wohlberg and W. Yin, "First- and
   Second-Order Methods for Online Convolutional Dictionary Learning",
   SIAM J. Imaging Sci. 11(2), 2018, doi:10.1137/17M1145689.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline import batched
from pipeline.basis import project_filters
from pipeline.csc import CDLOptions


class OnlineLearner:
    """The filters and the step count of one online learning run.

    Parameters
    ----------
    initial : (P, P, 3, M) ndarray
        Starting filters; projected onto the constraints first, as sporco does.
    options : CDLOptions
        Sparsity weight, step sizes and the mini-batches' coding settings.
    filter_lmbda, pad : float, int
        The low/high split of the training images.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    def __init__(self, initial: np.ndarray, options: CDLOptions = CDLOptions(), *,
                 filter_lmbda: float = 5.0, pad: int = 16, device: str = "cpu"):
        self.basis = project_filters(initial)
        self.options, self.filter_lmbda, self.pad = options, filter_lmbda, pad
        self.device = batched.resolve_device(device)
        self.steps = 0

    @torch.inference_mode()
    def step(self, images: np.ndarray) -> float:
        """Learn from one mini-batch of (K, H, W, 3) images in [0, 1]; return the objective.

        The objective is the CBPDN objective of the mini-batch's codes with
        the filters they were coded with: ``0.5 ||sum_m d_m * y_m - s||^2 +
        lambda ||y||_1``, summed over the mini-batch.
        """
        stack = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        _, high = batched.split_low_high(stack.permute(0, 3, 1, 2), lmbda=self.filter_lmbda,
                                         pad=self.pad)
        spectrum = batched.dictionary_spectrum(self.basis, tuple(high.shape[-2:]), self.device)
        codes = self._code(high, spectrum)
        codes_f = torch.fft.rfft2(codes)
        residual_f = torch.einsum("cmhw,bmhw->bchw", spectrum.filters, codes_f)
        residual_f -= torch.fft.rfft2(high)
        gradient = torch.einsum("bmhw,bchw->cmhw", codes_f.conj(), residual_f)
        eta = self.options.eta_a / (self.steps + self.options.eta_b)
        moved = torch.fft.irfft2(spectrum.filters - eta * gradient, s=spectrum.shape)
        size = self.basis.shape[0]
        self.basis = project_filters(moved[..., :size, :size].permute(2, 3, 0, 1).cpu().numpy())
        self.steps += 1
        residual = torch.fft.irfft2(residual_f, s=spectrum.shape)
        return float(0.5 * residual.square().sum() + self.options.lmbda * codes.abs().sum())

    def _code(self, high: torch.Tensor, spectrum: batched.DictionarySpectrum) -> torch.Tensor:
        """The mini-batch's sparse codes ``Y``, (K, M, H, W), coded jointly."""
        codes = high.new_empty((len(high), spectrum.filters.shape[1], *spectrum.shape))
        for index, coefficients, _ in batched.solve(
                high, spectrum, self.options.coding(), auto_rho=batched.ONLINE_CDL_AUTORHO,
                joint=True):
            codes[torch.from_numpy(index).to(codes.device)] = coefficients
        return codes


def initial_filters(options: CDLOptions, seed: int = 0) -> np.ndarray:
    """Seeded random normal (P, P, 3, M) filters, the learners' start."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((options.filter_size, options.filter_size, 3,
                                options.n_filters)).astype(np.float32)


def minibatches(count: int, batch_size: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """Indices of ``steps`` mini-batches of ``batch_size`` out of ``count`` images.

    Seeded passes over the images, each in a new random order, cut into
    consecutive mini-batches; a mini-batch never holds an image twice
    (with fewer than ``batch_size`` images, it holds them all).
    """
    rng = np.random.default_rng(seed)
    size = min(batch_size, count)
    order = np.zeros(0, np.int64)
    batches = []
    for _ in range(steps):
        if len(order) < size:  # a new pass; its copies of the leftovers go to its end
            fresh = rng.permutation(count)
            repeated = np.isin(fresh, order)
            order = np.concatenate([order, fresh[~repeated], fresh[repeated]])
        batches.append(np.sort(order[:size]))
        order = order[size:]
    return batches

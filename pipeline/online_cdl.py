"""Online convolutional dictionary learning in PyTorch, on the reconstruction's solver.

The algorithm is sporco's ``OnlineConvBPDNDictLearn`` (Liu, Garcia-Cardona,
Wohlberg et al. [1]_), step for step, with sporco's defaults, so that sporco
is its test oracle (:class:`pipeline.options.CDLOptions` gives the objective).
At step ``t`` (from 0), for a mini-batch of ``K`` images:

1. the high-pass parts ``s_k`` (the same Tikhonov split as the
   reconstruction) are coded with the current filters: CBPDN by ADMM over
   the whole mini-batch as one problem (one penalty, one stopping test;
   :func:`pipeline.torch_solver.solve` with ``joint=True`` and sporco's online
   penalty rule :data:`pipeline.torch_solver.ONLINE_CDL_AUTORHO`, at most
   ``coding_max_iter`` iterations, tolerance ``coding_rel_stop_tol``); the
   codes are the sparse variable ``Y``;
2. the gradient of the data term with respect to the filters is taken in the
   frequency domain, ``g_c = sum_k conj(Y_k) (sum_m d_cm Y_km - s_kc)`` at every
   frequency of the image size, and the filters move by ``-eta_t g`` with
   ``eta_t = eta_a / (t + eta_b)``;
3. back in space, the filters are cut to their ``P x P`` support, made
   zero-mean in each channel and of unit norm (:func:`pipeline.basis.project_filters`).

:func:`learn_online` runs those steps until the dictionary has converged on a
fixed validation set (:class:`pipeline.options.CDLOptions` states the rule) and
records the validation curve; it can start from a learned dictionary
(continuing its step sizes) and hold some filters fixed, so that a cluster's
dictionary can be fine-tuned from one learned on all the images.

Only the filters and one mini-batch are held, so memory does not depend on
the number of training images.  The same code runs on the CPU and a GPU.

References
----------
.. [1] J. Liu, C. Garcia-Cardona, B. Wohlberg and W. Yin, "First- and
   Second-Order Methods for Online Convolutional Dictionary Learning",
   SIAM J. Imaging Sci. 11(2), 2018, doi:10.1137/17M1145689.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import torch_solver
from pipeline.basis import BasisError, project_filters, validate_basis
from pipeline.options import CDLOptions, CSCOptions
from pipeline.quality import coding_quality


class OnlineLearner:
    """The filters and the step count of one online learning run.

    Parameters
    ----------
    initial : (P, P, 3, M) ndarray
        Starting filters; projected onto the constraints first, as sporco does
        (a valid basis is kept as it is, so a dictionary's filters carry over exactly).
    options : CDLOptions
        Sparsity weight, step sizes and the mini-batches' coding settings.
    filter_lmbda, pad : float, int
        The low/high split of the training images.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    step : int
        The step count to start from: a dictionary learned for ``step``
        steps continues with the step sizes it would have taken next.
    frozen : (M,) bool ndarray, optional
        Filters that stay as they are (they still code every mini-batch).
    """

    def __init__(self, initial: np.ndarray, options: CDLOptions = CDLOptions(), *,
                 filter_lmbda: float = 5.0, pad: int = 16, device: str = "cpu", step: int = 0,
                 frozen: np.ndarray | None = None):
        try:
            validate_basis(initial)
            self.basis = np.array(initial, dtype=np.float32)
        except BasisError:
            self.basis = project_filters(initial)
        self.options, self.filter_lmbda, self.pad = options, filter_lmbda, pad
        self.device = torch_solver.resolve_device(device)
        self.steps = step
        self.frozen = None if frozen is None or not np.any(frozen) else np.asarray(frozen, bool)

    @torch.inference_mode()
    def step(self, images: np.ndarray) -> float:
        """Learn from one mini-batch of (K, H, W, 3) images in [0, 1]; return the objective.

        The objective is the CBPDN objective of the mini-batch's codes with
        the filters they were coded with: ``0.5 ||sum_m d_m * y_m - s||^2 +
        lambda ||y||_1``, summed over the mini-batch.
        """
        stack = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        _, high = torch_solver.split_low_high(stack.permute(0, 3, 1, 2), lmbda=self.filter_lmbda,
                                         pad=self.pad)
        spectrum = torch_solver.dictionary_spectrum(self.basis, tuple(high.shape[-2:]), self.device)
        codes = self._code(high, spectrum)
        codes_f = torch.fft.rfft2(codes)
        residual_f = torch.einsum("cmhw,bmhw->bchw", spectrum.filters, codes_f)
        residual_f -= torch.fft.rfft2(high)
        gradient = torch.einsum("bmhw,bchw->cmhw", codes_f.conj(), residual_f)
        if self.options.gradient == "mean":
            gradient /= len(images)
        eta = self.options.eta_a / (self.steps + self.options.eta_b)
        moved = torch.fft.irfft2(spectrum.filters - eta * gradient, s=spectrum.shape)
        size = self.basis.shape[0]
        moved = project_filters(moved[..., :size, :size].permute(2, 3, 0, 1).cpu().numpy())
        if self.frozen is not None:
            moved[..., self.frozen] = self.basis[..., self.frozen]
        self.basis = moved
        self.steps += 1
        residual = torch.fft.irfft2(residual_f, s=spectrum.shape)
        return float(0.5 * residual.square().sum() + self.options.lmbda * codes.abs().sum())

    def _code(self, high: torch.Tensor, spectrum: torch_solver.DictionarySpectrum) -> torch.Tensor:
        """The mini-batch's sparse codes ``Y``, (K, M, H, W), coded jointly."""
        codes = high.new_empty((len(high), spectrum.filters.shape[1], *spectrum.shape))
        for index, coefficients, _ in torch_solver.solve(
                high, spectrum, self.options.coding(), auto_rho=torch_solver.ONLINE_CDL_AUTORHO,
                joint=True):
            codes[torch.from_numpy(index).to(codes.device)] = coefficients
        return codes


@dataclass(kw_only=True)
class Learned:
    """One dictionary learned by :func:`learn_online`, and how learning went.

    Attributes
    ----------
    basis : (P, P, 3, M) float32 ndarray
        The dictionary that scored best on the validation set.
    objectives : (T,) float64 ndarray
        Each step's mini-batch objective (with the filters it was coded with).
    curve : dict of str to (S,) ndarray
        The validation scorings: ``step`` (steps taken, 0 is the start),
        ``objective`` (mean CBPDN objective per image), ``psnr`` (mean, dB)
        and ``density`` (mean share of non-zero coefficients).
    best_step : int
        The scoring the returned dictionary comes from.
    usage : (M,) float64 ndarray
        Share of non-zero coefficients of each of its filters on the validation set.
    stopped : {"converged", "step cap"}
        Why learning stopped.
    first_step : int
        Where in the step-size schedule learning started (0, or the steps of
        the dictionary it was fine-tuned from).
    """

    basis: np.ndarray
    objectives: np.ndarray
    curve: dict[str, np.ndarray]
    best_step: int
    usage: np.ndarray
    stopped: str
    first_step: int = 0

    @property
    def steps(self) -> int:
        return len(self.objectives)


def learn_online(
    images,
    validation: np.ndarray,
    options: CDLOptions = CDLOptions(),
    *,
    csc: CSCOptions | None = None,
    seed: int = 0,
    initial: np.ndarray | None = None,
    first_step: int = 0,
    frozen: np.ndarray | None = None,
    device: str = "cpu",
    on_steps: Callable[[int], None] | None = None,
) -> Learned:
    """Learn a dictionary from ``images`` until it has converged on ``validation``.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray or :class:`pipeline.datasets.Images`
        Training images in [0, 1], read a mini-batch at a time
        (:func:`minibatches`, seeded).
    validation : (V, H, W, 3) ndarray
        The fixed validation set, float32 in [0, 1]: images ``images`` does not hold.
    options : CDLOptions
        The learner's settings, its stopping rule included.
    csc : CSCOptions, optional
        How the validation set is coded (the reconstruction's settings); its
        ``lmbda`` is replaced by the dictionary's.
    seed : int
        Seeds the random start and the mini-batches.
    initial : (P, P, 3, M) ndarray, optional
        Start from these filters instead of random ones, ``first_step``
        steps into the step-size schedule (a dictionary being fine-tuned).
    frozen : (M,) bool ndarray, optional
        Filters held fixed (:class:`OnlineLearner`).
    device : str
        Where the coding runs.
    on_steps : callable, optional
        Called with the number of steps just taken (progress), and at the
        end with the steps a stop left out of ``max_iter``.

    Returns
    -------
    Learned
        The best-scoring dictionary, the validation curve and why learning stopped.
    """
    csc = CSCOptions(lmbda=options.lmbda) if csc is None else csc
    score_options = CSCOptions(**{**csc.as_dict(), "lmbda": options.lmbda, "solver": "torch"})
    start = initial_filters(options, seed) if initial is None else initial
    learner = OnlineLearner(start, options, filter_lmbda=csc.filter_lmbda, pad=csc.pad,
                            device=device, step=first_step, frozen=frozen)
    curve = {"step": [], "objective": [], "psnr": [], "density": []}
    best = (np.inf, 0, learner.basis, None)
    objectives, stopped = [], "step cap"

    def score(step: int) -> None:
        nonlocal best
        quality = coding_quality(validation, learner.basis, score_options, device=device,
                                 keep_spectrum=False)
        for key, value in (("step", step), ("objective", quality.objective.mean()),
                           ("psnr", quality.psnr.mean()), ("density", quality.density.mean())):
            curve[key].append(value)
        if curve["objective"][-1] < best[0]:
            best = (curve["objective"][-1], step, learner.basis, quality.usage.mean(axis=0))

    score(0)
    for rows in minibatches(len(images), options.batch_size, options.max_iter, seed):
        objectives.append(learner.step(images[rows]))
        if on_steps is not None:
            on_steps(1)
        if len(objectives) % options.validate_every == 0 or len(objectives) == options.max_iter:
            score(len(objectives))
            if has_converged(curve["step"], curve["objective"], options):
                stopped = "converged"
                break
    if on_steps is not None and len(objectives) < options.max_iter:
        on_steps(options.max_iter - len(objectives))
    return Learned(basis=best[2], objectives=np.asarray(objectives),
                   curve={key: np.asarray(value) for key, value in curve.items()},
                   best_step=best[1], usage=best[3], stopped=stopped, first_step=first_step)


def has_converged(steps: list[int], objectives: list[float], options: CDLOptions) -> bool:
    """The stopping rule of :class:`pipeline.options.CDLOptions` after the last scoring.

    ``steps`` and ``objectives`` are the validation scorings so far, in
    order: true when the objective changed by at most ``stop_tol`` (relative)
    since the last scoring at or before four fifths of the steps, from
    ``5 validate_every`` steps on.
    """
    if not steps or steps[-1] < 5 * options.validate_every:
        return False
    reference = max(i for i, step in enumerate(steps) if step <= 0.8 * steps[-1])
    before = objectives[reference]
    return abs(objectives[-1] - before) <= options.stop_tol * abs(before)


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

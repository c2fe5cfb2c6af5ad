"""The stages' settings, every default with its meaning: CSC, dictionary learning, the DAE.

The config (:mod:`pipeline.config`) reads its ``csc``, ``learn.dictionary``
and ``learn.dae`` sections into these; the stages take them as they are.
This module imports neither sporco nor PyTorch, so a config loads without
either.

References
----------
.. [1] B. Sun, N.-H. Tsai, F. Liu, R. Yu and H. Su, "Adversarial Defense by
   Stratified Convolutional Sparse Coding", CVPR 2019, arXiv:1812.00037.
.. [2] B. Wohlberg, "Efficient Algorithms for Convolutional Sparse
   Representations", IEEE Trans. Image Process. 25(1), 2016,
   doi:10.1109/TIP.2015.2495260.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

SolverName = Literal["torch", "woodbury", "sporco"]
SOLVER_NAMES: tuple[str, ...] = ("torch", "woodbury", "sporco")
"""The implementations of ConvBPDN that :mod:`pipeline.solvers` registers."""


@dataclass(frozen=True)
class CSCOptions:
    r"""Settings of the CSC reconstruction, defaults as in the reference [1]_.

    The image ``s`` is split into a smooth part ``s_l`` (Tikhonov filter)
    and a high-pass part ``s_h = s - s_l``.  The high-pass part is coded over
    the dictionary ``{d_m}`` by convolutional basis pursuit denoising

    .. math::
       \min_{\{x_m\}} \frac{1}{2} \Big\| \sum_m d_m * x_m - s_h \Big\|_2^2
       + \lambda \sum_m \| x_m \|_1

    solved by ADMM (sporco ``ConvBPDN``) with circular (FFT) convolution, and
    the result is ``s_l + sum_m d_m * x_m``.

    Attributes
    ----------
    lmbda : float
        Sparsity weight :math:`\lambda` of the objective above; 0.1 to 0.3
        work, larger removes more detail (and more adversarial noise).
    max_iter : int
        Most ADMM iterations per image (sporco ``MaxMainIter``).
    rel_stop_tol : float
        Relative primal/dual residual tolerance that stops ADMM early
        (sporco ``RelStopTol``); the reference stops after 59 to 88
        iterations at ``lmbda=0.2``.
    filter_lmbda : float
        Regularisation of the Tikhonov low-pass filter that makes ``s_l``;
        larger gives a smoother low-pass part and a richer high-pass part.
    pad : int
        Symmetric padding, in pixels, around the image for the low-pass filter.
    output : {"clip", "max_rescale"}
        ``"clip"`` clips ``s_l + D*X`` to [0, 1]; ``"max_rescale"`` divides
        by the image's maximum first, as the reference did before saving
        (:func:`finish_output`).
    solver : {"torch", "woodbury", "sporco"}
        Which implementation of the same ADMM runs (:mod:`pipeline.solvers`).
        ``"torch"`` (:mod:`pipeline.torch_solver`) is a batched PyTorch port of
        sporco's ConvBPDN, on the CPU or a GPU; ``"sporco"`` is sporco's
        ConvBPDN itself, the reference's code path and the tests' oracle;
        ``"woodbury"`` is sporco's with an exact, faster X-step
        (:class:`pipeline.sporco_solver.JointColourConvBPDN`).  All three give
        the same iteration counts (or within one) and agree to float32
        rounding (above 100 dB).
    """

    lmbda: float = 0.2
    max_iter: int = 200
    rel_stop_tol: float = 5e-3
    filter_lmbda: float = 5.0
    pad: int = 16
    output: Literal["clip", "max_rescale"] = "clip"
    solver: SolverName = "torch"

    def __post_init__(self) -> None:
        _check_positive(self, "lmbda", "rel_stop_tol", "filter_lmbda")
        _check_integer(self, "max_iter", minimum=1)
        _check_integer(self, "pad", minimum=0)
        if self.output not in ("clip", "max_rescale"):
            raise ValueError(f"output must be 'clip' or 'max_rescale', got {self.output!r}")
        if self.solver not in SOLVER_NAMES:
            raise ValueError(
                f"solver must be 'torch', 'woodbury' or 'sporco', got {self.solver!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CDLOptions:
    r"""Settings of convolutional dictionary learning (:mod:`pipeline.online_cdl`,
    :mod:`pipeline.dictionary`).

    Learning minimises the CBPDN objective of :class:`CSCOptions` over the
    codes ``{x_{m,k}}`` of the training images ``k`` and the filters, under
    the constraints of a basis,

    .. math::
       \min_{\{d_m\}, \{x_{m,k}\}} \sum_k \frac{1}{2}
       \Big\| \sum_m d_m * x_{m,k} - s_{h,k} \Big\|_2^2
       + \lambda \sum_{m,k} \| x_{m,k} \|_1
       \quad \text{s.t.} \quad \|d_m\|_2 = 1, \ \text{each channel of } d_m
       \text{ zero-mean, support } P \times P .

    ``method="online"`` (the default; Liu, Garcia-Cardona, Wohlberg et al.,
    SIAM J. Imaging Sci. 2018, as sporco's ``OnlineConvBPDNDictLearn``): at
    step :math:`t`, code a mini-batch of :math:`K` images with the current
    filters (CBPDN by ADMM), take a gradient step on the data term in the
    frequency domain, :math:`\hat{d} \leftarrow \hat{d} - \eta_t\, g` with
    :math:`g = \sum_k \hat{x}_k^H (\hat{X}_k \hat{d} - \hat{s}_k)` (sporco's
    sum; ``gradient="mean"`` divides it by :math:`K`) and
    :math:`\eta_t = a / (t + b)`, and project onto the constraints.  Every
    ``validate_every`` steps the dictionary codes a fixed validation set
    (images it never learns from) as the reconstruction does; learning stops
    when that validation objective :math:`F` has stopped improving,

    .. math::
       |F(t) - F(t')| \le \mathrm{stop\_tol}\, F(t'), \qquad
       t' = \text{the last scoring at or before } 0.8\, t,

    i.e. it changed by at most ``stop_tol`` over the last fifth of the steps
    (checked from ``5 validate_every`` steps on), or after ``max_iter``
    steps; the dictionary kept is the one that scored best.  Memory does not
    grow with the number of training images.  ``method="batch"`` is sporco's
    ``ConvBPDNDictLearn`` over all the images at once, the reference, for
    ``max_iter`` iterations.

    Attributes
    ----------
    n_filters : int
        ``M``, filters per basis.
    filter_size : int
        ``P``, side of each square filter in pixels.
    lmbda : float
        Sparsity weight :math:`\lambda` of the coding; the basis file name
        records it (``64_p8_lm0.2.npy``).
    method : {"online", "batch"}
        The algorithm, as above.
    max_iter : int
        Online: most mini-batch steps; batch: iterations over all images.
    batch_size : int
        Online: images per mini-batch.
    eta_a, eta_b : float
        Online: :math:`a` and :math:`b` of the step size (sporco's 10 and 5).
    gradient : {"sum", "mean"}
        Online: the mini-batch's gradient summed over its images (sporco's)
        or their mean, which makes a step's size independent of the batch
        size (``benchmarks/README.md`` compares the two).
    coding_max_iter, coding_rel_stop_tol : int, float
        Online: most ADMM iterations and relative tolerance of each
        mini-batch's coding.  sporco's online learner uses 100 and 1e-3;
        mini-batches of 64x64 tiles nearly always run to the limit, and 30
        gave the same held-out PSNR at every step count measured, 3x faster
        (``benchmarks/README.md``).
    validate_every : int
        Online: steps between scorings on the validation set (so the rule
        is first checked after 100 steps: earlier, the last fifth of the
        steps is too short to tell a plateau from a slow descent).
    stop_tol : float
        Online: the relative change of the validation objective over the
        last fifth of the steps at which learning stops (0.005: 0.5 %).
    """

    n_filters: int = 64
    filter_size: int = 8
    lmbda: float = 0.2
    method: Literal["online", "batch"] = "online"
    max_iter: int = 30
    batch_size: int = 16
    eta_a: float = 10.0
    eta_b: float = 5.0
    gradient: Literal["sum", "mean"] = "sum"
    coding_max_iter: int = 30
    coding_rel_stop_tol: float = 1e-3
    validate_every: int = 20
    stop_tol: float = 0.005

    def __post_init__(self) -> None:
        _check_integer(self, "n_filters", minimum=1)
        _check_integer(self, "filter_size", minimum=1)
        _check_integer(self, "max_iter", minimum=1)
        _check_integer(self, "batch_size", minimum=1)
        _check_integer(self, "coding_max_iter", minimum=1)
        _check_integer(self, "validate_every", minimum=1)
        _check_positive(self, "lmbda", "eta_a", "eta_b", "coding_rel_stop_tol", "stop_tol")
        if self.method not in ("online", "batch"):
            raise ValueError(f"method must be 'online' or 'batch', got {self.method!r}")
        if self.gradient not in ("sum", "mean"):
            raise ValueError(f"gradient must be 'sum' or 'mean', got {self.gradient!r}")

    def coding(self) -> CSCOptions:
        """The mini-batches' CBPDN settings, as :class:`CSCOptions`."""
        return CSCOptions(lmbda=self.lmbda, max_iter=self.coding_max_iter,
                          rel_stop_tol=self.coding_rel_stop_tol)


@dataclass(frozen=True)
class DAEOptions:
    """Training settings, the reference's: batch 32, patience 3, noise 0.15.

    Attributes
    ----------
    max_epochs : int
        Most passes over the training images.
    batch_size : int
        Images per Adam step.
    learning_rate : float
        Adam's step size.
    noise_std : float
        Standard deviation of the Gaussian noise added to the inputs.
    patience : int
        Epochs without a better validation loss before training stops.
    validation_fraction : float
        Share of the images held out to measure the validation loss.
    """

    max_epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    noise_std: float = 0.15
    patience: int = 3
    validation_fraction: float = 0.1


def _check_positive(options: object, *names: str) -> None:
    for name in names:
        if not getattr(options, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(options, name)}")


def _check_integer(options: object, name: str, *, minimum: int) -> None:
    value = getattr(options, name)
    if not (isinstance(value, int) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")

"""Convolutional sparse coding: low/high split, reconstruction, dictionary learning.

Every function here is a plain function over NumPy arrays (no Dask inside), so
the same code runs in a test, in a notebook and on a Dask worker.

Layouts, named once (see also :mod:`pipeline.basis`):

- images are channels-last, ``(H, W, 3)`` for one image and ``(N, H, W, 3)``
  for a batch, float32 in [0, 1];
- a basis (dictionary) uses sporco's layout ``(P, P, 3, M)``: ``M`` filters of
  ``P x P`` pixels over the three colour channels (one joint colour dictionary).

References
----------
.. [1] B. Sun, N.-H. Tsai, F. Liu, R. Yu and H. Su, "Adversarial Defense by
   Stratified Convolutional Sparse Coding", CVPR 2019, arXiv:1812.00037.
.. [2] B. Wohlberg, "Efficient Algorithms for Convolutional Sparse
   Representations", IEEE Trans. Image Process. 25(1), 2016,
   doi:10.1109/TIP.2015.2495260.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import sporco.fft
from sporco import signal
from sporco.admm import cbpdn
from sporco.dictlrn import cbpdndl


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
        by the image's maximum first, as the reference did before saving.
    solver : {"torch", "woodbury", "sporco"}
        Which implementation of the same ADMM runs.  ``"torch"``
        (:mod:`pipeline.batched`) is a batched PyTorch port of sporco's
        ConvBPDN, on the CPU or a GPU; ``"sporco"`` is sporco's ConvBPDN
        itself, the reference's code path and the tests' oracle;
        ``"woodbury"`` (:class:`JointColourConvBPDN`) is sporco's with an
        exact, faster X-step.  All three give the same iteration counts (or
        within one) and agree to float32 rounding (above 100 dB).
    """

    lmbda: float = 0.2
    max_iter: int = 200
    rel_stop_tol: float = 5e-3
    filter_lmbda: float = 5.0
    pad: int = 16
    output: Literal["clip", "max_rescale"] = "clip"
    solver: Literal["torch", "woodbury", "sporco"] = "torch"

    def __post_init__(self) -> None:
        for name in ("lmbda", "rel_stop_tol", "filter_lmbda"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter}")
        if not (isinstance(self.pad, int) and self.pad >= 0):
            raise ValueError(f"pad must be an integer >= 0, got {self.pad}")
        if self.output not in ("clip", "max_rescale"):
            raise ValueError(f"output must be 'clip' or 'max_rescale', got {self.output!r}")
        if self.solver not in ("torch", *SOLVERS):
            raise ValueError(
                f"solver must be 'torch', 'woodbury' or 'sporco', got {self.solver!r}")

    def as_dict(self) -> dict:
        return asdict(self)


class JointColourConvBPDN(cbpdn.ConvBPDN):
    r"""sporco's ConvBPDN with an exact, faster X-step for a joint colour dictionary.

    At each frequency the X-step solves, for the ``M`` coefficients,

    .. math::
       (\rho I_M + \hat{D}^H \hat{D}) \hat{x} = \hat{b}

    where :math:`\hat{D}` is the ``C x M`` (``C = 3``) matrix of the filters'
    transforms.  By the Woodbury identity, with the eigendecomposition
    :math:`\hat{D} \hat{D}^H = V \Lambda V^H` of the ``C x C`` colour Gram
    matrix and :math:`W = V^H \hat{D}`,

    .. math::
       \hat{x} = \frac{1}{\rho} \left( \hat{b} - W^H (\rho I_C + \Lambda)^{-1}
       W \hat{b} \right)

    :math:`\Lambda` and :math:`W` depend on the dictionary only, so they are
    computed once (in :meth:`setdict`) and serve every penalty :math:`\rho`
    that sporco's automatic penalty update chooses.  sporco's own solve
    (``solvemdbi_ism``) iterates Sherman-Morrison over the channels on every
    iteration.  Everything else (the Y-step, relaxation, penalty update,
    stopping test, reconstruction) is sporco's.
    """

    def setdict(self, D=None):
        super().setdict(D)
        if self.cri.Cd == 1:
            return
        filters = self.Df[..., :, 0, :]  # (H, W/2+1, C, M): C x M per frequency
        gram = np.einsum("...cm,...dm->...cd", filters, filters.conj())
        eigenvalues, vectors = np.linalg.eigh(gram)
        self._eigenvalues = eigenvalues.astype(self.Df.real.dtype)
        self._w = np.einsum("...cd,...cm->...dm", vectors.conj(), filters).astype(self.Df.dtype)
        self._w_h = np.ascontiguousarray(self._w.conj().swapaxes(-1, -2))

    def xstep(self):
        if self.cri.Cd == 1:
            return super().xstep()
        self.YU[:] = self.Y - self.U
        b = (self.DSf + self.rho * self.fftn(self.YU, None, self.cri.axisN))[..., 0, 0, :]
        t = np.matmul(self._w, b[..., None])[..., 0] / (self.rho + self._eigenvalues)
        x = (b - np.matmul(self._w_h, t[..., None])[..., 0]) / self.rho
        self.Xf[:] = x[..., None, None, :]
        self.X = self.ifftn(self.Xf, self.cri.Nv, self.cri.axisN)
        self.xrrs = None


SOLVERS = {"woodbury": JointColourConvBPDN, "sporco": cbpdn.ConvBPDN}


def configure_fft(threads: int = 1) -> None:
    """Set sporco's process-global FFT settings for one worker process.

    sporco runs its FFTs through pyfftw with as many threads as the machine
    has cores and ``FFTW_MEASURE`` planning.  Several worker processes then
    oversubscribe the cores, and measured planning makes small solves slow
    under load and lets plans (and so the last bits of a result) depend on
    timing.  One thread and ``FFTW_ESTIMATE`` planning were as fast on a
    quiet machine (``benchmarks/README.md``) and give repeatable results.
    """
    sporco.fft.pyfftw_threads = int(threads)
    sporco.fft.pyfftw_planner_effort = "FFTW_ESTIMATE"


def split_low_high(
    image: np.ndarray, *, lmbda: float = 5.0, pad: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Split an image into a smooth low-pass part and the high-pass rest.

    Parameters
    ----------
    image : (H, W, 3) or (H, W) ndarray, float32
        Image in [0, 1].
    lmbda : float
        Tikhonov regularisation weight (sporco ``tikhonov_filter``).
    pad : int
        Symmetric padding in pixels.

    Returns
    -------
    low, high : ndarrays, same shape and dtype as ``image``
        ``low + high == image`` up to rounding.

    Examples
    --------
    >>> img = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    >>> low, high = split_low_high(img)
    >>> bool(np.allclose(low + high, img, atol=1e-6))
    True
    """
    low, high = signal.tikhonov_filter(image, lmbda, pad)
    return low.astype(image.dtype, copy=False), high.astype(image.dtype, copy=False)


def _cbpdn_options(options: CSCOptions) -> cbpdn.ConvBPDN.Options:
    """Map :class:`CSCOptions` to sporco's ConvBPDN options (the reference's)."""
    return cbpdn.ConvBPDN.Options(
        {
            "Verbose": False,
            "MaxMainIter": options.max_iter,
            "RelStopTol": options.rel_stop_tol,
            "AuxVarObj": False,
        }
    )


def reconstruct_image(
    image: np.ndarray, basis: np.ndarray, options: CSCOptions = CSCOptions()
) -> tuple[np.ndarray, int]:
    """Reconstruct one image from its low-pass part and a sparse code.

    Parameters
    ----------
    image : (H, W, 3) ndarray, float32
        Image in [0, 1].
    basis : (P, P, 3, M) ndarray, float32
        Joint colour dictionary, as returned by :func:`pipeline.basis.load_basis`.
    options : CSCOptions
        Solver settings.

    Returns
    -------
    reconstruction : (H, W, 3) ndarray, float32
        ``low + D*X`` in [0, 1] (clipped, or max-rescaled).
    n_iter : int
        ADMM iterations the solve took.
    """
    _check_image(image, basis)
    result, n_iter = reconstruct(image[None], basis, options=options)
    return result[0], int(n_iter[0])


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
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")
    _check_image(images[0], basis)
    if options.solver == "torch":
        # Imported here: pipeline.batched builds on this module's CSCOptions.
        from pipeline import batched  # noqa: PLC0415

        return batched.reconstruct_batch(images, basis, options, batch_size=batch_size,
                                         device=device)
    out = np.empty(images.shape, np.float32)
    n_iter = np.zeros(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        out[i], n_iter[i] = _reconstruct_sporco(image, basis, options)
    return out, n_iter


def _reconstruct_sporco(image: np.ndarray, basis: np.ndarray,
                        options: CSCOptions) -> tuple[np.ndarray, int]:
    """One image through sporco's ConvBPDN (or its Woodbury X-step subclass)."""
    low, high = split_low_high(image, lmbda=options.filter_lmbda, pad=options.pad)
    solver = SOLVERS[options.solver](basis, high, options.lmbda, _cbpdn_options(options))
    solver.solve()
    result = low + solver.reconstruct().reshape(high.shape)
    if options.output == "max_rescale":
        result = result / max(float(result.max()), np.finfo(np.float32).tiny)
    return np.clip(result, 0.0, 1.0).astype(np.float32), int(solver.k)


def _check_image(image: np.ndarray, basis: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[-1] != basis.shape[2]:
        raise ValueError(
            f"image must have shape (H, W, {basis.shape[2]}) to match the basis "
            f"{basis.shape}, got {image.shape}"
        )
    if image.shape[0] < basis.shape[0] or image.shape[1] < basis.shape[1]:
        raise ValueError(
            f"image {image.shape[:2]} is smaller than the filters {basis.shape[:2]}"
        )


def learn_dictionary(
    images: np.ndarray,
    *,
    n_filters: int = 64,
    filter_size: int = 8,
    lmbda: float = 0.2,
    max_iter: int = 200,
    filter_lmbda: float = 5.0,
    pad: int = 16,
    seed: int = 0,
    on_iteration: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Learn a joint colour convolutional dictionary on the high-pass parts.

    sporco's ``ConvBPDNDictLearn`` alternates the CBPDN objective of
    :class:`CSCOptions` over the codes with a constrained update of the
    filters (``ZeroMean``: every filter is zero-mean in each channel; unit
    norm over its ``P*P*3`` values), from a seeded random normal start.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray, float32
        Training images in [0, 1].
    n_filters, filter_size : int
        ``M`` filters of ``P x P`` pixels.
    lmbda : float
        Sparsity weight of the coding step.
    max_iter : int
        Dictionary-learning iterations.
    filter_lmbda, pad : float, int
        Tikhonov split, as in :func:`split_low_high`.
    seed : int
        Seed of the random initial dictionary.
    on_iteration : callable, optional
        Called after each iteration (e.g. to advance a progress bar).

    Returns
    -------
    basis : (P, P, 3, M) ndarray, float32
        Zero-mean, unit-norm filters.
    objective : (max_iter,) ndarray, float64
        The CBPDN objective after each iteration.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")
    high = np.stack(
        [split_low_high(im, lmbda=filter_lmbda, pad=pad)[1] for im in images], axis=-1
    )  # sporco's signal layout (H, W, C, K)
    rng = np.random.default_rng(seed)
    initial = rng.standard_normal((filter_size, filter_size, 3, n_filters)).astype(np.float32)
    opt = cbpdndl.ConvBPDNDictLearn.Options(
        {
            "Verbose": False,
            "MaxMainIter": max_iter,
            "CBPDN": {"rho": 50.0 * lmbda + 0.5, "AutoRho": {"Enabled": True}},
            "CCMOD": {"ZeroMean": True},
            "Callback": None if on_iteration is None else _never_stop(on_iteration),
        },
        dmethod="cns",
    )
    learner = cbpdndl.ConvBPDNDictLearn(initial, high, lmbda, opt, dmethod="cns")
    basis = learner.solve().squeeze().astype(np.float32)
    basis = basis.reshape(filter_size, filter_size, 3, n_filters)
    basis -= basis.mean(axis=(0, 1), keepdims=True)
    basis /= np.linalg.norm(basis.reshape(-1, n_filters), axis=0)
    objective = np.asarray(learner.getitstat().ObjFun, dtype=np.float64)
    return basis, objective


def _never_stop(on_iteration: Callable[[], object]) -> Callable[[object], bool]:
    """Wrap ``on_iteration`` as a sporco callback, which stops learning when it returns True."""

    def callback(_solver) -> bool:
        on_iteration()
        return False

    return callback

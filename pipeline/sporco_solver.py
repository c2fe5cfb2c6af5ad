"""sporco's algorithms as the reference runs them: the low/high split and ConvBPDN.

The reference reconstructs one image at a time with sporco's
``tikhonov_filter`` and ``ConvBPDN``.  This module is that code path (solver
``"sporco"``), the same with an exact, faster X-step for a joint colour
dictionary (solver ``"woodbury"``, :class:`JointColourConvBPDN`), and sporco's
process-global FFT settings, which each worker sets once
(:func:`configure_fft`).  It is the oracle that :mod:`pipeline.torch_solver` is
tested against.
"""

from __future__ import annotations

import numpy as np
import sporco.fft
from sporco import signal
from sporco.admm import cbpdn

from pipeline.options import CSCOptions
from pipeline.solver_io import check_images, finish_output


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


def reconstruct_sporco(
    images: np.ndarray,
    basis: np.ndarray,
    options: CSCOptions = CSCOptions(),
    *,
    woodbury: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruct (N, H, W, 3) images one at a time with sporco's ConvBPDN.

    ``woodbury=True`` uses :class:`JointColourConvBPDN`.  Returns the
    reconstructions, (N, H, W, 3) float32 in [0, 1], and each image's ADMM
    iterations, (N,) int64.
    """
    check_images(images, basis)
    solver_class = JointColourConvBPDN if woodbury else cbpdn.ConvBPDN
    out = np.empty(images.shape, np.float32)
    n_iter = np.zeros(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        low, high = split_low_high(image, lmbda=options.filter_lmbda, pad=options.pad)
        solver = solver_class(basis, high, options.lmbda, _convbpdn_options(options))
        solver.solve()
        out[i] = finish_output((low + solver.reconstruct().reshape(high.shape))[None],
                               options.output)[0]
        n_iter[i] = solver.k
    return out, n_iter


def _convbpdn_options(options: CSCOptions) -> cbpdn.ConvBPDN.Options:
    """Map :class:`CSCOptions` to sporco's ConvBPDN options (the reference's)."""
    return cbpdn.ConvBPDN.Options(
        {
            "Verbose": False,
            "MaxMainIter": options.max_iter,
            "RelStopTol": options.rel_stop_tol,
            "AuxVarObj": False,
        }
    )

"""Batched convolutional BPDN in PyTorch: sporco's ADMM, many images at once.

The reference reconstructs one image at a time with sporco's ``ConvBPDN``;
most of that time is Python overhead around small arrays.  Here the same
algorithm runs on a batch of images as PyTorch tensors (float32, FFTs over
the batch), on the CPU or a GPU with the same code.  It follows every one of
sporco's defaults, so that results agree to float32 rounding and iteration
counts are equal or within one:

- relaxation ``alpha = 1.8``: ``AX = alpha X + (1 - alpha) Y_prev``;
- initial penalty ``rho = 50 lambda + 1``; automatic penalty update after
  every iteration except the first (``Scaling`` 1000, ``RsdlRatio`` 1.2,
  target ratio ``xi = 1 + 18.3 ** (log10(lambda) + 1)``), the scaled dual
  ``U`` divided by the same factor;
- relative residuals ``r = |X - Y| / max(|X|, |Y|)`` and
  ``s = |Y - Y_prev| / |U|``, taken before that update; stop when both are
  below ``rel_stop_tol``;
- the reconstruction is made from ``Y`` (the sparse variable), not ``X``.

Every image stops on its own test.  Finished images leave the batch and
waiting ones take their places, so a batch never waits for its slowest image
and never stops an image early (iterations range from about 10 to 200).

Dictionary learning codes a mini-batch as sporco's online learner does: one
ADMM problem over all its images (``joint=True``: residuals over the whole
batch, one penalty, one stopping test) with that learner's penalty rule
(:data:`ONLINE_CDL_AUTORHO`).

The X-step solves ``(rho I + D^H D) x = b`` at each frequency, with ``D`` the
``3 x M`` matrix of the filters' transforms.  By the Woodbury identity and the
eigendecomposition ``D D^H = V diag(e) V^H`` of the 3x3 colour Gram matrix
(:func:`dictionary_spectrum`, computed once per dictionary and image size),
``x = (b - W^H (W b / (rho + e))) / rho`` with ``W = V^H D``: exact for every
``rho`` the penalty update picks.

Layouts: images and their parts are ``(N, 3, H, W)`` tensors here (channels
first, for the FFTs); coefficient maps are ``(B, M, H, W)``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import fused, fused_gpu
from pipeline.options import CSCOptions
from pipeline.solver_io import check_images, finish_output

RELAXATION = 1.8  # sporco ConvBPDN's RelaxParam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoRho:
    """sporco's automatic penalty update (its ``AutoRho`` options).

    After every ``period``-th iteration (never the first), with the relative
    residuals ``r`` and ``s`` and ``xi = target`` (None: ConvBPDN's
    ``1 + 18.3 ** (log10(lambda) + 1)``), rho is multiplied by ``f`` when
    ``r > ratio * xi * s`` and divided by ``f`` when ``s > (ratio / xi) * r``;
    ``f = min(sqrt(r / (xi s)) or its inverse, scaling)`` with
    ``auto_scaling``, else ``f = scaling``.  The scaled dual ``U`` is divided
    by the same factor.
    """

    period: int = 1
    scaling: float = 1000.0
    ratio: float = 1.2
    target: float | None = None
    auto_scaling: bool = True


CONVBPDN_AUTORHO = AutoRho()
"""sporco ConvBPDN's defaults: the reconstruction's rule."""

ONLINE_CDL_AUTORHO = AutoRho(period=10, scaling=2.0, ratio=10.0, target=1.0, auto_scaling=False)
"""The rule sporco's ``OnlineConvBPDNDictLearn`` codes its mini-batches with."""


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` is the GPU when PyTorch sees one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but PyTorch sees no GPU here")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return torch.device(device)


@dataclass(frozen=True)
class DictionarySpectrum:
    """A dictionary's transforms at one image size, for the X-step and the reconstruction.

    Attributes
    ----------
    filters : (3, M, H, W//2 + 1) complex64 tensor
        ``D``: the filters' 2-D real FFTs, each zero-padded to ``H x W``.
    w, w_conj : (3, M, H, W//2 + 1) complex64 tensors
        ``W = V^H D`` per frequency, and its complex conjugate.
    eigenvalues : (3, H, W//2 + 1) float32 tensor
        ``e`` of ``D D^H = V diag(e) V^H`` per frequency, >= 0.
    shape : (int, int)
        The image size ``(H, W)``.
    w_swapped : (3, M, 2 H (W//2 + 1)) float32 tensor, or None
        ``W`` as (imaginary, real) pairs, for the CPU's fused X-step
        (:func:`pipeline.fused.x_step`); None on a GPU.
    """

    filters: torch.Tensor
    w: torch.Tensor
    w_conj: torch.Tensor
    eigenvalues: torch.Tensor
    shape: tuple[int, int]
    w_swapped: torch.Tensor | None = None


def dictionary_spectrum(
    basis: np.ndarray, shape: tuple[int, int], device: str | torch.device = "cpu"
) -> DictionarySpectrum:
    """Transforms of a ``(P, P, 3, M)`` basis for ``shape = (H, W)`` images.

    The eigendecomposition is computed in double precision, then rounded.
    """
    height, width = shape
    kernel = torch.from_numpy(np.ascontiguousarray(basis.transpose(2, 3, 0, 1))).double()
    filters = torch.fft.rfft2(kernel, s=(height, width))  # (3, M, H, Wf), origin at (0, 0)
    per_frequency = filters.permute(2, 3, 0, 1)  # (H, Wf, 3, M)
    gram = per_frequency @ per_frequency.conj().transpose(-1, -2)
    eigenvalues, vectors = torch.linalg.eigh(gram)
    w = (vectors.conj().transpose(-1, -2) @ per_frequency).permute(2, 3, 0, 1)
    w = w.to(device, torch.complex64).contiguous()
    swapped = None
    if torch.device(device).type == "cpu":
        swapped = torch.view_as_real(w).flip(-1).reshape(3, w.shape[1], -1).contiguous()
    return DictionarySpectrum(
        filters=filters.to(device, torch.complex64).contiguous(),
        w=w,
        w_conj=w.conj().resolve_conj().contiguous(),
        eigenvalues=eigenvalues.permute(2, 0, 1).clamp_min(0).to(device, torch.float32)
        .contiguous(),
        shape=(height, width),
        w_swapped=swapped,
    )


#: Spectra kept per process, most recently used last, within SPECTRUM_CACHE_BYTES.
_spectra: OrderedDict[tuple, DictionarySpectrum] = OrderedDict()
SPECTRUM_CACHE_BYTES = 2**30


def cached_spectrum(basis: np.ndarray, shape: tuple[int, int],
                    device: torch.device) -> DictionarySpectrum:
    """:func:`dictionary_spectrum`, kept for the next call with the same basis and size.

    A worker reconstructs many images of each cluster; the eigendecompositions
    cost about 20 ms at 64x64, a fifth of one image's solve.
    """
    key = (hashlib.blake2b(np.ascontiguousarray(basis).view(np.uint8)).hexdigest(),
           basis.shape, tuple(shape), str(device))
    if key in _spectra:
        _spectra.move_to_end(key)
        return _spectra[key]
    spectrum = dictionary_spectrum(basis, shape, device)
    _spectra[key] = spectrum
    size = sum(t.numel() * t.element_size() for t in
               (spectrum.filters, spectrum.w, spectrum.w_conj, spectrum.eigenvalues,
                spectrum.w_swapped) if t is not None)
    while len(_spectra) > 1 and len(_spectra) * size > SPECTRUM_CACHE_BYTES:
        _spectra.popitem(last=False)
    return spectrum


def split_low_high(
    images: torch.Tensor, *, lmbda: float = 5.0, pad: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tikhonov low-pass / high-pass split of ``(N, C, H, W)`` images, as sporco's.

    The same filter as :func:`pipeline.sporco_solver.split_low_high` (sporco
    ``tikhonov_filter``): symmetric padding by ``pad`` pixels, then
    ``low = F^-1[F s / (1 + lmbda (|G_r|^2 + |G_c|^2))]`` with ``G`` the
    forward differences along rows and columns.
    """
    height, width = images.shape[-2:]
    rows = torch.from_numpy(np.pad(np.arange(height), pad, mode="symmetric"))
    cols = torch.from_numpy(np.pad(np.arange(width), pad, mode="symmetric"))
    padded = images[..., rows.to(images.device), :][..., cols.to(images.device)]
    size = padded.shape[-2:]
    difference = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    g_rows = torch.fft.rfft2(difference.reshape(2, 1), s=size)
    g_cols = torch.fft.rfft2(difference.reshape(1, 2), s=size)
    gain = 1.0 + lmbda * (g_rows.abs() ** 2 + g_cols.abs() ** 2)
    low = torch.fft.irfft2(torch.fft.rfft2(padded) / gain.to(images.device, torch.float32), s=size)
    low = low[..., pad:pad + height, pad:pad + width]
    return low, images - low


@torch.inference_mode()
def reconstruct_batch(
    images: np.ndarray,
    basis: np.ndarray,
    options: CSCOptions = CSCOptions(),
    *,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruct images with one dictionary: ``low + D * Y``, as sporco's ConvBPDN would.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray, float32
        Images in [0, 1].
    basis : (P, P, 3, M) ndarray, float32
        Joint colour dictionary.
    options : CSCOptions
        Solver settings.
    batch_size : int, optional
        Most images iterated together (default :func:`auto_batch_size`).
        On a CPU one image at a time was fastest (its arrays stay in
        cache; ``benchmarks/README.md``); a GPU wants as many as its memory
        holds.
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Returns
    -------
    reconstructions : (N, H, W, 3) ndarray, float32
        In [0, 1] (clipped, or max-rescaled: :func:`pipeline.solver_io.finish_output`).
    n_iter : (N,) ndarray, int
        ADMM iterations each image took.
    """
    coded = _reconstruct(images, basis, options, batch_size, device, measure=False)
    return coded.reconstructions, coded.n_iter


@dataclass(frozen=True)
class Coded:
    """What one dictionary made of N images: the reconstructions and how their codes fit.

    Attributes
    ----------
    reconstructions : (N, H, W, 3) float32 ndarray
        In [0, 1], finished as the options say (:func:`pipeline.solver_io.finish_output`).
    n_iter : (N,) int64 ndarray
        ADMM iterations of each image's solve.
    objective : (N,) float64 ndarray
        The CBPDN objective of each image's code ``Y``:
        ``0.5 ||sum_m d_m * y_m - s||^2 + lambda ||Y||_1`` with ``s`` its high-pass part.
    usage : (N, M) float64 ndarray
        The fraction of each filter's ``H x W`` coefficients that are not zero.
    """

    reconstructions: np.ndarray
    n_iter: np.ndarray
    objective: np.ndarray | None = None
    usage: np.ndarray | None = None

    @property
    def density(self) -> np.ndarray:
        """(N,) fraction of each image's ``M x H x W`` coefficients that are not zero."""
        return self.usage.mean(axis=1)


@torch.inference_mode()
def reconstruct_and_count(
    images: np.ndarray,
    basis: np.ndarray,
    options: CSCOptions = CSCOptions(),
    *,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    keep_spectrum: bool = True,
    fuse: bool | None = None,
) -> Coded:
    """:func:`reconstruct_batch`, and how each image's code fits and uses the filters.

    ``keep_spectrum=False`` leaves the dictionary's transforms out of the
    process's cache (:func:`cached_spectrum`): for a dictionary that is
    about to change, such as one being learned.  ``fuse`` as in :func:`solve`.
    """
    return _reconstruct(images, basis, options, batch_size, device, measure=True,
                        keep_spectrum=keep_spectrum, fuse=fuse)


def _reconstruct(images, basis, options, batch_size, device, *, measure: bool,
                 keep_spectrum: bool = True, fuse: bool | None = None) -> Coded:
    """Reconstruct; on a GPU that runs out of memory, again with half the batch.

    Several worker processes sharing one GPU each size their batch from the
    memory free when they start, so together they can ask for more than the
    GPU has; the smaller batch is kept for this process's later calls.
    """
    global _gpu_batch_limit
    check_images(images, basis)
    device = resolve_device(device) if isinstance(device, str) else device
    stack = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(device)
    stack = stack.permute(0, 3, 1, 2)
    transforms = cached_spectrum if keep_spectrum else dictionary_spectrum
    spectrum = transforms(basis, tuple(stack.shape[-2:]), device)
    batch_size = min(batch_size or auto_batch_size(spectrum.shape, basis.shape[-1], device),
                     len(images))
    while True:
        try:
            return _code(stack, spectrum, options, batch_size, measure, fuse)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
            # cuFFT reports its own allocations' failure as a RuntimeError
            out_of_memory = isinstance(err, torch.cuda.OutOfMemoryError) or any(
                words in str(err) for words in ("out of memory", "CUFFT_ALLOC_FAILED"))
            if not out_of_memory or device.type != "cuda" or batch_size == 1:
                raise
            batch_size = _gpu_batch_limit = batch_size // 2
            torch.cuda.empty_cache()
            log.warning("the GPU ran out of memory; solving again in batches of %d images",
                        batch_size)


def _code(stack: torch.Tensor, spectrum: DictionarySpectrum, options: CSCOptions,
          batch_size: int, measure: bool, fuse: bool | None) -> Coded:
    """:func:`_reconstruct`'s work for ``(N, 3, H, W)`` images on their device."""
    low, high = split_low_high(stack, lmbda=options.filter_lmbda, pad=options.pad)
    result = low  # the coded high-pass parts are added in place
    n_images, n_filters = len(stack), spectrum.filters.shape[1]
    n_iter, objective = np.zeros(n_images, dtype=np.int64), np.zeros(n_images)
    usage = np.zeros((n_images, n_filters))
    for index, coefficients, iterations in solve(high, spectrum, options, batch_size=batch_size,
                                                 fuse=fuse):
        rows = torch.from_numpy(index).to(stack.device)
        coded = synthesize(coefficients, spectrum)
        result[rows] += coded
        n_iter[index] = iterations
        if measure:  # a few passes more than the solve's own, so only where asked
            fit = 0.5 * (coded - high[rows]).double().square().sum(dim=(1, 2, 3))
            l1 = coefficients.double().abs().sum(dim=(1, 2, 3))
            objective[index] = (fit + options.lmbda * l1).cpu().numpy()
            usage[index] = (coefficients != 0).double().mean(dim=(2, 3)).cpu().numpy()
    reconstructions = finish_output(result.permute(0, 2, 3, 1).cpu().numpy(), options.output)
    if not measure:
        return Coded(reconstructions, n_iter)
    return Coded(reconstructions, n_iter, objective, usage)


#: The batch that last fitted this process's GPU after running out of memory (None: never).
_gpu_batch_limit: int | None = None


def auto_batch_size(shape: tuple[int, int], n_filters: int, device: torch.device) -> int:
    """Images per solver batch: 1 on a CPU; on a GPU, what fits in half its free memory
    (and no more than fitted after running out of memory, :func:`_reconstruct`).

    One image in the batch holds about 16 arrays of ``M x H x W`` float32
    (the ADMM variables, FFTs and temporaries).
    """
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_image = 16 * n_filters * shape[0] * shape[1] * 4
    return int(max(1, min(512, _gpu_batch_limit or 512, free // 2 // per_image)))


def synthesize(coefficients: torch.Tensor, spectrum: DictionarySpectrum) -> torch.Tensor:
    """``sum_m d_m * y_m``: ``(B, M, H, W)`` coefficient maps -> ``(B, 3, H, W)`` images."""
    transformed = torch.fft.rfft2(coefficients)
    channels = torch.einsum("cmhw,bmhw->bchw", spectrum.filters, transformed)
    return torch.fft.irfft2(channels, s=spectrum.shape)


@dataclass
class _Batch:
    """The images being solved, one row each: their ADMM state.

    Per-image scalars live in NumPy: the penalty logic is a few operations on
    ``B`` numbers, where PyTorch's per-call overhead would cost more than
    the arithmetic.
    """

    index: np.ndarray  # (B,) int64: positions in the input
    dsf: torch.Tensor  # (B, M, H, W//2+1) complex64: D^H s, fixed per image
    y: torch.Tensor  # (B, M, H, W): the sparse variable
    u: torch.Tensor  # (B, M, H, W): the scaled dual variable
    rho: np.ndarray  # (B,) float32: each image's penalty
    k: np.ndarray  # (B,) int64: iterations done
    z: torch.Tensor | None = None  # (B, M, H, W): rho (Y - U), the fused path's FFT input

    def take(self, rows: np.ndarray) -> _Batch:
        device_rows = torch.from_numpy(rows).to(self.y.device)
        return _Batch(self.index[rows], self.dsf[device_rows], self.y[device_rows],
                      self.u[device_rows], self.rho[rows], self.k[rows],
                      None if self.z is None else self.z[device_rows])

    def extend(self, other: _Batch) -> _Batch:
        def join(a, b):
            if a is None:
                return None
            return torch.cat([a, b]) if isinstance(a, torch.Tensor) else np.concatenate([a, b])
        return _Batch(*(join(getattr(self, f), getattr(other, f))
                        for f in _Batch.__dataclass_fields__))


@torch.inference_mode()
def solve(
    high: torch.Tensor,
    spectrum: DictionarySpectrum,
    options: CSCOptions,
    *,
    batch_size: int = 1,
    auto_rho: AutoRho = CONVBPDN_AUTORHO,
    joint: bool = False,
    fuse: bool | None = None,
):
    """Solve ConvBPDN for each ``(N, 3, H, W)`` high-pass image; yield images as they finish.

    ``joint=True`` solves all ``N`` images as one problem, as sporco's
    ConvBPDN does for a multi-image signal: the residuals are taken over the
    whole batch, all images share one penalty and stop together
    (``batch_size`` is then ``N``).

    ``fuse`` runs the elementwise work between the FFTs as fused loops:
    :mod:`pipeline.fused` on a CPU (numba), :mod:`pipeline.fused_gpu` on a
    GPU (Triton); by default wherever they are installed.  ``False`` runs
    it as PyTorch operations, the reference.

    Yields
    ------
    index : (F,) int64 ndarray
        Which images (positions in ``high``) finished at this iteration.
    coefficients : (F, M, H, W) float32 tensor
        Their sparse codes ``Y``.
    n_iter : (F,) int64 ndarray
        Their iteration counts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = len(high) if joint else batch_size
    fusable = fused.AVAILABLE if high.device.type == "cpu" else fused_gpu.works(high.device)
    fuse = fusable if fuse is None else fuse
    if fuse and not fusable:
        raise ValueError("the fused ADMM loops need numba on a CPU, and Triton (and a C "
                         "compiler for its launchers) on a GPU")
    iterate = (_iterate_fused if high.device.type == "cpu" else _iterate_triton) if fuse \
        else _iterate
    lmbda = np.float32(options.lmbda)
    xi = np.float32(1.0 + 18.3 ** (np.log10(lmbda) + 1.0) if auto_rho.target is None
                    else auto_rho.target)  # sporco's residual target ratio
    batch = None
    started = 0
    while started < len(high) or (batch is not None and len(batch.index)):
        room = batch_size - (0 if batch is None else len(batch.index))
        if room and started < len(high):
            index = np.arange(started, min(started + room, len(high)))
            fresh = _start(high[started:started + len(index)], index, spectrum, lmbda, fuse)
            batch = fresh if batch is None else batch.extend(fresh)
            started += len(index)
        r, s = iterate(batch, spectrum, lmbda, xi, auto_rho, joint)
        done = ((r < options.rel_stop_tol) & (s < options.rel_stop_tol))
        done |= batch.k >= options.max_iter
        if done.any():
            rows = torch.from_numpy(done).to(batch.y.device)
            yield batch.index[done], batch.y[rows], batch.k[done]
            batch = batch.take(~done)


def _start(high: torch.Tensor, index: np.ndarray, spectrum: DictionarySpectrum,
           lmbda: np.float32, fuse: bool = False) -> _Batch:
    """ADMM's starting state for new images: Y = U = 0, rho = 50 lambda + 1."""
    n, m = len(high), spectrum.filters.shape[1]
    height, width = spectrum.shape
    dsf = torch.einsum("cmhw,bchw->bmhw", spectrum.filters.conj(), torch.fft.rfft2(high))
    dsf = dsf.contiguous()  # the fused loops read it as flat pairs
    zeros = high.new_zeros((n, m, height, width))
    rho = np.full(n, 50.0 * lmbda + 1.0, dtype=np.float32)
    return _Batch(index, dsf, zeros, zeros.clone(), rho, np.zeros(n, dtype=np.int64),
                  zeros.clone() if fuse else None)


def _iterate(batch: _Batch, spectrum: DictionarySpectrum, lmbda: np.float32, xi: np.float32,
             auto_rho: AutoRho, joint: bool) -> tuple[np.ndarray, np.ndarray]:
    """One ADMM iteration for every image in ``batch`` (updated in place); return (r, s).

    ``joint``: the norms are taken over the whole batch (every row gets the same r, s).
    """
    y_prev, u = batch.y, batch.u
    threshold = lmbda / batch.rho
    rho, inverse_rho, low, high = _per_image(
        np.stack([batch.rho, 1 / batch.rho, -threshold, threshold]), y_prev)
    b = torch.fft.rfft2(torch.sub(y_prev, u).mul_(rho)).add_(batch.dsf)
    x = torch.fft.irfft2(_solve_x(b, rho, spectrum), s=spectrum.shape).mul_(inverse_rho)
    # Relaxed Y-step (soft threshold at lambda / rho) and dual step: with
    # v = AX + U, the new Y is v - clip(v) and the new U is clip(v).
    v = torch.add(u, x, alpha=RELAXATION).add_(y_prev, alpha=1.0 - RELAXATION)
    u = torch.maximum(v, low).minimum(high)
    y = v.sub_(u)
    norms = torch.stack([_norm(x), _norm(y), _norm(u), _norm(x - y), _norm(y - y_prev)])
    r, s, factor = _penalty_update(norms.cpu().numpy(), batch, xi, auto_rho, joint)
    batch.y, batch.u = y, u.div_(_per_image(factor, u))
    batch.rho, batch.k = batch.rho * factor, batch.k + 1
    return r, s


def _iterate_fused(batch: _Batch, spectrum: DictionarySpectrum, lmbda: np.float32,
                   xi: np.float32, auto_rho: AutoRho, joint: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_iterate` with the work between the FFTs in :mod:`pipeline.fused`'s loops."""
    b = torch.fft.rfft2(batch.z)
    fused.x_step(_pairs(b), _pairs(batch.dsf), _pairs(spectrum.w), spectrum.w_swapped.numpy(),
                 _rows(spectrum.eigenvalues), batch.rho)
    x = torch.fft.irfft2(b, s=spectrum.shape)
    norms = np.empty((len(batch.index), 5))
    fused.y_step(_rows(x), _rows(batch.y), _rows(batch.u), 1 / batch.rho, lmbda / batch.rho,
                 RELAXATION, norms)
    r, s, factor = _penalty_update(norms.T, batch, xi, auto_rho, joint)
    fused.next_input(_rows(batch.y), _rows(batch.u), _rows(batch.z), batch.rho, factor)
    batch.rho, batch.k = batch.rho * factor, batch.k + 1
    return r, s


def _iterate_triton(batch: _Batch, spectrum: DictionarySpectrum, lmbda: np.float32,
                    xi: np.float32, auto_rho: AutoRho,
                    joint: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_iterate` with the work between the FFTs in :mod:`pipeline.fused_gpu`'s kernels."""
    # The inverse FFT left unscaled ("forward" puts the 1/(H W) on the forward
    # transform): the Y-step applies it with 1 / rho, saving PyTorch's pass for it.
    size = np.float32(spectrum.shape[0] * spectrum.shape[1])
    rho, inverse_rho, threshold = torch.from_numpy(
        np.stack([batch.rho, 1 / (batch.rho * size), lmbda / batch.rho])).to(batch.y.device)
    b = torch.fft.rfft2(batch.z)
    fused_gpu.x_step(b, batch.dsf, spectrum.w, spectrum.eigenvalues, rho)
    x = torch.fft.irfft2(b, s=spectrum.shape, norm="forward")
    norms = fused_gpu.y_step(x, batch.y, batch.u, inverse_rho, threshold, RELAXATION)
    r, s, factor = _penalty_update(norms.cpu().numpy().T, batch, xi, auto_rho, joint)
    fused_gpu.next_input(batch.y, batch.u, batch.z, rho, torch.from_numpy(factor).to(rho.device))
    batch.rho, batch.k = batch.rho * factor, batch.k + 1
    return r, s


def _pairs(a: torch.Tensor) -> np.ndarray:
    """A contiguous complex ``(B, M, ...)`` CPU tensor as ``(B, M, 2n)`` float32 pairs (no copy)."""
    return torch.view_as_real(a).view(a.shape[0], a.shape[1], -1).numpy()


def _rows(a: torch.Tensor) -> np.ndarray:
    """A contiguous ``(B, ...)`` CPU tensor as a ``(B, n)`` NumPy view (no copy)."""
    return a.view(len(a), -1).numpy()


def _penalty_update(norms: np.ndarray, batch: _Batch, xi: np.float32, auto_rho: AutoRho,
                    joint: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r, s) from the ``(5, B)`` norms ``|X|, |Y|, |U|, |X - Y|, |Y - Y_prev|``; rho's factor.

    ``joint``: the norms are summed over the whole batch (every row gets the same r, s).
    """
    if joint:
        norms = np.broadcast_to(np.sqrt(np.sum(norms**2, axis=1, keepdims=True)), norms.shape)
    r, s = residuals(*norms, batch.rho)
    update = (batch.k != 0) & ((batch.k + 1) % auto_rho.period == 0)
    return r, s, np.where(update, penalty_factor(r, s, xi, auto_rho), np.float32(1))


def _per_image(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``(..., B)`` NumPy scalars as a ``(..., B, 1, 1, 1)`` tensor beside ``like``."""
    return torch.from_numpy(values).to(like.device)[..., None, None, None]


def _norm(a: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(a, dim=(1, 2, 3))


def _solve_x(b: torch.Tensor, rho: torch.Tensor, spectrum: DictionarySpectrum) -> torch.Tensor:
    """``rho x`` for the X-step ``(rho I + D^H D) x = b``, by Woodbury; ``b`` is overwritten.

    The division by ``rho`` is left to the caller, after the inverse FFT:
    dividing a complex tensor by a real one is 10x slower in PyTorch on
    the CPU than multiplying a real one.  A loop over the 3 colour channels
    of elementwise products was 3x faster than ``einsum`` or a batched
    matmul over frequencies.
    """
    w, w_conj = spectrum.w, spectrum.w_conj
    t = torch.stack([(w[d] * b).sum(1) for d in range(3)], 1)
    t *= 1 / (rho + spectrum.eigenvalues)
    for d in range(3):
        b.addcmul_(w_conj[d], t[:, d, None], value=-1)
    return b


def residuals(norm_x, norm_y, norm_u, norm_x_y, norm_y_change, rho):
    """sporco's relative primal and dual residuals (r, s), one per image."""
    primal_scale = np.maximum(norm_x, norm_y)
    dual_scale = rho * norm_u
    primal_scale[primal_scale == 0] = 1
    dual_scale[dual_scale == 0] = 1
    return norm_x_y / primal_scale, rho * norm_y_change / dual_scale


def penalty_factor(r: np.ndarray, s: np.ndarray, xi: np.float32,
                    rule: AutoRho) -> np.ndarray:
    """sporco's adaptive penalty update (Wohlberg 2017): the factor rho is multiplied by."""
    scaled = s * xi
    scaling = np.float32(rule.scaling)
    if rule.auto_scaling:
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.sqrt(np.where(r > scaled, r / scaled, scaled / r))
        factor = np.minimum(factor, scaling)
        factor[(r == 0) | (s == 0)] = scaling
    else:
        factor = np.full_like(r, scaling)
    grow = r > rule.ratio * scaled
    shrink = s > (rule.ratio / xi) * r
    with np.errstate(divide="ignore"):
        return np.where(grow, factor, np.where(shrink, 1 / factor, 1)).astype(np.float32)

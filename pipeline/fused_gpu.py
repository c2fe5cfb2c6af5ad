"""One ADMM iteration's work between its two FFTs as three fused kernels (GPU, Triton).

The GPU's counterpart of :mod:`pipeline.fused`: on a GPU the PyTorch path
spends each iteration in some thirty kernels, each a pass over the
``B x M x H x W`` coefficient maps in memory (the X-step's per-colour
temporaries among them), and a GPU's iteration is bound by those passes,
not by arithmetic.  Here the same work is three kernels that read each
array once:

1. :func:`x_step`: ``b + D^H s``, then the Woodbury solve at every
   frequency: a thread per frequency loops over the filters twice (the
   three sums ``W b``, then the update), the second pass finding ``b`` in
   cache where it can; programs of neighbouring images share their block of
   ``W`` through the L2 cache (a tile of all filters per program, reduced
   across threads, measured 6x slower on an H200);
2. :func:`y_step`: the relaxed soft threshold, the dual step and the five
   norms of the residuals (per-block partial sums, added in a fixed order so
   that a solve is repeatable);
3. :func:`next_input`: ``rho' (Y - U / f)``, the next FFT's input, and the
   dual rescaled by the penalty factor ``f``.

The maths is :func:`pipeline.torch_solver._iterate`'s, which stays the reference;
iteration counts and codes agree to float32 rounding (tested, on the GPU
and in Triton's interpreter on a CPU).  Triton compiles each kernel at its
first call in a process and caches it on disk (``~/.triton``).  Triton ships
with PyTorch's CUDA builds; without it, or where its kernels cannot be built
(:func:`works`), the PyTorch path runs.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import torch

AVAILABLE = importlib.util.find_spec("triton") is not None

log = logging.getLogger(__name__)

#: Frequencies per X-step program and its warps; elements per Y-step program.
#: (On an H200 blocks of 64 to 256 frequencies and 2 to 8 warps measured within 3 %.)
X_BLOCK, X_WARPS, Y_BLOCK = 128, 4, 2048


@functools.cache
def works(device: torch.device) -> bool:
    """Whether the kernels compile and run on ``device`` (checked once per process).

    Triton builds a small C launcher for each kernel with the machine's C
    compiler; where there is none (or the GPU is one Triton does not support),
    the solver takes the PyTorch path instead, and says so once.
    """
    if not AVAILABLE:
        return False
    try:
        y = torch.zeros((1, 4), device=device)
        ones = torch.ones(1, device=device)
        next_input(y, y.clone(), y.clone(), ones, ones)
        torch.cuda.synchronize(device)
        return True
    except Exception as err:  # noqa: BLE001 (any failure to build means: not here)
        log.warning("the fused GPU kernels do not run here (%s); the solver uses PyTorch's "
                    "operations instead", str(err).splitlines()[0] if str(err) else repr(err))
        return False


def x_step(b: torch.Tensor, dsf: torch.Tensor, w: torch.Tensor, eigenvalues: torch.Tensor,
           rho: torch.Tensor) -> None:
    """``rho x`` of the X-step ``(rho I + D^H D) x = b + D^H s``, in place in ``b``.

    Parameters
    ----------
    b : (B, M, H, W//2 + 1) complex64 tensor, contiguous
        On entry the FFT of ``rho (Y - U)``; on exit the transform of ``rho x``.
    dsf : (B, M, H, W//2 + 1) complex64 tensor, contiguous
        ``D^H s`` of each image.
    w : (3, M, H, W//2 + 1) complex64 tensor, contiguous
        ``W = V^H D`` per frequency.
    eigenvalues : (3, H, W//2 + 1) float32 tensor
        ``e`` of ``D D^H`` per frequency.
    rho : (B,) float32 tensor
        Each image's penalty.
    """
    import triton

    from pipeline import triton_kernels as kernels

    n_images, n_filters = b.shape[:2]
    n_freq = b[0, 0].numel()
    grid = (n_images, triton.cdiv(n_freq, X_BLOCK))
    kernels.x_step_kernel[grid](torch.view_as_real(b), torch.view_as_real(dsf),
                                torch.view_as_real(w), eigenvalues, rho, n_freq,
                                n_filters=n_filters, BLOCK_F=X_BLOCK, num_warps=X_WARPS)


def y_step(x: torch.Tensor, y: torch.Tensor, u: torch.Tensor, inverse_rho: torch.Tensor,
           threshold: torch.Tensor, relaxation: float) -> torch.Tensor:
    """The relaxed Y-step and dual step, in place; return the residuals' five norms.

    ``x`` is ``rho x`` in space, ``y`` and ``u`` the previous ``Y`` and ``U``
    (``(B, M, H, W)`` float32, contiguous), ``inverse_rho`` and ``threshold``
    each image's ``1 / rho`` and ``lambda / rho``.  Returns the ``(B, 5)``
    float64 tensor of ``|X|, |Y|, |U|, |X - Y|, |Y - Y_prev|``.
    """
    import triton

    from pipeline import triton_kernels as kernels

    n_images, n = len(x), x[0].numel()
    n_blocks = triton.cdiv(n, Y_BLOCK)
    partial = x.new_empty((n_images, n_blocks, 5))
    kernels.y_step_kernel[(n_images, n_blocks)](x, y, u, inverse_rho, threshold, partial, n,
                                         n_blocks, relaxation, BLOCK=Y_BLOCK)
    return partial.double().sum(1).sqrt()


def next_input(y: torch.Tensor, u: torch.Tensor, z: torch.Tensor, rho: torch.Tensor,
               factor: torch.Tensor) -> None:
    """``z = rho f (Y - U / f)`` and ``U /= f``: the next iteration's FFT input.

    ``rho`` and ``factor`` are each image's penalty before the update and the
    update's factor (``(B,)`` float32); ``y``, ``u`` and ``z`` as in
    :func:`y_step`.
    """
    import triton

    from pipeline import triton_kernels as kernels

    n_images, n = len(y), y[0].numel()
    kernels.next_input_kernel[(n_images, triton.cdiv(n, Y_BLOCK))](y, u, z, rho, factor, n,
                                                            BLOCK=Y_BLOCK)

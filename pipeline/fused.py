"""One ADMM iteration's elementwise work in two fused loops (CPU, numba).

:func:`pipeline.batched.solve` spends each iteration in two FFTs, the
X-step's per-frequency products and, in space, some fifteen separate
PyTorch operations, each a pass over ``B x M x H x W`` numbers, with a
call's overhead each.  Here the work in space is two loops that read and
write each array once:

1. :func:`y_step`: the relaxed soft threshold, the dual step and the five
   norms of the residuals;
2. :func:`next_input`: ``rho' (Y - U / f)``, the next FFT's input, and the
   dual rescaled by the penalty factor ``f``.

The X-step stays in PyTorch: written as numba loops (complex or as real
pairs, blocked by frequency) or compiled by ``torch.compile`` it measured
slower than PyTorch's own (``benchmarks/README.md``).

The maths is :func:`pipeline.batched._iterate`'s, which stays the reference
and the path on a GPU; the two give the same iteration counts and codes to
float32 rounding (the norms' sums are reordered here).  numba compiles the
loops at their first call and caches them on disk (beside this file, or in
``NUMBA_CACHE_DIR``); without numba the PyTorch path runs.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

AVAILABLE = importlib.util.find_spec("numba") is not None


def _compiled(function=None, *, reassociate: bool = False):
    """``function`` compiled by numba at its first call, not at import.

    numba's import and its compile (or cache load) cost about a second, which a
    process that never solves on a CPU should not pay.  ``reassociate`` lets
    LLVM reorder a loop's sums, so that they vectorise.
    """
    if function is None:
        return functools.partial(_compiled, reassociate=reassociate)
    compiled = None

    @functools.wraps(function)
    def run(*args):
        nonlocal compiled
        if compiled is None:
            import numba

            compiled = numba.njit(cache=True, nogil=True,
                                  fastmath={"reassoc"} if reassociate else False)(function)
        return compiled(*args)

    return run


@_compiled(reassociate=True)
def y_step(x, y, u, inverse_rho, threshold, relaxation, norms):
    """The relaxed Y-step and dual step, in place; the residuals' five norms.

    Parameters
    ----------
    x : (B, N) float32
        ``rho x`` in space (the inverse FFT of :func:`x_step`'s ``b``).
    y, u : (B, N) float32
        On entry the previous ``Y`` and ``U``; on exit the new ones.
    inverse_rho, threshold : (B,) float32
        ``1 / rho`` and ``lambda / rho`` of each image.
    relaxation : float
        ``alpha``: ``v = U + alpha X + (1 - alpha) Y_prev``.
    norms : (B, 5) float64
        Out: ``|X|, |Y|, |U|, |X - Y|, |Y - Y_prev|`` of each image.
    """
    n_images, n = x.shape
    keep = np.float32(1.0 - relaxation)
    alpha = np.float32(relaxation)
    for i in range(n_images):
        s_x = s_y = s_u = s_xy = s_dy = np.float32(0.0)
        for j in range(n):
            xv = x[i, j] * inverse_rho[i]
            previous = y[i, j]
            v = u[i, j] + alpha * xv + keep * previous
            dual = min(max(v, -threshold[i]), threshold[i])
            new = v - dual
            y[i, j] = new
            u[i, j] = dual
            s_x += xv * xv
            s_y += new * new
            s_u += dual * dual
            s_xy += (xv - new) * (xv - new)
            s_dy += (new - previous) * (new - previous)
        norms[i, 0] = np.sqrt(s_x)
        norms[i, 1] = np.sqrt(s_y)
        norms[i, 2] = np.sqrt(s_u)
        norms[i, 3] = np.sqrt(s_xy)
        norms[i, 4] = np.sqrt(s_dy)


@_compiled
def next_input(y, u, z, rho, factor):
    """``z = rho f (Y - U / f)`` and ``U /= f``: the next iteration's FFT input.

    Parameters
    ----------
    y, u : (B, N) float32
        The iteration's ``Y`` and ``U`` (``u`` rescaled in place).
    z : (B, N) float32
        Out: ``rho' (Y - U')`` with the new penalty ``rho' = rho f``.
    rho, factor : (B,) float32
        Each image's penalty before the update, and the update's factor.
    """
    n_images, n = y.shape
    for i in range(n_images):
        scale = np.float32(1.0) / factor[i]
        new_rho = rho[i] * factor[i]
        for j in range(n):
            dual = u[i, j] * scale
            u[i, j] = dual
            z[i, j] = new_rho * (y[i, j] - dual)

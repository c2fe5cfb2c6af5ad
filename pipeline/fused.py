"""One ADMM iteration's work between its two FFTs as three fused loops (CPU, numba).

:func:`pipeline.torch_solver.solve` spends each iteration in two FFTs, the
X-step's per-frequency products and, in space, some fifteen separate
PyTorch operations, each a pass over ``B x M x H x W`` numbers (and, in the
X-step, a temporary per colour), with a call's overhead each.  Here that
work is three loops that read each array once or twice, from cache where
they can:

1. :func:`x_step`: ``b + D^H s``, then the Woodbury solve at every
   frequency, in blocks of frequencies small enough that the second pass
   over ``b`` and ``W`` finds them in cache;
2. :func:`y_step`: the relaxed soft threshold, the dual step and the five
   norms of the residuals;
3. :func:`next_input`: ``rho' (Y - U / f)``, the next FFT's input, and the
   dual rescaled by the penalty factor ``f``.

Complex numbers are handled as the interleaved (real, imaginary) float32
pairs that the FFT writes, with ``W`` stored twice, as pairs and with each
pair swapped: every product is then elementwise over contiguous floats,
which vectorises (numba's complex type, or real and imaginary parts picked
out of the pairs, does not).

The maths is :func:`pipeline.torch_solver._iterate`'s, which stays the reference
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
def x_step(b, dsf, w, w_swapped, eigenvalues, rho):
    """``rho x`` of the X-step ``(rho I + D^H D) x = b + D^H s``, in place in ``b``.

    By Woodbury, per frequency: ``t = W (b + D^H s) / (rho + e)`` (3 values),
    then ``b + D^H s - W^H t``.  With ``b = (br, bi)`` and ``W = (wr, wi)`` as
    pairs, ``a = sum_m W * b`` (pairwise) holds ``(sum wr br, sum wi bi)`` and
    ``c = sum_m W_swapped * b`` holds ``(sum wi br, sum wr bi)``, so
    ``t = (a0 - a1, c0 + c1) / (rho + e)``; the update subtracts
    ``W * (tr, -tr) + W_swapped * (ti, ti)``.

    Parameters
    ----------
    b : (B, M, 2F) float32
        On entry the FFT of ``rho (Y - U)`` (F frequencies as pairs); on exit
        the transform of ``rho x``.
    dsf : (B, M, 2F) float32
        ``D^H s`` of each image.
    w, w_swapped : (3, M, 2F) float32
        ``W = V^H D`` per frequency as pairs, and with each pair swapped.
    eigenvalues : (3, F) float32
        ``e`` of ``D D^H`` per frequency.
    rho : (B,) float32
        Each image's penalty.
    """
    block = 256  # floats: 128 frequencies, so that a block of b and W stays in cache
    n_images, n_filters, n_floats = b.shape
    a = np.empty((3, block), np.float32)
    c = np.empty((3, block), np.float32)
    t_pairs = np.empty((3, block), np.float32)
    t_swapped = np.empty((3, block), np.float32)
    for i in range(n_images):
        for start in range(0, n_floats, block):
            n = min(block, n_floats - start)
            a[:] = 0
            c[:] = 0
            for m in range(n_filters):
                bm = b[i, m, start:start + n]
                dm = dsf[i, m, start:start + n]
                for j in range(n):
                    bm[j] += dm[j]
                for d in range(3):
                    wd = w[d, m, start:start + n]
                    sd = w_swapped[d, m, start:start + n]
                    ad = a[d]
                    cd = c[d]
                    for j in range(n):
                        ad[j] += wd[j] * bm[j]
                        cd[j] += sd[j] * bm[j]
            for d in range(3):
                for k in range(n // 2):
                    scale = np.float32(1.0) / (rho[i] + eigenvalues[d, start // 2 + k])
                    t_re = (a[d, 2 * k] - a[d, 2 * k + 1]) * scale
                    t_im = (c[d, 2 * k] + c[d, 2 * k + 1]) * scale
                    t_pairs[d, 2 * k] = t_re
                    t_pairs[d, 2 * k + 1] = -t_re
                    t_swapped[d, 2 * k] = t_im
                    t_swapped[d, 2 * k + 1] = t_im
            for m in range(n_filters):
                bm = b[i, m, start:start + n]
                for d in range(3):
                    wd = w[d, m, start:start + n]
                    sd = w_swapped[d, m, start:start + n]
                    td = t_pairs[d]
                    tsd = t_swapped[d]
                    for j in range(n):
                        bm[j] -= wd[j] * td[j] + sd[j] * tsd[j]


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

"""The Triton kernels of :mod:`pipeline.fused_gpu` (imported only when a GPU solve runs them:
importing Triton costs start-up time that a CPU process should not pay)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _load_pair(pointer, at, inside):
    return (tl.load(pointer + at, mask=inside, other=0.0),
            tl.load(pointer + at + 1, mask=inside, other=0.0))


@triton.jit
def _load_sum(b_ptr, dsf_ptr, at, inside):
    """``b + D^H s`` at one filter and a block of frequencies, as (real, imaginary)."""
    br, bi = _load_pair(b_ptr, at, inside)
    sr, si = _load_pair(dsf_ptr, at, inside)
    return br + sr, bi + si


@triton.jit
def x_step_kernel(b_ptr, dsf_ptr, w_ptr, e_ptr, rho_ptr, n_freq,
                        n_filters: tl.constexpr, BLOCK_F: tl.constexpr):
    image = tl.program_id(0).to(tl.int64)  # fastest: neighbours share W's block
    freq = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    inside = freq < n_freq
    plane = n_filters * n_freq  # one colour's W
    t0r = tl.zeros([BLOCK_F], tl.float32)
    t0i = tl.zeros([BLOCK_F], tl.float32)
    t1r = tl.zeros([BLOCK_F], tl.float32)
    t1i = tl.zeros([BLOCK_F], tl.float32)
    t2r = tl.zeros([BLOCK_F], tl.float32)
    t2i = tl.zeros([BLOCK_F], tl.float32)
    for m in range(n_filters):  # t_d = sum_m W_dm (b_m + D^H s_m)
        at = 2 * ((image * n_filters + m) * n_freq + freq)
        br, bi = _load_sum(b_ptr, dsf_ptr, at, inside)
        w_at = 2 * (m * n_freq + freq)
        wr, wi = _load_pair(w_ptr, w_at, inside)
        t0r += wr * br - wi * bi
        t0i += wr * bi + wi * br
        wr, wi = _load_pair(w_ptr, w_at + 2 * plane, inside)
        t1r += wr * br - wi * bi
        t1i += wr * bi + wi * br
        wr, wi = _load_pair(w_ptr, w_at + 4 * plane, inside)
        t2r += wr * br - wi * bi
        t2i += wr * bi + wi * br
    rho = tl.load(rho_ptr + image)
    scale = 1.0 / (rho + tl.load(e_ptr + freq, mask=inside, other=0.0))
    t0r *= scale
    t0i *= scale
    scale = 1.0 / (rho + tl.load(e_ptr + n_freq + freq, mask=inside, other=0.0))
    t1r *= scale
    t1i *= scale
    scale = 1.0 / (rho + tl.load(e_ptr + 2 * n_freq + freq, mask=inside, other=0.0))
    t2r *= scale
    t2i *= scale
    for m in range(n_filters):  # b_m + D^H s_m - sum_d conj(W_dm) t_d
        at = 2 * ((image * n_filters + m) * n_freq + freq)
        br, bi = _load_sum(b_ptr, dsf_ptr, at, inside)
        w_at = 2 * (m * n_freq + freq)
        wr, wi = _load_pair(w_ptr, w_at, inside)
        br -= wr * t0r + wi * t0i
        bi -= wr * t0i - wi * t0r
        wr, wi = _load_pair(w_ptr, w_at + 2 * plane, inside)
        br -= wr * t1r + wi * t1i
        bi -= wr * t1i - wi * t1r
        wr, wi = _load_pair(w_ptr, w_at + 4 * plane, inside)
        br -= wr * t2r + wi * t2i
        bi -= wr * t2i - wi * t2r
        tl.store(b_ptr + at, br, mask=inside)
        tl.store(b_ptr + at + 1, bi, mask=inside)


@triton.jit
def y_step_kernel(x_ptr, y_ptr, u_ptr, inverse_rho_ptr, threshold_ptr, partial_ptr,
                   n, n_blocks, relaxation, BLOCK: tl.constexpr):
    image = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    offsets = block * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    at = image * n + offsets
    x = tl.load(x_ptr + at, mask=inside, other=0.0) * tl.load(inverse_rho_ptr + image)
    previous = tl.load(y_ptr + at, mask=inside, other=0.0)
    threshold = tl.load(threshold_ptr + image)
    v = tl.load(u_ptr + at, mask=inside, other=0.0) + relaxation * x \
        + (1.0 - relaxation) * previous
    dual = tl.minimum(tl.maximum(v, -threshold), threshold)
    new = v - dual
    tl.store(y_ptr + at, new, mask=inside)
    tl.store(u_ptr + at, dual, mask=inside)
    out = partial_ptr + (image * n_blocks + block) * 5
    tl.store(out, tl.sum(x * x, axis=0))
    tl.store(out + 1, tl.sum(new * new, axis=0))
    tl.store(out + 2, tl.sum(dual * dual, axis=0))
    tl.store(out + 3, tl.sum((x - new) * (x - new), axis=0))
    tl.store(out + 4, tl.sum((new - previous) * (new - previous), axis=0))


@triton.jit
def next_input_kernel(y_ptr, u_ptr, z_ptr, rho_ptr, factor_ptr, n, BLOCK: tl.constexpr):
    image = tl.program_id(0).to(tl.int64)
    offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    at = image * n + offsets
    factor = tl.load(factor_ptr + image)
    dual = tl.load(u_ptr + at, mask=inside, other=0.0) / factor
    tl.store(u_ptr + at, dual, mask=inside)
    y = tl.load(y_ptr + at, mask=inside, other=0.0)
    tl.store(z_ptr + at, tl.load(rho_ptr + image) * factor * (y - dual), mask=inside)

"""One ADMM iteration on the CPU: the PyTorch path against the fused loops, and the roofline.

Measured in one run, one thread, one image at a time (the CPU's layout), the
two paths interleaved so that a noisy machine moves both alike:

1. milliseconds per iteration at 64x64 and 224x224 (64 filters of 8x8):
   the whole iteration on each path, and its parts (the two FFTs, the
   X-step, the work in space), and an X-step written as loops over the real
   and imaginary parts, tried and not used;
2. whole solves of a few photo tiles or photographs to convergence, images
   per second on each path, and their ADMM iteration counts (the spread that
   made finished images leave the batch);
3. a roofline line: the bytes each path moves per iteration (counted per
   operation below) against this machine's copy bandwidth, measured with an
   array the size of the coefficient maps (cache) and one of 512 MB (memory).

Usage::

    python benchmarks/solver_iteration.py [--repeats 200] [--out results_solver_iteration.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import fused, torch_solver
from pipeline.basis import DEFAULT_BASIS, load_basis
from pipeline.options import CSCOptions
from pipeline.photos import bundled_photographs, photo_tiles

HERE = Path(__file__).resolve().parent
LMBDA = np.float32(0.2)
XI = np.float32(1.0 + 18.3 ** (np.log10(0.2) + 1.0))


def bytes_per_iteration(n_filters: int, size: int) -> dict:
    """Bytes each path reads and writes per iteration, one image (counted per operation).

    ``real`` is one ``M x H x W`` float32 array; ``cplx`` one ``M x H x (W/2+1)``
    complex64 array (about the same).  An FFT is counted as one read and one
    write; the X-step's loop over 3 colours reads ``W`` or ``W^H`` (each 3 maps).
    """
    real = n_filters * size * size * 4
    cplx = n_filters * size * (size // 2 + 1) * 8
    ffts = 2 * (real + cplx)
    x_step = (3 * cplx  # b + D^H s
              + 3 * 4 * cplx  # t_d = sum_m W_d b: product (3 passes) and sum (1), per colour
              + 3 * 3 * cplx)  # b -= W^H_d t_d, per colour
    torch_space = (3 * real + 2 * real  # rho (Y - U)
                   + 2 * real  # x *= 1 / rho
                   + 3 * real + 3 * real  # v = U + alpha X + (1 - alpha) Y
                   + 2 * real + 2 * real  # clip
                   + 3 * real  # Y = v - U
                   + 3 * real + 3 * real  # X - Y, Y - Y_prev
                   + 7 * real  # five norms
                   + 2 * real)  # U /= f
    fused_space = 5 * real + 4 * real  # y_step, next_input
    # fused.x_step, from memory: b and D^H s in, W and W swapped (3 maps each) in, b out;
    # its second pass over a block of b and W reads them from cache.
    fused_x_step = cplx + cplx + 6 * cplx + cplx
    return {"torch": ffts + x_step + torch_space, "fused": ffts + fused_x_step + fused_space,
            "ffts": ffts, "x_step_torch": x_step, "x_step_fused": fused_x_step}


def copy_bandwidth(n_bytes: int, repeats: int) -> float:
    """Bytes per second of ``b.copy_(a)`` (read + write counted) for ``n_bytes`` arrays."""
    a = torch.rand(n_bytes // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        b.copy_(a)
        timings.append(time.perf_counter() - started)
    return 2 * n_bytes / float(np.median(timings))


def started_batch(image: np.ndarray, spectrum, fuse: bool, warm: int = 10):
    """A one-image ADMM state ``warm`` iterations in (away from the zero start)."""
    channels_first = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    high = torch_solver.split_low_high(channels_first)[1]
    state = torch_solver._start(high, np.arange(1), spectrum, LMBDA, fuse)
    iterate = torch_solver._iterate_fused if fuse else torch_solver._iterate
    for _ in range(warm):
        iterate(state, spectrum, LMBDA, XI, torch_solver.CONVBPDN_AUTORHO, False)
    return state


def x_step_loops(b, dsf, w, eigenvalues, rho):  # pragma: no cover (compiled by numba)
    """The X-step as numba loops over real and imaginary parts: tried, not used.

    It does not vectorise (``pipeline.fused.x_step``, over the pairs as they
    lie, does).

    ``b, dsf``: (B, M, F, 2) float32 (complex as real pairs), ``w``: (3, M, F, 2),
    ``eigenvalues``: (3, F), ``rho``: (B,).  Frequencies in blocks of 128, so that
    a block of ``W`` is read from cache by the second loop.
    """
    block = 128
    n_images, n_filters, n_freq = b.shape[:3]
    t_re = np.empty((3, block), np.float32)
    t_im = np.empty((3, block), np.float32)
    for i in range(n_images):
        for start in range(0, n_freq, block):
            n = min(block, n_freq - start)
            t_re[:] = 0
            t_im[:] = 0
            for m in range(n_filters):
                for d in range(3):
                    for q in range(n):
                        p = start + q
                        re = b[i, m, p, 0] + dsf[i, m, p, 0]
                        im = b[i, m, p, 1] + dsf[i, m, p, 1]
                        t_re[d, q] += w[d, m, p, 0] * re - w[d, m, p, 1] * im
                        t_im[d, q] += w[d, m, p, 0] * im + w[d, m, p, 1] * re
            for d in range(3):
                for q in range(n):
                    scale = np.float32(1.0) / (rho[i] + eigenvalues[d, start + q])
                    t_re[d, q] *= scale
                    t_im[d, q] *= scale
            for m in range(n_filters):
                for q in range(n):
                    p = start + q
                    re = b[i, m, p, 0] + dsf[i, m, p, 0]
                    im = b[i, m, p, 1] + dsf[i, m, p, 1]
                    for d in range(3):  # b -= conj(W) t
                        re -= w[d, m, p, 0] * t_re[d, q] + w[d, m, p, 1] * t_im[d, q]
                        im -= w[d, m, p, 0] * t_im[d, q] - w[d, m, p, 1] * t_re[d, q]
                    b[i, m, p, 0] = re
                    b[i, m, p, 1] = im


def per_iteration(image: np.ndarray, basis: np.ndarray, repeats: int) -> dict:
    """Section 1: median milliseconds of each path's iteration and of their parts."""
    size = image.shape[0]
    spectrum = torch_solver.dictionary_spectrum(basis, (size, size))
    states = {fuse: started_batch(image, spectrum, fuse) for fuse in (False, True)}
    s = states[True]
    rho = torch_solver._per_image(s.rho, s.y)
    b = torch.fft.rfft2(s.z)
    x = torch.fft.irfft2(b, s=(size, size))
    threshold = torch_solver._per_image(LMBDA / s.rho, s.y)
    norms = np.empty((1, 5))
    y, u, z = (torch_solver._rows(a.clone()) for a in (s.y, s.u, s.z))
    factor = np.ones(1, np.float32)
    import numba  # noqa: PLC0415

    loops = numba.njit(nogil=True, fastmath=True)(x_step_loops)
    pairs = {name: torch.view_as_real(a).reshape(len(a), a.shape[1], -1, 2).numpy()
             for name, a in (("b", b.clone()), ("dsf", s.dsf), ("w", spectrum.w))}
    eigenvalues = spectrum.eigenvalues.reshape(3, -1).numpy()
    check = pairs["b"].copy()
    loops(check, pairs["dsf"], pairs["w"], eigenvalues, s.rho)
    reference = torch.view_as_real(torch_solver._solve_x(b.clone().add_(s.dsf), rho, spectrum))
    assert np.allclose(check.reshape(reference.shape), reference.numpy(), rtol=1e-3,
                       atol=1e-4 * float(reference.abs().max()))

    def torch_space():  # _iterate's operations outside the FFTs and the X-step
        t = states[False]
        v = torch.add(t.u, x, alpha=1.8).add_(t.y, alpha=-0.8)
        clipped = torch.maximum(v, -threshold).minimum(threshold)
        y_new = v - clipped
        torch.stack([torch_solver._norm(a)
                     for a in (x, y_new, clipped, x - y_new, y_new - t.y)]).numpy()
        torch.sub(y_new, clipped).mul_(rho)
        clipped.div_(rho)

    parts = {
        "iteration, PyTorch": lambda: torch_solver._iterate(states[False], spectrum, LMBDA, XI,
                                                        torch_solver.CONVBPDN_AUTORHO, False),
        "iteration, fused": lambda: torch_solver._iterate_fused(states[True], spectrum, LMBDA, XI,
                                                            torch_solver.CONVBPDN_AUTORHO, False),
        "forward FFT": lambda: torch.fft.rfft2(s.z),
        "X-step (with + D^H s)": lambda: torch_solver._solve_x(b.clone().add_(s.dsf), rho,
                                                               spectrum),
        "X-step, fused": lambda: fused.x_step(
            torch_solver._pairs(b.clone()), torch_solver._pairs(s.dsf),
            torch_solver._pairs(spectrum.w),
            spectrum.w_swapped.numpy(), eigenvalues, s.rho),
        "X-step as numba loops on (re, im) (tried)": lambda: loops(
            pairs["b"].copy(), pairs["dsf"], pairs["w"], eigenvalues, s.rho),
        "inverse FFT": lambda: torch.fft.irfft2(b, s=(size, size)),
        "space, PyTorch": torch_space,
        "space, fused": lambda: (
            fused.y_step(torch_solver._rows(x), y, u, 1 / s.rho, LMBDA / s.rho, 1.8, norms),
            fused.next_input(y, u, z, s.rho, factor)),
    }
    timings = {name: [] for name in parts}
    with torch.inference_mode():
        for part in parts.values():
            part()
        for _ in range(repeats):  # interleaved: the same noise for every part
            for name, part in parts.items():
                started = time.perf_counter()
                part()
                timings[name].append(time.perf_counter() - started)
    return {name: 1e3 * float(np.median(t)) for name, t in timings.items()}


def whole_solves(images: np.ndarray, basis: np.ndarray, rounds: int = 3) -> dict:
    """Section 2: images per second solving to convergence, each path, best of ``rounds``."""
    size = images.shape[1]
    spectrum = torch_solver.dictionary_spectrum(basis, (size, size))
    high = torch_solver.split_low_high(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())[1]
    options = CSCOptions()
    seconds = {False: [], True: []}
    n_iter = {}
    for _ in range(rounds):
        for fuse in (False, True):
            started = time.perf_counter()
            solved = list(torch_solver.solve(high, spectrum, options, fuse=fuse))
            seconds[fuse].append(time.perf_counter() - started)
            n_iter[fuse] = np.concatenate([k for _, _, k in solved])
    assert np.array_equal(np.sort(n_iter[False]), np.sort(n_iter[True]))
    counts = n_iter[True]
    return {"images": len(images), "size": size,
            "img_per_s_torch": len(images) / min(seconds[False]),
            "img_per_s_fused": len(images) / min(seconds[True]),
            "speedup": min(seconds[False]) / min(seconds[True]),
            "iterations_mean": float(counts.mean()), "iterations_min": int(counts.min()),
            "iterations_max": int(counts.max())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--tiles", type=int, default=24)
    parser.add_argument("--photographs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results_solver_iteration.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    basis = load_basis(DEFAULT_BASIS)
    tiles = photo_tiles(args.tiles, seed=3)
    small = np.stack([tiles.load(i) for i in range(args.tiles)]).astype(np.float32)
    crops = [photo[:224, :224, :3] for photo in bundled_photographs().values()]
    large = np.stack(crops[:args.photographs]).astype(np.float32) / 255
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "iteration_ms": {}, "solves": [], "roofline": {}}
    for images, repeats in ((small, args.repeats), (large, max(10, args.repeats // 10))):
        size = images.shape[1]
        ms = per_iteration(images[0], basis, repeats)
        moved = bytes_per_iteration(basis.shape[-1], size)
        result["iteration_ms"][size] = ms
        result["roofline"][size] = {
            "bytes_torch": moved["torch"], "bytes_fused": moved["fused"],
            "copy_gb_s_cache_sized": copy_bandwidth(basis.shape[-1] * size * size * 4, 200) / 1e9,
            "copy_gb_s_memory": copy_bandwidth(2**29, 5) / 1e9}
        print(size, json.dumps(ms, indent=1), json.dumps(result["roofline"][size]), flush=True)
        result["solves"].append(whole_solves(images, basis))
        print(json.dumps(result["solves"][-1]), flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The solver and the reconstruct command on a GPU: rates, agreement, profile and roofline.

Measures, in one run on a machine with a CUDA GPU (each part's results are
printed as a JSON line as it finishes, and all of them written to ``--out``):

* ``copy``: the GPU's copy bandwidth (a STREAM-like ``b.copy_(a)`` of 4 GiB,
  bytes read plus written per second): the roofline's ceiling;
* ``solver``: images per second of :func:`pipeline.torch_solver.reconstruct_and_count`
  with the shipped basis (64 filters of 8x8, lambda 0.2) on 64x64 photo tiles
  and on 224x224 crops of the bundled photographs, with the PyTorch path
  (``fuse=False``, the reference) and the fused Triton kernels
  (:mod:`pipeline.fused_gpu`, the default), and the two paths' agreement
  (iteration counts, PSNR between their reconstructions) and the GPU's
  with the CPU's (numba) on a few of the same images;
* ``iteration``: milliseconds per ADMM iteration of a fixed batch at 224x224
  for both paths, the kernel time ``torch.profiler`` sees in it (the rest is
  the host's work and launches) and its costliest kernels; with the bytes an
  iteration must move, the distance to the copy bandwidth;
* ``learner``: seconds per step of the online dictionary learner on the GPU;
* ``command``: the whole ``python -m pipeline.reconstruct`` on a folder of
  JPEGs of ImageNet-like sizes that the benchmark writes first (from the
  bundled photographs), and the rate at which the CPU decodes and fits them,
  which bounds what any GPU can be fed.

Usage::

    python benchmarks/gpu.py [--out results_gpu.json] [--parts copy,solver,...]
        [--jpegs 3000] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from pipeline import torch_solver
from pipeline.basis import DEFAULT_BASIS, load_basis
from pipeline.datasets import load_item
from pipeline.images import fit_image, to_float_rgb
from pipeline.online_cdl import OnlineLearner, initial_filters
from pipeline.options import CDLOptions, CSCOptions
from pipeline.photos import bundled_photographs, photo_tiles
from pipeline.sources import image_folder

PARTS = ("copy", "solver", "iteration", "learner", "command")


def tiles(count: int) -> np.ndarray:
    dataset = photo_tiles(count, tile=64, seed=3)
    return np.stack([dataset.load(i) for i in range(count)])


def crops(count: int) -> np.ndarray:
    """224x224 centre crops of the photographs, and of their mirror images, repeated."""
    photos = [fit_image(to_float_rgb(p), 224) for p in bundled_photographs().values()]
    photos += [p[:, ::-1] for p in photos]
    return np.stack([photos[i % len(photos)] for i in range(count)]).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else round(10 * np.log10(1 / mse), 1)


def copy_bandwidth() -> dict:
    """Bytes read plus written per second by a device-to-device copy of 4 GiB."""
    a = torch.empty(2**30, dtype=torch.float32, device="cuda").uniform_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / 10
    del a, b
    torch.cuda.empty_cache()
    return {"bytes": 2 * 4 * 2**30, "seconds": seconds,
            "gb_per_s": round(2 * 4 * 2**30 / seconds / 1e9, 1)}


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU for a dry run only


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def solve_rate(images: np.ndarray, basis: np.ndarray, *, fuse: bool | None, batch_size: int,
               device: str = DEVICE) -> tuple[float, torch_solver.Coded]:
    """Images per second of a whole reconstruction (transfers and finishing included)."""
    synchronize()
    started = time.perf_counter()
    coded = torch_solver.reconstruct_and_count(images, basis, CSCOptions(), batch_size=batch_size,
                                          device=device, fuse=fuse)
    synchronize()
    return len(images) / (time.perf_counter() - started), coded


def solver(name: str, images: np.ndarray, basis: np.ndarray, batch_size: int,
           cpu_count: int) -> dict:
    solve_rate(images[:batch_size], basis, fuse=True, batch_size=batch_size)
    solve_rate(images[:8], basis, fuse=False, batch_size=8)  # warm-ups
    row = {"images": name, "n_images": len(images), "batch_size": batch_size}
    reference_rate, reference = solve_rate(images, basis, fuse=False, batch_size=batch_size)
    fused_rate, fused = solve_rate(images, basis, fuse=True, batch_size=batch_size)
    torch.set_num_threads(1)
    try:
        cpu_rate, cpu = solve_rate(images[:cpu_count], basis, fuse=None, batch_size=1,
                                   device="cpu")
    except Exception as err:  # noqa: BLE001 (numba missing or broken there: the reference)
        print(f"CPU fused loops failed ({err!r}); the CPU's PyTorch path instead", flush=True)
        cpu_rate, cpu = solve_rate(images[:cpu_count], basis, fuse=False, batch_size=1,
                                   device="cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    row.update({
        "pytorch_images_per_s": round(reference_rate, 1),
        "fused_images_per_s": round(fused_rate, 1),
        "fused_vs_pytorch": round(fused_rate / reference_rate, 2),
        "cpu_one_thread_fused_images_per_s": round(cpu_rate, 2),
        "n_iter_mean": round(float(reference.n_iter.mean()), 1),
        "n_iter_range": [int(reference.n_iter.min()), int(reference.n_iter.max())],
        "fused_vs_pytorch_n_iter_equal": float(np.mean(fused.n_iter == reference.n_iter)),
        "fused_vs_pytorch_n_iter_max_difference": int(np.abs(fused.n_iter
                                                             - reference.n_iter).max()),
        "fused_vs_pytorch_psnr_db": psnr(fused.reconstructions, reference.reconstructions),
        "gpu_fused_vs_cpu_psnr_db": psnr(fused.reconstructions[:cpu_count],
                                         cpu.reconstructions),
        "gpu_fused_vs_cpu_n_iter_max_difference": int(np.abs(
            fused.n_iter[:cpu_count] - cpu.n_iter).max()),
    })
    return row


def iteration(images: np.ndarray, basis: np.ndarray, copy_gb_per_s: float | None,
              out: Path) -> dict:
    """Milliseconds per iteration of a fixed batch (no image stops), profiled, per path."""
    options = CSCOptions(max_iter=30, rel_stop_tol=1e-12)  # no image stops early
    stack = torch.from_numpy(images).to(DEVICE).permute(0, 3, 1, 2)
    _, high = torch_solver.split_low_high(stack, lmbda=options.filter_lmbda, pad=options.pad)
    spectrum = torch_solver.dictionary_spectrum(basis, tuple(high.shape[-2:]), DEVICE)
    n, m = len(images), basis.shape[-1]
    height, width = spectrum.shape
    real_map = n * m * height * width * 4  # bytes of one (B, M, H, W) float32 array
    half_spectrum = n * m * height * (width // 2 + 1) * 8
    # The passes an iteration must make, counted as each array read or written once:
    # two FFTs (at least a read and a write each), the X-step (b, D^H s in; b out),
    # the Y-step (X, Y, U in; Y, U out) and the next FFT's input (Y, U in; U, Z out).
    passes = {"fused": 2 * (real_map + half_spectrum) + 3 * half_spectrum + 5 * real_map
              + 4 * real_map}
    row = {"images": f"{height}x{width}", "batch_size": n, "iterations": options.max_iter,
           "bytes_per_iteration_fused_minimum": passes["fused"]}
    for label, fuse in (("pytorch", False), ("fused", True)):
        for _ in torch_solver.solve(high, spectrum, CSCOptions(max_iter=3), batch_size=n,
                                    fuse=fuse):
            pass  # warm-up: kernels compiled, FFT plans made
        synchronize()
        started = time.perf_counter()
        for _ in torch_solver.solve(high, spectrum, options, batch_size=n, fuse=fuse):
            pass
        synchronize()
        milliseconds = (time.perf_counter() - started) / options.max_iter * 1e3
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as profile:
            for _ in torch_solver.solve(high, spectrum, CSCOptions(max_iter=5, rel_stop_tol=1e-12),
                                   batch_size=n, fuse=fuse):
                pass
            synchronize()
        events = profile.key_averages()
        kernel_us = sum(e.self_device_time_total for e in events
                        if e.device_type == torch.autograd.DeviceType.CUDA)
        table = events.table(sort_by="self_device_time_total", row_limit=15)
        (out / f"profile_{label}_{height}.txt").write_text(table)
        print(table, flush=True)
        row[label] = {"ms_per_iteration": round(milliseconds, 2),
                      "us_per_image_iteration": round(milliseconds * 1e3 / n, 1),
                      "kernel_ms_per_iteration": round(kernel_us / 5 / 1e3, 2)}
    if DEVICE == "cuda":
        row["fused_tuning_ms_per_iteration"] = tuning(high, spectrum, n)
    if copy_gb_per_s:
        at_copy_speed = passes["fused"] / (copy_gb_per_s * 1e9) * 1e3
        row["fused_minimum_at_copy_speed_ms"] = round(at_copy_speed, 2)
        row["fused_vs_roofline"] = round(row["fused"]["ms_per_iteration"] / at_copy_speed, 2)
    if DEVICE == "cuda":
        row["cufft_plan_cache"] = {"size": torch.backends.cuda.cufft_plan_cache.size,
                                   "max_size": torch.backends.cuda.cufft_plan_cache.max_size}
    return row


def tuning(high: torch.Tensor, spectrum: torch_solver.DictionarySpectrum, n: int) -> dict:
    """Milliseconds per fused iteration for a few block sizes of the X-step kernel."""
    from pipeline import fused_gpu  # noqa: PLC0415

    chosen = fused_gpu.X_BLOCK, fused_gpu.X_WARPS
    options = CSCOptions(max_iter=20, rel_stop_tol=1e-12)
    times = {}
    for block, warps in [(64, 2), (128, 4), (256, 4), (256, 8)]:
        fused_gpu.X_BLOCK, fused_gpu.X_WARPS = block, warps
        for _ in torch_solver.solve(high, spectrum, CSCOptions(max_iter=2), batch_size=n,
                                    fuse=True):
            pass
        synchronize()
        started = time.perf_counter()
        for _ in torch_solver.solve(high, spectrum, options, batch_size=n, fuse=True):
            pass
        synchronize()
        key = f"x_step {block} frequencies, {warps} warps"
        times[key] = round((time.perf_counter() - started) / options.max_iter * 1e3, 2)
    fused_gpu.X_BLOCK, fused_gpu.X_WARPS = chosen
    return times


def learner(images: np.ndarray, steps: int = 10) -> dict:
    options = CDLOptions()
    online = OnlineLearner(initial_filters(options, seed=0), options, device=DEVICE)
    online.step(images[:16])  # warm-up (and the first step of the run)
    synchronize()
    started = time.perf_counter()
    for step in range(1, steps + 1):
        online.step(images[16 * step:16 * (step + 1)])
    synchronize()
    return {"minibatch": 16, "filters": 64, "steps": steps,
            "gpu_s_per_step": round((time.perf_counter() - started) / steps, 4)}


def _write_jpegs(job: tuple[Path, int, int]) -> None:
    from PIL import Image  # noqa: PLC0415

    folder, start, stop = job
    photos = list(bundled_photographs().values())
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        photo = to_float_rgb(photos[i % len(photos)])
        long_side = int(rng.integers(400, 640))
        ratio = rng.choice([4 / 3, 3 / 4, 3 / 2, 1.0])
        height, width = (long_side, int(long_side / ratio)) if ratio < 1 \
            else (int(long_side / ratio), long_side)
        image = Image.fromarray((photo * 255).astype(np.uint8)).resize((width, height))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        target = folder / f"class_{i % 10:02d}" / f"image_{i:06d}.JPEG"
        image.save(target, quality=90)


def make_jpeg_folder(folder: Path, count: int) -> dict:
    """``count`` JPEGs of 400-640 pixels on their long side, in 10 class folders."""
    for k in range(10):
        (folder / f"class_{k:02d}").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    workers = os.cpu_count() or 1
    bounds = np.linspace(0, count, workers + 1).astype(int)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_jpegs, [(folder, a, b) for a, b in zip(bounds[:-1], bounds[1:],
                                                                     strict=True)]))
    size = sum(p.stat().st_size for p in folder.rglob("*.JPEG"))
    return {"jpegs": count, "megabytes": round(size / 1e6, 1),
            "seconds_to_write": round(time.perf_counter() - started, 1)}


def decode_rate(folder: Path, threads: int, count: int = 400) -> float:
    """Images per second that ``threads`` threads decode and fit to 224x224 (the loader)."""
    items = image_folder(folder).items[:count]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: load_item(item, size=224, fit="center_crop"), items))
    return len(items) / (time.perf_counter() - started)


def command(folder: Path, workers: int, out: Path) -> dict:
    """The reconstruct command on the JPEG folder, as a user runs it; its own rate."""
    store = Path(tempfile.mkdtemp()) / "imagenet.zarr"
    argv = [sys.executable, "-m", "pipeline.reconstruct", "imagenet",
            "--set", f"dataset.path={folder}", "--out", str(store), "--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    wall = time.perf_counter() - started
    (out / f"command_workers{workers}.log").write_text(done.stdout + done.stderr)
    found = re.search(r"(\d+) of (\d+) images done in ([\d.]+) s", done.stdout + done.stderr)
    row = {"workers": workers, "returncode": done.returncode, "wall_s": round(wall, 1)}
    if found:
        images, seconds = int(found.group(1)), float(found.group(3))
        row.update({"images": images, "done_in_s": seconds,
                    "images_per_s": round(images / seconds, 1),
                    "images_per_s_whole_process": round(images / wall, 1)})
    else:
        row["output_tail"] = (done.stdout + done.stderr)[-2000:]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results_gpu.json")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--jpegs", type=int, default=3000)
    parser.add_argument("--copy-gb-per-s", type=float,
                        help="the copy bandwidth measured before (when 'copy' is not run)")
    parser.add_argument("--workers", default="4")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the images to use (a small dry run: 0.01)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    out = Path(args.out).parent
    basis = load_basis(DEFAULT_BASIS)
    result = {"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (dry run)",
              "torch": torch.__version__,
              "basis": "photos-k1, 64 filters of 8x8, lambda 0.2"}

    def record(key, value):
        result[key] = value
        print(json.dumps({key: value}), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2))

    if "copy" in parts and DEVICE == "cuda":
        record("copy", copy_bandwidth())
    copy_speed = result.get("copy", {}).get("gb_per_s", args.copy_gb_per_s)
    if "iteration" in parts:
        record("iteration_224", iteration(crops(max(2, int(64 * args.scale))), basis,
                                          copy_speed, out))
    if "solver" in parts:
        count = max(8, int(512 * args.scale))
        record("solver_64", solver("64x64", tiles(8 * count), basis, count, 16))
        record("solver_224", solver("224x224", crops(count), basis, count // 2, 2))
    if "learner" in parts:
        record("learner", learner(tiles(16 * 11)))
    if "command" in parts:
        folder = Path(tempfile.mkdtemp()) / "val"
        made = make_jpeg_folder(folder, max(20, int(args.jpegs * args.scale)))
        made["decode_images_per_s"] = {
            threads: round(decode_rate(folder, threads), 1) for threads in (1, 4, 16)}
        record("jpegs", made)
        record("command", [command(folder, int(w), out) for w in args.workers.split(",")])


if __name__ == "__main__":
    main()

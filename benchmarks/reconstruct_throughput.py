"""Throughput, scaling, memory and a profile of the reconstruct flow, against the reference loop.

Everything is measured in one run of this script, on the same images and
settings, so the ratios are robust to a shared, noisy machine:

1. throughput at 64x64 and 224x224: the reference per-image loop (sporco
   ConvBPDN in this process, sporco's default FFT settings) against the
   pipeline's flow on its default LocalCluster (2 single-threaded worker
   processes, the batched PyTorch solver), on 1 worker, and with the previous
   default solver (sporco with the Woodbury X-step);
2. a sweep of solver batch size against worker count (and one worker process
   with two PyTorch threads) at 64x64, plotted to ``--plot``;
3. memory: peak RSS per worker and the client's RSS growth for N = 100 and
   N = 2000 images read from a folder of PNG files;
4. a profile of one ADMM iteration (FFTs, X-step, thresholding, residuals),
   the per-image I/O, and the Dask overhead, with a lower limit per image.

Only one LocalCluster exists at a time, and none while the reference runs.

Usage::

    python benchmarks/reconstruct_throughput.py [--n64 64] [--n224 6] [--out results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import dask
import distributed
import numpy as np
import psutil
import sporco
import torch
import zarr
from distributed import Client
from PIL import Image
from sporco import signal
from sporco.admm import cbpdn

from flows.reconstruct import StoreTarget, reconstruct_dataset
from pipeline import torch_solver
from pipeline.basis import DEFAULT_BASIS, load_basis, open_bases
from pipeline.config import ComputeConfig
from pipeline.datasets import Dataset, load_item
from pipeline.images import Sizing, fit_image, to_float_rgb
from pipeline.options import CSCOptions
from pipeline.photos import bundled_photographs, sample
from pipeline.runtime import WORKER_MALLOC, SolverThreads, connect
from pipeline.sources import image_folder
from pipeline.store import StoreLayout, open_store, read_images, write_image

HERE = Path(__file__).resolve().parent


def images_64(n: int) -> list[np.ndarray]:
    data = sample()
    step = len(data) // n
    return [data.items[i * step] for i in range(n)]


def images_224(n: int) -> list[np.ndarray]:
    """Centre crops of the sample photographs at 224x224 (uint8)."""
    photos = list(bundled_photographs().values())
    out = []
    for i in range(n):
        photo = to_float_rgb(photos[i % len(photos)])
        side = 224 + 64 * (i // len(photos))  # a second pass crops at a wider scale
        out.append(np.round(fit_image(fit_image(photo, side), 224) * 255).astype(np.uint8))
    return out


def reference_loop(images: list[np.ndarray], basis: np.ndarray) -> tuple[float, np.ndarray]:
    """The original project's per-image loop (clipping instead of its max-rescale)."""
    started = time.perf_counter()
    out = []
    for item in images:
        image = item.astype(np.float32) / 255.0
        low, high = signal.tikhonov_filter(image, 5, 16)
        opt = cbpdn.ConvBPDN.Options({"Verbose": False, "MaxMainIter": 200,
                                      "RelStopTol": 5e-3, "AuxVarObj": False})
        solver = cbpdn.ConvBPDN(basis, high, 0.2, opt)
        solver.solve()
        out.append(np.clip(low + solver.reconstruct().squeeze(), 0, 1))
    return time.perf_counter() - started, np.stack(out)


class TorchThreads(distributed.WorkerPlugin):
    """After SolverThreads: let the solver use ``n`` threads in each worker process."""

    def __init__(self, n: int):
        self.n = n

    def setup(self, worker) -> None:
        torch.set_num_threads(self.n)


def start(workers: int, torch_threads: int = 1) -> Client:
    client = connect(n_workers=workers, dashboard_address="127.0.0.1:0")
    if torch_threads != 1:
        client.register_plugin(TorchThreads(torch_threads))
    return client


def stop(client: Client) -> None:
    cluster = client.cluster
    client.close()
    cluster.close()


def flow(client, dataset: Dataset, store: Path, options=CSCOptions(), compute=ComputeConfig(),
         basis: Path = DEFAULT_BASIS, read_back: bool = True):
    """Run the reconstruct flow; return (seconds, images read back from the store or None)."""
    started = time.perf_counter()
    reconstruct_dataset(client, dataset, open_bases(basis), StoreTarget(store),
                        options=options, compute=compute, progress=False)
    seconds = time.perf_counter() - started
    return seconds, read_images(zarr.open_group(store, mode="r")) if read_back else None


def as_dataset(images, size) -> Dataset:
    return Dataset(f"bench{size}", [f"{i:05d}" for i in range(len(images))], list(images),
                   image_size=size, fit="none")


def psnr(a, b) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


def throughput(size, images, basis, tmp) -> dict:
    """Section 1: reference loop against the flow, default and variants."""
    ref_s, ref = reference_loop(images, basis)
    row = {"size": size, "n": len(images), "ref_ips": len(images) / ref_s}
    dataset = as_dataset(images, size)
    variants = {"pipeline": (2, CSCOptions()), "one_worker": (1, CSCOptions()),
                "woodbury": (2, CSCOptions(solver="woodbury"))}
    for name, (workers, options) in variants.items():
        client = start(workers)
        seconds, result = flow(client, dataset, tmp / f"{name}{size}.zarr", options)
        stop(client)
        row[name] = len(images) / seconds
        if name == "pipeline":
            pipe = result
    originals = np.stack([i.astype(np.float32) / 255 for i in images])
    row["psnr_ref"] = float(np.mean([psnr(o, r) for o, r in zip(originals, ref, strict=True)]))
    row["psnr_pipe"] = float(np.mean([psnr(o, p) for o, p in zip(originals, pipe, strict=True)]))
    row["agree_min"] = min(psnr(p, r) for p, r in zip(pipe, ref, strict=True))
    solver, n_iter = torch_solver.reconstruct_batch(originals, basis, batch_size=1)
    row["mean_iter"] = float(n_iter.mean())
    # The same comparison before the store's uint8 rounding: the solver's float32 output.
    row["psnr_solver"] = float(np.mean([psnr(o, r) for o, r in zip(originals, solver,
                                                                    strict=True)]))
    row["agree_min_float"] = min(psnr(p, r) for p, r in zip(solver, ref, strict=True))
    print(json.dumps(row), flush=True)
    return row


def sweep(images, tmp) -> list[dict]:
    """Section 2: images/s against batch size, for 1 and 2 workers and 1 x 2 threads."""
    dataset = as_dataset(images, 64)
    rows = []
    for workers, threads in ((1, 1), (2, 1), (1, 2)):
        client = start(workers, threads)
        for batch_size in (1, 2, 4, 8, 16):
            compute = ComputeConfig(batch_size=batch_size, images_per_task=16)
            seconds, _ = flow(client, dataset, tmp / f"sweep{workers}{threads}{batch_size}.zarr",
                              compute=compute)
            rows.append({"workers": workers, "threads": threads, "batch_size": batch_size,
                         "ips": len(images) / seconds})
            print(json.dumps(rows[-1]), flush=True)
        stop(client)
    return rows


def memory(tmp) -> list[dict]:
    """Section 3: peak RSS of each worker and the client's RSS growth, N = 100 and 2000 PNGs.

    RSS is sampled every 50 ms from this process (``ru_maxrss`` is no use:
    worker processes inherit their parent's high-water mark across exec).
    """
    tiles = sample().items
    rows = []
    for n in (100, 2000):
        folder = tmp / f"png{n}" / "class"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(tiles[i % len(tiles)]).save(folder / f"{i:05d}.png")
        client = start(2)
        processes = [psutil.Process()] + [psutil.Process(pid) for pid in
                                          client.run(os.getpid).values()]
        before = [p.memory_info().rss for p in processes]
        peak = list(before)
        done = threading.Event()

        def sample_rss(peak=peak, done=done, processes=processes):
            while not done.wait(0.05):
                for i, process in enumerate(processes):
                    peak[i] = max(peak[i], process.memory_info().rss)

        watcher = threading.Thread(target=sample_rss)
        watcher.start()
        dataset = image_folder(folder.parent, name=f"png{n}", sizing=Sizing(64, "none"))
        flow(client, dataset, tmp / f"mem{n}.zarr", CSCOptions(max_iter=5), read_back=False)
        done.set()
        watcher.join()
        stop(client)
        rows.append({"n": n, "worker_peak_mb": max(peak[1:]) / 2**20,
                     "worker_start_mb": max(before[1:]) / 2**20,
                     "client_growth_mb": (peak[0] - before[0]) / 2**20})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def profile(size: int, image: np.ndarray, basis: np.ndarray, repeats: int) -> dict:
    """Section 4: milliseconds per part of one ADMM iteration, one image, one thread."""
    torch.set_num_threads(1)
    spectrum = torch_solver.dictionary_spectrum(basis, (size, size))
    high = torch_solver.split_low_high(torch.from_numpy(image).permute(2, 0, 1)[None])[1]
    state = torch_solver._start(high, np.arange(1), spectrum, np.float32(0.2))
    for _ in range(10):  # away from the zero start
        torch_solver._iterate(state, spectrum, np.float32(0.2), np.float32(3.4),
                         torch_solver.CONVBPDN_AUTORHO, False)
    y, u = state.y, state.u
    rho = torch_solver._per_image(state.rho, y)
    b = torch.fft.rfft2(y)
    x = torch.fft.irfft2(b, s=(size, size))
    threshold = torch_solver._per_image(0.2 / state.rho, y)
    parts = {
        "forward FFT (M maps)": lambda: torch.fft.rfft2(torch.sub(y, u).mul_(rho)),
        "X-step solve (Woodbury)": lambda: torch_solver._solve_x(b.clone(), rho, spectrum),
        "inverse FFT (M maps)": lambda: torch.fft.irfft2(b, s=(size, size)),
        "relaxation + thresholding": lambda: torch.maximum(
            torch.add(u, x, alpha=1.8).add_(y, alpha=-0.8), -threshold).minimum(threshold),
        "residuals (5 norms)": lambda: torch.stack(
            [torch_solver._norm(a) for a in (x, y, u, x - y, y - u)]).numpy(),
        "whole iteration": lambda: torch_solver._iterate(state, spectrum, np.float32(0.2),
                                                    np.float32(3.4)),
    }
    out = {}
    with torch.inference_mode():
        for name, part in parts.items():
            part()
            started = time.perf_counter()
            for _ in range(repeats):
                part()
            out[name] = (time.perf_counter() - started) / repeats * 1e3
    return out


def io_costs(tmp) -> dict:
    """Per-image milliseconds: reading a 64x64 PNG and writing one store chunk."""
    tile = sample().items[0]
    path = tmp / "one.png"
    Image.fromarray(tile).save(path)
    store = tmp / "io.zarr"
    open_store(store, StoreLayout(names=[str(i) for i in range(200)], image_shape=(64, 64, 3),
                                  dtype="uint8", settings={}, images_per_shard=1))
    started = time.perf_counter()
    for _ in range(200):
        load_item(path, size=64, fit="none")
    read_ms = (time.perf_counter() - started) / 200 * 1e3
    image = tile.astype(np.float32) / 255
    started = time.perf_counter()
    for i in range(200):
        write_image(store, i, image, 10, 0)
    write_ms = (time.perf_counter() - started) / 200 * 1e3
    return {"read_png_ms": read_ms, "write_chunk_ms": write_ms}


def solo_seconds_per_image(images, basis) -> float:
    """The batched solver alone, this process, one thread: seconds per image."""
    torch.set_num_threads(1)
    stack = np.stack([i.astype(np.float32) / 255 for i in images])
    torch_solver.reconstruct_batch(stack[:1], basis)
    started = time.perf_counter()
    torch_solver.reconstruct_batch(stack, basis, batch_size=1)
    return (time.perf_counter() - started) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n64", type=int, default=64)
    parser.add_argument("--n224", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE / "results_reconstruct.json")
    parser.add_argument("--plot", type=Path, default=HERE / "throughput.png")
    args = parser.parse_args()
    basis = load_basis(DEFAULT_BASIS)
    small, large = images_64(args.n64), images_224(args.n224)
    results = {"machine": machine()}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        results["throughput"] = [throughput(64, small, basis, tmp),
                                 throughput(224, large, basis, tmp)]
        results["sweep"] = sweep(small, tmp)
        results["memory"] = memory(tmp)
        results["io"] = io_costs(tmp)
    results["profile"] = {
        "64": profile(64, small[0].astype(np.float32) / 255, basis, 200),
        "224": profile(224, large[0].astype(np.float32) / 255, basis, 20),
    }
    results["solo_s_per_image_64"] = solo_seconds_per_image(small, basis)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    plot(results["sweep"], args.plot)
    print(json.dumps(results, indent=1))


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": psutil.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "sporco": sporco.__version__, "dask": dask.__version__, "zarr": zarr.__version__,
            "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
            "worker_malloc": WORKER_MALLOC, "solver_threads_plugin": SolverThreads.name}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for workers, threads in sorted({(r["workers"], r["threads"]) for r in rows}):
        mine = [r for r in rows if (r["workers"], r["threads"]) == (workers, threads)]
        label = (f"{workers} worker{'s' if workers > 1 else ''} x "
                 f"{threads} thread{'s' if threads > 1 else ''}")
        axes.plot([r["batch_size"] for r in mine], [r["ips"] for r in mine], "o-", label=label)
    axes.set(xscale="log", xlabel="solver batch size (images)", ylabel="images / s (64x64)",
             title="Reconstruct flow throughput, 2-core machine")
    axes.set_xticks([1, 2, 4, 8, 16], labels=["1", "2", "4", "8", "16"])
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()

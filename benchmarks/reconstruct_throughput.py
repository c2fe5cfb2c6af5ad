"""Throughput of the reconstruct flow against the reference per-image loop.

All variants run in one run of this script, on the same images and settings,
so the ratios are robust to a shared, noisy machine:

- reference: sporco ConvBPDN one image at a time in this process, exactly as
  the original project's loop (Tikhonov split, ConvBPDN with its options,
  sporco's default FFT settings: pyfftw, all cores, FFTW_MEASURE);
- pipeline: :func:`flows.reconstruct.reconstruct_dataset` on the LocalCluster
  that :func:`pipeline.runtime.connect` starts (2 single-threaded worker
  processes, one FFT thread each, tuned malloc), writing a real Zarr store;
- pipeline, sporco solver: the same with ``csc.solver: sporco`` (sporco's own
  X-step solve), which separates the gain of 2 workers from the solver's;
- pipeline, sporco FFT defaults: as the previous, without ``SolverThreads``, so
  each worker keeps pyfftw's threads = cores and FFTW_MEASURE planning;
- one solve per process under three malloc settings (no malloc variable,
  Dask's MALLOC_TRIM_THRESHOLD_=65536, ``runtime.WORKER_MALLOC``), each in a
  fresh subprocess since glibc reads them at start.

Only one LocalCluster exists at a time, and none while the reference runs.

Usage::

    python benchmarks/reconstruct_throughput.py [--n64 24] [--n224 6] [--out results.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import sporco
import zarr
from distributed import Client, LocalCluster
from sporco import signal
from sporco.admm import cbpdn

from flows.reconstruct import reconstruct_dataset
from pipeline.basis import DEFAULT_BASIS, load_basis, open_bases
from pipeline.csc import CSCOptions
from pipeline.datasets import Dataset, _sample_photographs, fit_image, sample, to_float_rgb
from pipeline.runtime import WORKER_MALLOC, connect
from pipeline.store import read_images


def images_64(n: int) -> list[np.ndarray]:
    data = sample()
    step = len(data) // n
    return [data.items[i * step] for i in range(n)]


def images_224(n: int) -> list[np.ndarray]:
    """Centre crops of the sample photographs at 224x224 (uint8)."""
    photos = list(_sample_photographs().values())
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


VARIANTS = (("pipeline", "woodbury", True), ("sporco_solver", "sporco", True),
            ("fft_defaults", "sporco", False))


def pipeline_run(client: Client, images, basis_path: Path, size: int, store: Path,
                 options: CSCOptions):
    dataset = Dataset(f"bench{size}", [f"{i:04d}" for i in range(len(images))], list(images),
                      image_size=size, fit="none")
    started = time.perf_counter()
    reconstruct_dataset(client, dataset, bases=open_bases(basis_path), options=options,
                        store_path=store, progress=False)
    seconds = time.perf_counter() - started
    return seconds, read_images(zarr.open_group(store, mode="r"))


def start(*, solver_threads: bool) -> Client:
    """A 2-worker LocalCluster as :func:`pipeline.runtime.connect` starts it, or without
    :class:`~pipeline.runtime.SolverThreads` (sporco's FFT defaults on each worker)."""
    if solver_threads:
        return connect(n_workers=2, dashboard_address="127.0.0.1:0")
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **WORKER_MALLOC}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
    return Client(cluster)


def stop(client: Client) -> None:
    cluster = client.cluster
    client.close()
    cluster.close()


MALLOC_SETTINGS = {
    "unset": {},
    "dask": {"MALLOC_TRIM_THRESHOLD_": "65536"},
    "pipeline": {k: str(v) for k, v in WORKER_MALLOC.items()},
}

ONE_SOLVE = """
import sys, time, numpy as np
sys.path.insert(0, {here!r})
from reconstruct_throughput import images_64, images_224
from pipeline.basis import load_basis
from pipeline.csc import configure_fft, reconstruct_image
configure_fft(1)
image = (images_64(1) if {size} == 64 else images_224(1))[0].astype(np.float32) / 255
basis = load_basis({basis!r})
reconstruct_image(image, basis)
started = time.perf_counter()
for _ in range({repeats}):
    reconstruct_image(image, basis)
print((time.perf_counter() - started) / {repeats})
"""


def one_solve_seconds(size: int, env: dict, basis: Path) -> float:
    """Seconds per solve of one image, in a fresh process with ``env``'s malloc settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    code = ONE_SOLVE.format(here=str(Path(__file__).parent), size=size, basis=str(basis),
                            repeats=3 if size == 64 else 1)
    out = subprocess.run([sys.executable, "-c", code], env={**environ, **env}, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def psnr(a, b) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n64", type=int, default=24)
    parser.add_argument("--n224", type=int, default=6)
    parser.add_argument("--basis", type=Path, default=DEFAULT_BASIS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    basis = load_basis(args.basis)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, images in ((64, images_64(args.n64)), (224, images_224(args.n224))):
            ref_s, ref = reference_loop(images, basis)
            row = {"size": size, "n": len(images), "ref_ips": len(images) / ref_s}
            for name, solver, solver_threads in VARIANTS:
                client = start(solver_threads=solver_threads)
                seconds, result = pipeline_run(client, images, args.basis, size,
                                               Path(tmp) / f"{name}{size}",
                                               CSCOptions(solver=solver))
                stop(client)
                row[name] = (len(images) / seconds, ref_s / seconds)
                if name == "pipeline":
                    pipe = result
            originals = np.stack([i.astype(np.float32) / 255 for i in images])
            row["psnr_ref"] = np.mean([psnr(o, r) for o, r in zip(originals, ref, strict=True)])
            row["psnr_pipe"] = np.mean([psnr(o, p) for o, p in zip(originals, pipe, strict=True)])
            row["agree_min"] = min(psnr(p, r) for p, r in zip(pipe, ref, strict=True))
            row["malloc"] = {name: one_solve_seconds(size, env, args.basis)
                             for name, env in MALLOC_SETTINGS.items()}
            rows.append(row)
            print(row, flush=True)
    report = render(rows, args)
    print(report)
    if args.out:
        args.out.write_text(report)


def render(rows, args) -> str:
    lines = [
        f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores; "
        f"Python {platform.python_version()}, sporco {sporco.__version__}, "
        f"zarr {zarr.__version__}; basis {args.basis.name}",
        "",
        "| size | images | reference loop img/s | pipeline img/s (ratio) | pipeline, sporco "
        "solver img/s (ratio) | pipeline, sporco solver and FFT defaults img/s (ratio) | "
        "PSNR(image, rec) reference / pipeline | min agreement PSNR | one solve, s: no malloc "
        "setting / Dask's / pipeline's |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[k][0]:.3f} ({r[k][1]:.2f}x)" for k, _, _ in VARIANTS)
        malloc = " / ".join(f"{r['malloc'][k]:.2f}" for k in ("unset", "dask", "pipeline"))
        lines.append(
            f"| {r['size']}x{r['size']} | {r['n']} | {r['ref_ips']:.3f} | {cells} | "
            f"{r['psnr_ref']:.2f} / {r['psnr_pipe']:.2f} dB | {r['agree_min']:.1f} dB | "
            f"{malloc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""The batched solver and the online learner on a GPU, against one CPU thread of the same machine.

Measures, in one run on a machine with a CUDA GPU:

* reconstruction throughput (images/s) of :func:`pipeline.batched.reconstruct_and_count`
  with the shipped basis (64 filters of 8x8) on 64x64 photo tiles and on
  224x224 crops of the bundled photographs: one CPU thread (batch of 1, the
  CPU's fastest layout) against the GPU at several batch sizes;
* agreement of the GPU's reconstructions and iteration counts with the
  CPU's on the same images (the code is the same; float32 rounding differs);
* seconds per step of the online dictionary learner
  (:class:`pipeline.online_cdl.OnlineLearner`, mini-batches of 16 tiles, 64
  filters) on one CPU thread and on the GPU, and the objectives of both.

Usage (results as JSON on stdout and in ``--out``)::

    python benchmarks/gpu.py [--out results_gpu.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pipeline import batched
from pipeline.basis import DEFAULT_BASIS, load_basis
from pipeline.csc import CDLOptions, CSCOptions
from pipeline.datasets import bundled_photographs, fit_image, photo_tiles, to_float_rgb
from pipeline.online_cdl import OnlineLearner, initial_filters


def tiles(count: int) -> np.ndarray:
    dataset = photo_tiles(count, tile=64, seed=3)
    return np.stack([dataset.load(i) for i in range(count)])


def crops(count: int) -> np.ndarray:
    """224x224 centre crops of the photographs, and of their mirror images, repeated."""
    photos = [fit_image(to_float_rgb(p), 224) for p in bundled_photographs().values()]
    photos += [p[:, ::-1] for p in photos]
    return np.stack([photos[i % len(photos)] for i in range(count)]).astype(np.float32)


def images_per_second(images, basis, *, device, batch_size) -> tuple[float, np.ndarray,
                                                                     np.ndarray]:
    started = time.perf_counter()
    coded = batched.reconstruct_and_count(images, basis, CSCOptions(), batch_size=batch_size,
                                          device=device)
    out, n_iter = coded.reconstructions, coded.n_iter
    if device == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - started), out, n_iter


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def throughput(name: str, images: np.ndarray, cpu_count: int, batches: list,
               basis: np.ndarray) -> dict:
    cpu_rate, cpu_out, cpu_iter = images_per_second(images[:cpu_count], basis, device="cpu",
                                                    batch_size=1)
    images_per_second(images[:8], basis, device="cuda", batch_size=8)  # warm-up
    row = {"images": name, "cpu_one_thread_images_per_s": round(cpu_rate, 2), "gpu": []}
    for batch in batches:
        rate, out, n_iter = images_per_second(images, basis, device="cuda", batch_size=batch)
        row["gpu"].append({"batch_size": batch or batched.auto_batch_size(
            images.shape[1:3], basis.shape[-1], torch.device("cuda")),
            "n_images": len(images), "images_per_s": round(rate, 1),
            "vs_cpu_thread": round(rate / cpu_rate, 1)})
        if batch == batches[-1]:
            row["agreement"] = {
                "psnr_gpu_vs_cpu_db": round(psnr(out[:cpu_count], cpu_out), 1),
                "max_abs_difference": float(np.abs(out[:cpu_count] - cpu_out).max()),
                "n_iter_max_difference": int(np.abs(n_iter[:cpu_count] - cpu_iter).max()),
                "n_iter_mean": float(cpu_iter.mean())}
    print(json.dumps(row), flush=True)
    return row


def learner_steps(images: np.ndarray, device: str, steps: int) -> tuple[float, list]:
    options = CDLOptions()
    learner = OnlineLearner(initial_filters(options, seed=0), options, device=device)
    learner.step(images[:16])  # warm-up (and the first step of the run)
    started, objectives = time.perf_counter(), []
    for step in range(1, steps + 1):
        objectives.append(learner.step(images[16 * step:16 * (step + 1)]))
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps, objectives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results_gpu.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the CPU baseline: one worker's thread
    basis = load_basis(DEFAULT_BASIS)
    small = tiles(2048)
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "basis": "photos-k1, 64 filters of 8x8, lambda 0.2",
              "reconstruct": [throughput("64x64", small, 32, [16, 128, 512, None], basis),
                              throughput("224x224", crops(256), 4, [8, 32, None], basis)]}
    cpu_step, cpu_objectives = learner_steps(small, "cpu", 5)
    gpu_step, gpu_objectives = learner_steps(small, "cuda", 5)
    result["online_learner"] = {
        "minibatch": 16, "filters": 64, "cpu_one_thread_s_per_step": round(cpu_step, 3),
        "gpu_s_per_step": round(gpu_step, 4), "gpu_vs_cpu_thread": round(cpu_step / gpu_step, 1),
        "objective_relative_difference": float(np.max(np.abs(
            np.array(gpu_objectives) - cpu_objectives) / np.abs(cpu_objectives)))}
    print(json.dumps(result["online_learner"]), flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

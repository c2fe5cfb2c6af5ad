"""Dictionary-learning throughput: the PyTorch online learner against sporco's, same run.

Learns from the same 64x64 photo tiles, mini-batches and settings (64 filters
of 8x8, lambda 0.2, mini-batches of 16, the same ADMM iterations per
mini-batch) with:

- sporco's ``OnlineConvBPDNDictLearn`` in this process, with sporco's own
  FFT settings (as many pyfftw threads as cores);
- ``pipeline.online_cdl.OnlineLearner`` in this process, one PyTorch thread,
  with the solver's fused CPU loops (the default) and with its PyTorch
  operations (``pipeline.fused.AVAILABLE`` switched off in this process);
- the learner on a LocalCluster of 1 worker and of 2 workers (one thread
  each), one learning task per worker as the learn flow runs one per cluster.

and reports images learned from per second and the ratios.  Usage::

    python benchmarks/learn_throughput.py [--steps 6] [--coding-iterations 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import sporco
import torch
from sporco.dictlrn import onlinecdl

from pipeline import fused
from pipeline.online_cdl import OnlineLearner, initial_filters, minibatches
from pipeline.options import CDLOptions
from pipeline.photos import photo_tiles
from pipeline.runtime import connect, disconnect
from pipeline.sporco_solver import split_low_high

HERE = Path(__file__).resolve().parent


def tiles(count: int) -> np.ndarray:
    dataset = photo_tiles(count, seed=7)
    return np.stack([dataset.load(i) for i in range(count)])


def ours(images: np.ndarray, options: CDLOptions, steps: int, seed: int = 0) -> float:
    """Learn ``steps`` mini-batches; return the seconds it took (one PyTorch thread)."""
    torch.set_num_threads(1)
    learner = OnlineLearner(initial_filters(options, seed), options)
    started = time.perf_counter()
    for rows in minibatches(len(images), options.batch_size, steps, seed):
        learner.step(images[rows])
    return time.perf_counter() - started


def theirs(images: np.ndarray, options: CDLOptions, steps: int) -> float:
    """sporco's online learner on the same mini-batches; its default FFT threads."""
    opt = onlinecdl.OnlineConvBPDNDictLearn.Options({
        "Verbose": False, "ZeroMean": True, "eta_a": options.eta_a, "eta_b": options.eta_b,
        "CBPDN": {"MaxMainIter": options.coding_max_iter,
                  "RelStopTol": options.coding_rel_stop_tol}})
    learner = onlinecdl.OnlineConvBPDNDictLearn(initial_filters(options), options.lmbda, opt)
    started = time.perf_counter()
    for rows in minibatches(len(images), options.batch_size, steps, 0):
        high = np.stack([split_low_high(image)[1] for image in images[rows]], axis=-1)
        learner.solve(high)
    return time.perf_counter() - started


def on_workers(images: np.ndarray, options: CDLOptions, steps: int, workers: int) -> float:
    """One learner per worker, all at once; return the wall time of the slowest."""
    client = connect(n_workers=workers, dashboard_address="127.0.0.1:0")
    try:
        client.submit(ours, images[:options.batch_size], options, 1, pure=False).result()
        scattered = client.scatter(images, broadcast=True)
        started = time.perf_counter()
        tasks = [client.submit(ours, scattered, options, steps, seed, pure=False)
                 for seed in range(workers)]
        client.gather(tasks)
        return time.perf_counter() - started
    finally:
        disconnect(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--coding-iterations", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "results_learn_throughput.json")
    args = parser.parse_args()
    options = CDLOptions(batch_size=16, coding_max_iter=args.coding_iterations)
    images = tiles(256)
    ours(images, options, 1)  # warm-up: imports, FFT plans
    per_step = options.batch_size * args.steps
    fused.AVAILABLE = False  # the solver's PyTorch path, in this process only
    pytorch_path = ours(images, options, args.steps)
    fused.AVAILABLE = True
    seconds = {"sporco (this process)": theirs(images, options, args.steps),
               "ours, PyTorch path (this process, 1 thread)": pytorch_path,
               "ours (this process, 1 thread)": ours(images, options, args.steps),
               "ours, 1 worker": on_workers(images, options, args.steps, 1),
               "ours, 2 workers": on_workers(images, options, args.steps, 2)}
    images_learned = {"ours, 2 workers": 2 * per_step}
    rate = {k: images_learned.get(k, per_step) / v for k, v in seconds.items()}
    base = rate["sporco (this process)"]
    for name, value in rate.items():
        print(f"{name:32s} {value:7.2f} images/s  {value / base:5.2f}x sporco", flush=True)
    record = {"settings": {"steps": args.steps, "batch_size": 16, "coding_max_iter":
                           args.coding_iterations, "n_filters": 64, "filter_size": 8,
                           "lmbda": 0.2, "image": "64x64 photo tiles"},
              "images_per_second": rate, "ratio_to_sporco": {k: v / base for k, v in rate.items()},
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "sporco": sporco.__version__}}
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

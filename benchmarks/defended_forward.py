"""Throughput of the defended forward pass that every adaptive-attack step pays.

An adaptive attack runs ``classifier(CSCDefense(x))`` once per iterate, so
the evaluation's cost is set by how many images per second the CSC
reconstruction passes.  Measures :class:`evaluation.defense.CSCDefense` (the
batched PyTorch solver, one thread, as on a worker) on the scenes task's
32x32 test patches, with the one-basis and the 10-cluster sets, for several
solver batch sizes, clean and under a PGD perturbation (an attacked image can
take more ADMM iterations), on the solver's two CPU paths (the fused numba
loops, the default, and the PyTorch operations, by switching
``pipeline.fused.AVAILABLE`` off in this process), and writes
``results_defended_forward.json``.
Usage::

    python benchmarks/defended_forward.py [--images 100]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.classifier import to_tensor
from evaluation.defense import CSCDefense
from evaluation.tasks import scenes
from pipeline import fused
from pipeline.basis import DEFAULT_BASIS, STRATIFIED_SET, open_bases

HERE = Path(__file__).resolve().parent


def images_per_second(defense: CSCDefense, x: torch.Tensor, repeats: int = 2) -> float:
    """Best of ``repeats`` passes over ``x``: images per second."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        defense(x)
        best = min(best, time.perf_counter() - started)
    return len(x) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as on a worker
    task = scenes(train_per_class=1, test_per_class=max(1, args.images // 10))
    clean = to_tensor(task.test_images[:args.images])
    noise = torch.from_numpy(np.random.default_rng(0).choice([-8 / 255, 8 / 255],
                                                             size=clean.shape))
    attacked = torch.clamp(clean + noise.float(), 0, 1)
    rows = []
    for name, path in (("one basis", DEFAULT_BASIS), ("10 clusters", STRATIFIED_SET)):
        bases = open_bases(path)
        for batch_size in (1, 8, 32):
            defense = CSCDefense(bases, batch_size=batch_size, device="cpu")
            for path, numba_loops in (("PyTorch", False), ("fused", True)):
                fused.AVAILABLE = numba_loops  # the solver's default path in this process
                defense(clean[:2])  # warm-up: FFT plans, the spectrum cache, numba's cache
                for kind, x in (("clean", clean), ("signed noise 8/255", attacked)):
                    rate = images_per_second(defense, x)
                    rows.append({"bases": name, "batch_size": batch_size, "path": path,
                                 "images": kind, "images_per_second": round(rate, 1)})
                    print(f"{name:12s} batch {batch_size:3d} {path:8s} {kind:20s} "
                          f"{rate:6.1f} images/s", flush=True)
    result = {"machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": 1, "image_size": 32,
              "images": len(clean), "rows": rows}
    (HERE / "results_defended_forward.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

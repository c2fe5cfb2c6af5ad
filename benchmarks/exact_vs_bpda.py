"""Exact-gradient PGD against BPDA-PGD at the same iterations, on one CSC row.

The evaluation's defaults give exact-PGD 20 steps x 1 restart and BPDA-PGD
50 x 2, since an exact step costs several BPDA steps.  This runs both at
``--steps`` x ``--restarts`` on the same adaptive images of a task (the
evaluation's seeded draw of ``--images``), through the CSC per-cluster
defense with the evaluation's classifier, in 25-image chunks on two
processes, and writes each image's robustness and the seconds spent.

    python benchmarks/exact_vs_bpda.py digits --eps 0.1
    python benchmarks/exact_vs_bpda.py textures --eps 0.031372549
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

CHUNK = 25


def attack_chunk(task_name: str, kind: str, start: int, eps: float, steps: int,
                 restarts: int, images: int, basis: str) -> tuple[str, int, list[bool], float]:
    import torch

    from evaluation.adaptive import NEVER, Budget, bpda_pgd, exact_pgd
    from evaluation.classifier import train_classifier
    from evaluation.defense import CSCDefense
    from pipeline.basis import open_bases, resolve_basis_path
    from pipeline.config import load_config

    torch.set_num_threads(1)
    settings = load_config(task_name).evaluate
    task = _task(task_name, settings)
    model = train_classifier(task.train_images, task.train_labels, n_classes=len(task.classes),
                             seed=settings.seed, epochs=settings.epochs)
    chosen = np.sort(np.random.default_rng(settings.seed).permutation(
        len(task.test_images))[:images])[start:start + CHUNK]  # the evaluation's draw
    x, y = task.test_images[chosen], task.test_labels[chosen]
    defense = CSCDefense(open_bases(resolve_basis_path(basis)), bpda=True, device="cpu")
    clock = time.perf_counter()
    if kind == "BPDA-PGD":
        fooled_at = bpda_pgd(model, defense, x, y, eps=eps, steps=steps, restarts=restarts,
                             seed=settings.seed + start)
    else:
        fooled_at, _ = exact_pgd(model, defense, x, y, eps=eps, seed=settings.seed + start,
                                 budget=Budget(steps, restarts, 0, 0))
    return kind, start, (fooled_at == NEVER).tolist(), time.perf_counter() - clock


def _task(name, settings):
    from evaluation.tasks import load_task

    return load_task(name, test_images=settings.test_images,
                     train_images=settings.train_images, seed=settings.seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("textures", "digits", "scenes"))
    parser.add_argument("--eps", type=float, required=True)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--basis", default="photos-k10")
    parser.add_argument("--out", default="benchmarks/results_exact_vs_bpda_{task}.json")
    args = parser.parse_args()
    jobs = [(args.task, kind, start, args.eps, args.steps, args.restarts, args.images,
             args.basis) for kind in ("exact-PGD", "BPDA-PGD")
            for start in range(0, args.images, CHUNK)]
    robust, seconds = {}, {}
    with ProcessPoolExecutor(2) as pool:
        for kind, start, standing, spent in pool.map(attack_chunk, *zip(*jobs, strict=True)):
            robust.setdefault(kind, {})[start] = standing
            seconds[kind] = seconds.get(kind, 0.0) + spent
    result = {"task": args.task, "eps": args.eps, "steps": args.steps,
              "restarts": args.restarts, "basis": args.basis, "seconds": seconds}
    for kind, chunks in robust.items():
        standing = sum((chunks[start] for start in sorted(chunks)), [])
        result[kind] = {"accuracy": float(np.mean(standing)), "n": len(standing),
                        "robust": standing}
        print(f"{kind}: {np.mean(standing):.3f} of {len(standing)} images robust "
              f"({seconds[kind]:.0f} s of attack)")
    Path(args.out.format(task=args.task)).write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

"""The online learner's step size, chosen by the validation objective.

One dictionary (64 filters of 8x8, lambda 0.2, mini-batches of 16 tiles) is
learned on the training tiles of the ``photos`` data set (the scenes that
``python -m pipeline.learn`` holds out are left out) with each step-size
setting, for the same number of steps and from the same start, and scored
every ``--every`` steps on one fixed validation set of training-scene tiles
that no learner sees.  The settings are ``gradient`` (the mini-batch's
gradient summed over its images, sporco's rule, or their mean) with
``eta_a / (t + eta_b)``; ``sum`` with ``eta_a`` 10 equals ``mean`` with
``eta_a`` 160, so the six settings span a factor of 256 in step size.
Each setting also shows where the stopping rule (0.5 % over the last fifth
of the steps) would have stopped it.  Two settings run at a time, one per
core.

Usage::

    python benchmarks/learn_step_size.py            # writes results_learn_step_size.json
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SETTINGS = {"sum, eta_a 10 (sporco)": ("sum", 10.0), "mean, eta_a 40": ("mean", 40.0),
            "mean, eta_a 10": ("mean", 10.0), "mean, eta_a 2.5": ("mean", 2.5),
            "sum, eta_a 20": ("sum", 20.0), "sum, eta_a 40": ("sum", 40.0)}


def data(validation: int):
    from pipeline.config import load_config
    from pipeline.datasets import Images
    from pipeline.sources import open_dataset
    from pipeline.split import split_images

    config = load_config("photos")
    dataset = open_dataset(config.dataset, config.name)
    split = split_images(len(dataset), config.learn, dataset.sources)
    rng = np.random.default_rng(1)
    picked = rng.permutation(split.training)
    held, learn = np.sort(picked[:validation]), np.sort(picked[validation:])
    images = Images([dataset.items[i] for i in learn], size=64, fit="none")
    return images, images.__class__([dataset.items[i] for i in held], size=64, fit="none")


def run(name: str, steps: int, every: int, validation: int) -> dict:
    import torch

    from pipeline.online_cdl import learn_online
    from pipeline.options import CDLOptions

    torch.set_num_threads(1)
    gradient, eta_a = SETTINGS[name]
    images, held = data(validation)
    options = replace(CDLOptions(), gradient=gradient, eta_a=eta_a, max_iter=steps,
                      validate_every=every, stop_tol=1e-12)  # never stops early: whole curves
    started = time.perf_counter()
    learned = learn_online(images, held[np.arange(len(held))], options, seed=0)
    rule = stopping_step(learned.curve, replace(options, stop_tol=0.005))
    curve = {k: v.tolist() for k, v in learned.curve.items()}
    return {"setting": name, "gradient": gradient, "eta_a": eta_a, "eta_b": options.eta_b,
            "seconds": time.perf_counter() - started, "curve": curve,
            "rule_stops_at": rule, "final_objective": curve["objective"][-1],
            "final_psnr": curve["psnr"][-1], "final_density": curve["density"][-1]}


def stopping_step(curve: dict, options) -> int | None:
    """Where the stopping rule would have stopped the curve (None: not within it)."""
    from pipeline.online_cdl import has_converged

    for i in range(1, len(curve["step"])):
        if has_converged(list(curve["step"][:i + 1]), list(curve["objective"][:i + 1]), options):
            return int(curve["step"][i])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--validation", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results_learn_step_size.json")
    args = parser.parse_args()
    done = json.loads(args.out.read_text())["results"] if args.out.is_file() else []
    todo = [name for name in SETTINGS if name not in {r["setting"] for r in done}]
    with ProcessPoolExecutor(2) as pool:  # settings already measured are kept
        results = done + list(pool.map(run, todo, [args.steps] * len(todo),
                                       [args.every] * len(todo), [args.validation] * len(todo)))
    for r in results:
        print(f"{r['setting']:24s} validation objective {r['final_objective']:.3f} "
              f"PSNR {r['final_psnr']:.3f} dB density {r['final_density']:.5f} "
              f"(rule stops at {r['rule_stops_at']}; {r['seconds']:.0f} s)", flush=True)
    args.out.write_text(json.dumps({"steps": args.steps, "every": args.every,
                                    "validation_images": args.validation,
                                    "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()

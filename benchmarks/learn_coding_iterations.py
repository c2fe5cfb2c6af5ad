"""How many ADMM iterations a mini-batch's coding needs: 30 against sporco's 100.

The online learner (``pipeline.online_cdl``) with 64 filters of 8x8, lambda 0.2
and mini-batches of 16, learned on 300 of the embedded sample's 350 tiles
from the same start, with ``coding_max_iter`` 30 and 100; after every
``--every`` steps, the held-out PSNR (the other 50 tiles, reconstructed by
the pipeline's solver with the learned basis) and the images learned from
per second (learning time only).  Usage::

    python benchmarks/learn_coding_iterations.py [--steps 24] [--every 6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pipeline.online_cdl import OnlineLearner, initial_filters, minibatches
from pipeline.options import CDLOptions
from pipeline.photos import sample
from pipeline.quality import coding_quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--every", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = sample()
    images = np.stack([dataset.load(i) for i in range(len(dataset))])
    held = np.arange(0, len(images), 7)
    train = np.setdiff1d(np.arange(len(images)), held)
    print("| ADMM iterations per mini-batch | steps | held-out PSNR (dB) | images/s |")
    print("|---|---|---|---|")
    for iterations in (30, 100):
        options = CDLOptions(batch_size=16, coding_max_iter=iterations)
        learner = OnlineLearner(initial_filters(options), options)
        learning = 0.0
        for step, rows in enumerate(minibatches(len(train), 16, args.steps), start=1):
            started = time.perf_counter()
            learner.step(images[train[rows]])
            learning += time.perf_counter() - started
            if step % args.every == 0:
                psnr, _ = coding_quality(images[held], learner.basis)
                print(f"| {iterations} | {step} | {psnr.mean():.3f} | "
                      f"{16 * step / learning:.2f} |", flush=True)


if __name__ == "__main__":
    main()

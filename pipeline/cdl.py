"""One convolutional dictionary, learned by the method its options name.

``online`` (the default): :func:`pipeline.online_cdl.learn_online`, a
mini-batch at a time until the dictionary has converged on its fixed
validation images.  ``batch``: sporco's batch learner
(:func:`pipeline.dictionary.learn_dictionary`) on all the images at once,
for its iterations, then scored once on the validation images, so both
methods return the same :class:`pipeline.online_cdl.Learned` record.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.dictionary import learn_dictionary
from pipeline.online_cdl import Learned, learn_online
from pipeline.options import CDLOptions, CSCOptions
from pipeline.quality import coding_quality


def learn_one(images, validation: np.ndarray, options: CDLOptions, csc: CSCOptions, *,
              seed: int, initial: np.ndarray | None = None, first_step: int = 0,
              frozen: np.ndarray | None = None, device: str = "cpu",
              on_steps: Callable[[int], None] = lambda n: None) -> Learned:
    """A dictionary learned from ``images`` and judged on ``validation``.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray or :class:`pipeline.datasets.Images`
        The images to learn from, float32 in [0, 1].
    validation : (V, H, W, 3) ndarray
        The fixed images its convergence is judged on.
    options, csc : CDLOptions, CSCOptions
        The learner's settings; the solver's for scoring.
    seed, initial, first_step, frozen
        The random start (or the ``initial`` dictionary, its place in the
        step-size schedule and its ``frozen`` filters: online only).
    device : str
        Where the solver runs.
    on_steps : callable
        Called with the number of steps just taken (progress).
    """
    if options.method == "online":
        return learn_online(images, validation, options, csc=csc, seed=seed, initial=initial,
                            first_step=first_step, frozen=frozen, device=device,
                            on_steps=on_steps)
    basis, objective = learn_dictionary(images[np.arange(len(images))], options, seed=seed,
                                        on_iteration=lambda: on_steps(1))
    quality = coding_quality(validation, basis, csc, device=device)
    return Learned(basis=basis, objectives=objective, best_step=len(objective),
                   curve={"step": np.array([len(objective)]),
                          "objective": np.array([quality.objective.mean()]),
                          "psnr": np.array([quality.psnr.mean()]),
                          "density": np.array([quality.density.mean()])},
                   usage=quality.usage.mean(axis=0), stopped="step cap")

"""Convolutional dictionary learning on the high-pass parts of images (sporco).

The reference published its bases but not the code that learned them; they
are learned here with sporco's batch ``ConvBPDNDictLearn`` (the objective and
constraints are in :class:`pipeline.options.CDLOptions`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sporco.dictlrn import cbpdndl

from pipeline.basis import project_filters
from pipeline.options import CDLOptions
from pipeline.sporco_solver import split_low_high


def learn_dictionary(
    images: np.ndarray,
    options: CDLOptions = CDLOptions(),
    *,
    seed: int = 0,
    filter_lmbda: float = 5.0,
    pad: int = 16,
    on_iteration: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Learn a joint colour convolutional dictionary on the high-pass parts.

    sporco's ``ConvBPDNDictLearn`` alternates the coding step with a
    constrained update of the filters (``ZeroMean``: every filter is
    zero-mean in each channel; unit norm over its ``P*P*3`` values), from a
    seeded random normal start.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray, float32
        Training images in [0, 1].
    options : CDLOptions
        ``M`` filters of ``P x P``, sparsity weight and iterations.
    seed : int
        Seed of the random initial dictionary.
    filter_lmbda, pad : float, int
        Tikhonov split, as in :func:`pipeline.sporco_solver.split_low_high`.
    on_iteration : callable, optional
        Called after each iteration (e.g. to advance a progress bar).

    Returns
    -------
    basis : (P, P, 3, M) ndarray, float32
        Zero-mean, unit-norm filters.
    objective : (max_iter,) ndarray, float64
        The CBPDN objective after each iteration.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")
    size, count = options.filter_size, options.n_filters
    high = np.stack(
        [split_low_high(im, lmbda=filter_lmbda, pad=pad)[1] for im in images], axis=-1
    )  # sporco's signal layout (H, W, C, K)
    rng = np.random.default_rng(seed)
    initial = rng.standard_normal((size, size, 3, count)).astype(np.float32)
    opt = cbpdndl.ConvBPDNDictLearn.Options(
        {
            "Verbose": False,
            "MaxMainIter": options.max_iter,
            "CBPDN": {"rho": 50.0 * options.lmbda + 0.5, "AutoRho": {"Enabled": True}},
            "CCMOD": {"ZeroMean": True},
            "Callback": None if on_iteration is None else _never_stop(on_iteration),
        },
        dmethod="cns",
    )
    learner = cbpdndl.ConvBPDNDictLearn(initial, high, options.lmbda, opt, dmethod="cns")
    # sporco's dictionary layout is (P, P, C, 1, M); constraints hold to its tolerance only
    basis = project_filters(learner.solve().reshape(size, size, 3, count))
    objective = np.asarray(learner.getitstat().ObjFun, dtype=np.float64)
    return basis, objective


def _never_stop(on_iteration: Callable[[], object]) -> Callable[[object], bool]:
    """Wrap ``on_iteration`` as a sporco callback, which stops learning when it returns True."""

    def callback(_solver) -> bool:
        on_iteration()
        return False

    return callback

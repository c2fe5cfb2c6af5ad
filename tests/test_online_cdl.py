"""The PyTorch online dictionary learner against sporco's OnlineConvBPDNDictLearn, its oracle."""

from __future__ import annotations

import numpy as np
import pytest
import sporco.fft
from sporco.dictlrn import onlinecdl

from pipeline.basis import validate_basis
from pipeline.csc import CDLOptions
from pipeline.datasets import sample
from pipeline.online_cdl import OnlineLearner, initial_filters, minibatches
from pipeline.sporco_solver import configure_fft, split_low_high

LMBDA = 0.2


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """16 crops of 32x32 from sample tiles of every photograph."""
    dataset = sample()
    return np.stack([dataset.load(i)[16:48, 16:48] for i in range(0, 350, 22)])[:16]


def objective(filters: np.ndarray, codes: np.ndarray, high: np.ndarray) -> float:
    """0.5 ||sum_m d_m * x_m - s||^2 + lambda ||x||_1 of sporco's (H, W, 1, K, M) codes and
    (H, W, 3, K) signals, with (P, P, 3, M) filters."""
    shape = high.shape[:2]
    filters_f = sporco.fft.rfftn(filters[:, :, :, None, :], shape, (0, 1))
    synthesis = sporco.fft.irfftn(np.sum(filters_f * sporco.fft.rfftn(codes, shape, (0, 1)),
                                         axis=-1), shape, (0, 1))
    return 0.5 * float(np.sum((synthesis - high) ** 2)) + LMBDA * float(np.abs(codes).sum())


def test_follows_sporcos_online_learner_step_by_step(crops):
    """Same start, same mini-batches, sporco's own settings (100 ADMM iterations per
    mini-batch, its penalty rule): every step's objective within 1 %, and the filters
    after 20 steps within 40 dB (measured: 1e-7 and 116 dB, both in float32)."""
    configure_fft(threads=1)
    options = CDLOptions(n_filters=16, filter_size=8, lmbda=LMBDA, batch_size=4, max_iter=20,
                         coding_max_iter=100, coding_rel_stop_tol=1e-3)
    start = initial_filters(options, seed=0)
    ours = OnlineLearner(start, options)
    theirs = onlinecdl.OnlineConvBPDNDictLearn(
        start, LMBDA, onlinecdl.OnlineConvBPDNDictLearn.Options(
            {"Verbose": False, "ZeroMean": True, "eta_a": 10.0, "eta_b": 5.0}))
    for rows in minibatches(len(crops), 4, 20, seed=0):
        high = np.stack([split_low_high(image)[1] for image in crops[rows]], axis=-1)
        before = theirs.D.squeeze().copy()
        theirs.solve(high)
        expected = objective(before, theirs.Z, high)
        assert ours.step(crops[rows]) == pytest.approx(expected, rel=0.01)
    reference = theirs.D.squeeze()
    agreement = 10 * np.log10(np.sum(reference**2) / np.sum((ours.basis - reference) ** 2))
    assert agreement >= 40.0, agreement
    validate_basis(ours.basis)  # zero-mean, unit norm
    assert ours.steps == 20


def test_objective_falls_with_the_default_settings(crops):
    options = CDLOptions(n_filters=16, filter_size=8, batch_size=8)
    learner = OnlineLearner(initial_filters(options, seed=1), options)
    batches = minibatches(len(crops), 8, 12, seed=1)
    objectives = [learner.step(crops[rows]) for rows in batches]
    assert np.mean(objectives[-4:]) < 0.8 * np.mean(objectives[:2])


@pytest.mark.parametrize(("count", "size"), [(10, 4), (16, 4), (3, 8)])
def test_minibatches_cover_every_image_each_pass_without_repeats(count, size):
    batches = minibatches(count, size, 12, seed=3)
    assert len(batches) == 12
    for rows in batches:
        assert len(rows) == min(size, count) and len(set(rows.tolist())) == len(rows)
    drawn = np.concatenate(batches)
    passes = len(drawn) // count
    counts = np.bincount(drawn, minlength=count)
    assert counts.min() >= passes - 1 and counts.max() <= passes + 1  # evenly, pass by pass
    np.testing.assert_array_equal(np.concatenate(minibatches(count, size, 12, seed=3)), drawn)

"""The PyTorch online dictionary learner against sporco's OnlineConvBPDNDictLearn, its oracle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import sporco.fft
from sporco.dictlrn import onlinecdl

from pipeline.basis import validate_basis
from pipeline.online_cdl import (
    OnlineLearner,
    has_converged,
    initial_filters,
    learn_online,
    minibatches,
)
from pipeline.options import CDLOptions
from pipeline.photos import sample
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


def test_validation_objective_falls_and_the_stopping_rule_stops(crops):
    """8 filters of 6x6 learned on 12 crops, scored every 4 steps on the 4 others: the
    validation objective falls, and learning stops at the first scoring where it changed by
    at most 0.5 % over the last fifth of the steps, far before the cap."""
    options = CDLOptions(n_filters=8, filter_size=6, batch_size=4, max_iter=400,
                         validate_every=4, coding_max_iter=10)
    learned = learn_online(crops[:12], crops[12:], options, seed=0)
    steps, objective = list(learned.curve["step"]), list(learned.curve["objective"])
    assert learned.stopped == "converged" and 20 <= learned.steps < 400
    assert steps[0] == 0 and steps[-1] == learned.steps == len(learned.objectives)
    assert objective[-1] < 0.9 * objective[0]  # a random start codes the crops badly
    assert has_converged(steps, objective, options)
    assert not any(has_converged(steps[:i], objective[:i], options) for i in range(1, len(steps)))
    best = int(np.argmin(objective))
    assert learned.best_step == steps[best]
    assert learned.usage.shape == (8,) and 0 < learned.usage.sum() < 8
    validate_basis(learned.basis)
    assert np.all(np.diff(learned.curve["psnr"][:3]) > 0)  # the first steps learn
    capped = learn_online(crops[:12], crops[12:], replace(options, max_iter=10), seed=0)
    assert capped.stopped == "step cap" and capped.steps == 10
    assert list(capped.curve["step"]) == [0, 4, 8, 10]


def test_the_stopping_rule_is_the_change_over_the_last_fifth():
    options = CDLOptions(validate_every=10, stop_tol=0.005)
    steps = list(range(0, 110, 10))
    flat_late = [100.0, 50, 30, 25, 22, 21, 20.5, 20.3, 20.2, 20.15, 20.1]
    assert not has_converged(steps[:5], flat_late[:5], options)  # before 5 scorings' steps
    assert not has_converged(steps[:7], flat_late[:7], options)  # 60 vs 40: 21 -> 20.5, 2.4 %
    assert has_converged(steps, flat_late, options)  # 100 vs 80: 20.2 -> 20.1, 0.5 %
    rising = flat_late[:-1] + [20.3]  # a rise counts as a change too
    assert has_converged(steps, rising, options)
    assert not has_converged(steps, flat_late[:-1] + [21.0], options)


def test_a_learner_continues_a_schedule_and_keeps_its_frozen_filters(crops):
    options = CDLOptions(n_filters=8, filter_size=6, batch_size=4, coding_max_iter=10)
    start = OnlineLearner(initial_filters(options, seed=2), options).basis
    frozen = np.zeros(8, bool)
    frozen[[1, 5]] = True
    early = OnlineLearner(start, options, frozen=frozen)
    late = OnlineLearner(start, options, step=200, frozen=frozen)
    np.testing.assert_array_equal(late.basis, start)  # a valid start is kept as it is
    early.step(crops[:4])
    late.step(crops[:4])
    np.testing.assert_array_equal(late.basis[..., frozen], start[..., frozen])
    np.testing.assert_array_equal(early.basis[..., frozen], start[..., frozen])
    moved = [np.linalg.norm(learner.basis[..., ~frozen] - start[..., ~frozen])
             for learner in (early, late)]
    assert moved[1] < 0.2 * moved[0]  # eta_a / (200 + eta_b): a fine-tuning step
    assert late.steps == 201

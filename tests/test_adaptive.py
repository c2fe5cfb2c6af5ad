"""The adaptive attacks: their gradient, their scoring, ART's APGD through the defense."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.adaptive import (
    NEVER,
    Budget,
    accuracy_curve,
    adaptive_autoattack,
    attack_through_defense,
    bpda_pgd,
    step_sizes,
)
from evaluation.autoattack import REST, rest_of_autoattack
from evaluation.baselines import BASELINES
from evaluation.checks import (
    adaptive_not_weaker,
    convergence,
    gradient_masking,
    sweep_reaches_zero,
)
from evaluation.classifier import to_tensor, train_classifier
from evaluation.defense import CSCDefense, TransformDefense
from evaluation.tasks import scenes
from pipeline.basis import DEFAULT_BASIS


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """A seeded classifier of the scenes task and 20 of its test patches (two per class)."""
    task = scenes(train_per_class=150, test_per_class=2)
    model = train_classifier(task.train_images, task.train_labels, n_classes=10, seed=0,
                             epochs=8)
    return model.eval(), task.test_images, task.test_labels


def test_step_sizes_fall_from_a_quarter_to_a_fortieth_of_eps():
    sizes = step_sizes(0.04, 10)
    assert sizes[0] == pytest.approx(0.01) and sizes[-1] == pytest.approx(0.001)
    assert np.all(np.diff(sizes) < 0)


def test_bpda_pgd_scores_every_iterate_and_stays_in_the_ball(trained):
    model, images, labels = trained
    defense = TransformDefense(BASELINES["median 3x3"], "median")
    with torch.no_grad():
        clean_right = model(defense(to_tensor(images))).argmax(1).numpy() == labels
    fooled_at = bpda_pgd(model, defense, images, labels, eps=16 / 255, steps=8, restarts=2)
    assert fooled_at.shape == (20,)
    np.testing.assert_array_equal(fooled_at == 0, ~clean_right)  # iterate 0: the clean image
    assert np.all((fooled_at == NEVER) | ((fooled_at >= 0) & (fooled_at <= 2 * 9)))
    assert clean_right.sum() >= 10
    assert (fooled_at > 0).sum() >= clean_right.sum() / 2  # it works through the median filter
    curve = accuracy_curve(fooled_at, 2 * 9)
    assert curve[0] == pytest.approx(clean_right.mean())
    assert curve[-1] == pytest.approx(np.mean(fooled_at == NEVER))
    assert np.all(np.diff(curve) <= 0)
    # A larger budget never leaves more images standing: the same seeds, more steps.
    stronger = bpda_pgd(model, defense, images, labels, eps=64 / 255, steps=8, restarts=2)
    assert np.mean(stronger == NEVER) <= np.mean(fooled_at == NEVER)
    assert np.mean(stronger == NEVER) <= 0.1


@pytest.mark.slow
def test_art_apgd_uses_the_bpda_gradient_through_csc_preprocessor(trained):
    from art.attacks.evasion import AutoProjectedGradientDescent

    from evaluation.art_adapter import CSCPreprocessor, art_classifier

    model, images, labels = trained
    images, labels = images[::2], labels[::2]  # one per class
    defense = CSCDefense(DEFAULT_BASIS)
    classifier = art_classifier(model, defense, n_classes=10, size=32)
    attack = AutoProjectedGradientDescent(classifier, norm=np.inf, eps=8 / 255,
                                          eps_step=16 / 255, max_iter=4,
                                          loss_type="cross_entropy", verbose=False)
    # ART rebuilds the estimator for its loss: the defense must still be in front of it.
    defences = attack.estimator.preprocessing_defences
    assert len(defences) == 1 and isinstance(defences[0], CSCPreprocessor)

    x = to_tensor(images).numpy()
    gradient = attack.estimator.loss_gradient(x, np.eye(10, dtype=np.float32)[labels])
    at_reconstruction = defense(torch.from_numpy(x)).detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(at_reconstruction),
                                             torch.from_numpy(labels), reduction="sum")
    expected, = torch.autograd.grad(loss, at_reconstruction)
    # The classifier's gradient at the reconstruction, up to ART's loss scaling: BPDA.
    cosine = np.sum(gradient * expected.numpy()) / (np.linalg.norm(gradient)
                                                   * np.linalg.norm(expected.numpy()))
    assert cosine > 0.999

    np.random.seed(0)  # noqa: NPY002 (ART's random start)
    adversarial = attack.generate(x=x, y=labels)
    assert np.abs(adversarial - x).max() <= 8 / 255 + 1e-6
    before = classifier.predict(x).argmax(1)
    after = classifier.predict(adversarial).argmax(1)
    assert (before != after).sum() >= 2  # its steps change the defended prediction


def test_adaptive_autoattack_only_lowers_accuracy(trained):
    model, images, labels = trained
    defense = TransformDefense(BASELINES["JPEG q75"], "JPEG")
    standing = np.ones(20, bool)
    standing[:5] = False  # an earlier attack already fooled these
    robust = adaptive_autoattack(model, defense, images, labels, standing, eps=8 / 255,
                                 budget=Budget(apgd_steps=5))
    assert not robust[:5].any()
    assert robust.sum() < standing.sum()


def test_the_sanity_checks_flag_what_they_should():
    n = 100
    converged = np.r_[np.zeros(40, int), np.full(50, 3), np.full(10, NEVER)]
    late = converged.copy()
    late[:5] = 95  # five images still falling at the end
    found = convergence({"good": converged, "late": late}, iterates=100)
    assert [c.ok for c in found] == [True, False]
    assert "5 of 100 images fell in the last quarter; not converged" in found[1].text

    labels = {0.1: "0.1", 0.2: "0.2", 0.4: "0.4"}
    sweep = {("broken", 0.1): np.full(n, NEVER), ("broken", 0.2): np.full(n, NEVER),
             ("broken", 0.4): np.full(n, NEVER), ("fine", 0.1): converged,
             ("fine", 0.2): np.zeros(n, int), ("fine", 0.4): np.zeros(n, int)}
    found = sweep_reaches_zero(sweep, labels)
    assert [c.ok for c in found] == [False, True]
    assert "1.000 at 0.4" in found[0].text and "unreliable" in found[0].text

    correct = {("row", "BPDA"): np.ones(10, bool), ("row", "PGD"): np.r_[np.zeros(20, bool),
                                                                         np.ones(20, bool)]}
    found = adaptive_not_weaker(correct, ["row"], [("BPDA", "PGD")], np.arange(20, 30))
    assert found[0].ok  # on its own images the oblivious attack also left all 10
    found = adaptive_not_weaker(correct, ["row"], [("BPDA", "PGD")], np.arange(10))
    assert not found[0].ok and "1.000 > PGD 0.000 (same 10 images)" in found[0].text



def test_apgd_t_fab_t_and_square_each_lower_an_undefended_models_accuracy(trained):
    model, images, labels = trained
    with torch.no_grad():
        right = model(to_tensor(images)).argmax(1).numpy() == labels
    assert right.sum() >= 10
    budget = dict(eps=8 / 255, steps=10, target_classes=3, square_queries=300)
    for name in REST:  # each on its own, on the images the model gets right
        standing = rest_of_autoattack(model, torch.nn.Identity(), images, labels, right,
                                      attacks=(name,), **budget)[name]
        assert not np.any(standing & ~right)  # only the images standing before are attacked
        assert standing.sum() <= right.sum() - 3, name
    after = rest_of_autoattack(model, torch.nn.Identity(), images, labels, right, **budget)
    assert list(after) == list(REST)
    assert np.all(after["Square"] <= after["FAB-T"]) and np.all(after["FAB-T"] <= after["APGD-T"])


class Quantiser(torch.nn.Module):
    """Two bits per channel with its true gradient, zero almost everywhere: a defense that
    masks its gradient."""

    def forward(self, x):
        return torch.round(x * 3) / 3


def test_a_defense_that_masks_its_gradient_is_flagged_by_square(trained):
    model, images, labels = trained
    budget = dict(eps=16 / 255, steps=5, target_classes=2, square_queries=300)
    fooled_at = bpda_pgd(model, Quantiser(), images, labels, eps=16 / 255, steps=5)
    standing = {"APGD": fooled_at == NEVER, **rest_of_autoattack(
        model, Quantiser(), images, labels, fooled_at == NEVER, **budget)}
    gradient_proof = standing["FAB-T"]
    assert gradient_proof.sum() >= 4  # the zero gradient stops every gradient attack
    only_square = int((gradient_proof & ~standing["Square"]).sum())
    assert only_square >= 2  # but not the attack that only queries
    found = gradient_masking({"bit depth 2": standing}, {})
    assert not found[0].ok and "gradient masking" in found[0].text
    assert f"Square fooled {only_square} of the {gradient_proof.sum()} images" in found[0].text
    # Through BPDA's identity gradient the gradient attacks see the classifier again, and
    # leave Square (almost) nothing.
    bpda = TransformDefense(lambda batch: np.round(batch * 3) / 3, "bit depth 2")
    fooled_at, standing = attack_through_defense(
        model, bpda, images, labels, eps=16 / 255, seed=0,
        budget=Budget(steps=5, restarts=1, apgd_steps=5, target_classes=2, square_queries=300))
    assert list(standing) == ["APGD", *REST]
    assert standing["FAB-T"].sum() < gradient_proof.sum()
    assert gradient_masking({"bit depth 2": standing}, {})[0].ok

"""The CSC stages against sporco and against the reference's published numbers."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import REFERENCE, psnr
from sporco import signal
from sporco.admm import cbpdn

from pipeline.basis import DEFAULT_BASIS, load_basis, validate_basis
from pipeline.dictionary import learn_dictionary
from pipeline.images import read_image
from pipeline.options import CDLOptions, CSCOptions
from pipeline.solvers import reconstruct, reconstruct_image
from pipeline.sporco_solver import split_low_high


def test_split_sums_back_and_low_is_smooth():
    image = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    low, high = split_low_high(image)
    assert low.shape == high.shape == image.shape and low.dtype == np.float32
    np.testing.assert_allclose(low + high, image, atol=1e-5)
    # the low-pass part varies far less from pixel to pixel than the noise image
    assert np.abs(np.diff(low, axis=0)).mean() < 0.2 * np.abs(np.diff(image, axis=0)).mean()


@pytest.mark.parametrize("solver", ["sporco", "woodbury", "torch"])
def test_reconstruct_image_matches_a_direct_sporco_solve(small_basis, solver):
    image = np.random.default_rng(2).random((16, 16, 3), dtype=np.float32)
    options = CSCOptions(max_iter=30, solver=solver)
    result, n_iter = reconstruct_image(image, small_basis, options)

    low, high = signal.tikhonov_filter(image, 5.0, 16)
    opt = cbpdn.ConvBPDN.Options({"Verbose": False, "MaxMainIter": 30, "RelStopTol": 5e-3,
                                  "AuxVarObj": False})
    solver = cbpdn.ConvBPDN(small_basis, high, 0.2, opt)
    solver.solve()
    expected = np.clip(low + solver.reconstruct().reshape(image.shape), 0, 1)
    assert result.shape == image.shape and result.dtype == np.float32
    assert n_iter == solver.k
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_output_options(small_basis):
    image = np.random.default_rng(3).random((16, 16, 3), dtype=np.float32)
    clipped, _ = reconstruct_image(image, small_basis, CSCOptions(max_iter=10))
    rescaled, _ = reconstruct_image(image, small_basis, CSCOptions(max_iter=10,
                                                                   output="max_rescale"))
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert rescaled.max() == pytest.approx(1.0)


@pytest.mark.parametrize("solver", ["sporco", "torch"])
def test_batch_reconstruct_equals_per_image(small_basis, solver):
    images = np.random.default_rng(4).random((3, 16, 16, 3), dtype=np.float32)
    options = CSCOptions(max_iter=10, solver=solver)
    batch, n_iter = reconstruct(images, small_basis, options=options)
    assert batch.shape == images.shape and n_iter.shape == (3,)
    single, single_iter = reconstruct_image(images[1], small_basis, options)
    np.testing.assert_array_equal(batch[1], single)
    assert n_iter[1] == single_iter


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("lmbda", -1, "lmbda must be > 0, got -1"), ("max_iter", 0, "max_iter must be"),
     ("output", "rescale", "output must be 'clip' or 'max_rescale'"),
     ("solver", "fft", "solver must be 'torch', 'woodbury' or 'sporco'")],
)
def test_options_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        CSCOptions(**{field: value})


def test_image_and_basis_must_agree(small_basis):
    with pytest.raises(ValueError, match=r"image must have shape \(H, W, 3\)"):
        reconstruct_image(np.zeros((16, 16), np.float32), small_basis)


def test_published_images_land_in_the_quasi_natural_space(reference_basis_path):
    """Ten published 64x64 photographs and their FGSM-0.08 versions, published basis_64.

    The reference measured PSNR(clean, adversarial) = 30.1 dB and
    PSNR(reconstruction of clean, reconstruction of adversarial) = 38.9 dB.
    """
    basis = load_basis(reference_basis_path)
    clean_files = sorted((REFERENCE / "sample_images_64" / "original").glob("*.png"))
    adversarial = {p.name.split("_")[0]: p for p in
                   (REFERENCE / "sample_images_64" / "fgsm_0.08").glob("*.png")}
    assert len(clean_files) == 10
    before, after = [], []
    for path in clean_files:
        clean, attacked = read_image(path), read_image(adversarial[path.name.split("_")[0]])
        before.append(psnr(clean, attacked))
        (clean_rec, _), (attacked_rec, _) = (reconstruct_image(x, basis) for x in (clean, attacked))
        after.append(psnr(clean_rec, attacked_rec))
    assert np.mean(before) == pytest.approx(30.1, abs=0.1)
    assert np.mean(after) == pytest.approx(38.9, abs=0.5)
    assert np.mean(after) > np.mean(before)


def test_learned_dictionary_is_zero_mean_unit_norm_and_objective_falls():
    images = np.random.default_rng(5).random((4, 24, 24, 3), dtype=np.float32)
    ticks = []
    basis, objective = learn_dictionary(images, CDLOptions(n_filters=6, filter_size=5, max_iter=8),
                                        on_iteration=lambda: ticks.append(1) or True)
    assert len(ticks) == 8  # a callback returning True must not stop learning early
    assert basis.shape == (5, 5, 3, 6) and basis.dtype == np.float32
    validate_basis(basis)
    assert objective.shape == (8,) and objective[-1] < objective[0]


def test_woodbury_solver_matches_sporcos_own_solve():
    """The exact X-step gives sporco's iterations and pixels, to float32 rounding."""
    from pipeline.photos import sample

    basis = load_basis(DEFAULT_BASIS)
    dataset = sample()
    for index in (0, 100, 200, 300):
        image = dataset.load(index)
        fast, fast_iter = reconstruct_image(image, basis, CSCOptions(solver="woodbury"))
        slow, slow_iter = reconstruct_image(image, basis, CSCOptions(solver="sporco"))
        assert fast_iter == slow_iter
        assert psnr(fast, slow) > 100.0

"""The unrolled, differentiable reconstruction: the solver's result, and its exact gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import torch_solver, unrolled
from pipeline.basis import DEFAULT_BASIS, load_basis
from pipeline.options import CSCOptions
from pipeline.photos import sample


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Six 24x24 crops of the sample's tiles, (N, H, W, 3) in [0, 1]."""
    dataset = sample()
    return np.stack([dataset.load(i)[20:44, 16:40] for i in (0, 40, 90, 150, 220, 300)])


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def test_the_unrolled_solve_is_the_solvers_reconstruction(crops):
    basis = load_basis(DEFAULT_BASIS)
    expected, n_iter = torch_solver.reconstruct_batch(crops, basis)
    with torch.no_grad():
        out, schedule = unrolled.reconstruct(as_tensor(crops), basis)
    assert schedule.n_iter.tolist() == n_iter.tolist()
    assert len(set(n_iter.tolist())) > 1  # images stopped at different iterations
    difference = out.permute(0, 2, 3, 1).numpy() - expected
    assert np.abs(difference).max() < 1e-4


def test_the_gradient_is_the_derivative_of_the_replayed_reconstruction(crops):
    """Back-propagation through every iteration against central differences of the same
    map (the forward pass's penalty factors and stopping points replayed)."""
    basis = load_basis(DEFAULT_BASIS)
    options = CSCOptions(max_iter=40)
    images = as_tensor(crops[:2, :12, :12]).requires_grad_(True)
    weights = torch.from_numpy(np.random.default_rng(1).normal(size=images.shape)
                               .astype(np.float32))
    out, schedule = unrolled.reconstruct(images, basis, options)
    (out * weights).sum().backward()
    gradient = images.grad.clone()
    assert float(gradient.abs().max()) > 0

    direction = torch.from_numpy(np.random.default_rng(2).normal(size=images.shape)
                                 .astype(np.float32))
    step = 1e-3

    def loss(x):
        with torch.no_grad():
            value, _ = unrolled.reconstruct(x, basis, options, schedule=schedule)
        return float((value.double() * weights.double()).sum())

    numeric = (loss(images.detach() + step * direction)
               - loss(images.detach() - step * direction)) / (2 * step)
    analytic = float((gradient.double() * direction.double()).sum())
    assert abs(numeric - analytic) <= 0.02 * abs(analytic), (numeric, analytic)


def test_the_exact_gradient_differs_from_bpdas_identity(crops):
    """BPDA takes d(reconstruction)/d(image) as the identity; the exact gradient of a loss
    on the reconstruction is not the same vector (cosine well below 1), which is why an
    exact-gradient attack is worth running."""
    basis = load_basis(DEFAULT_BASIS)
    images = as_tensor(crops[:2]).requires_grad_(True)
    out, _ = unrolled.reconstruct(images, basis, CSCOptions(max_iter=60))
    upstream = torch.from_numpy(np.random.default_rng(3).normal(size=out.shape)
                                .astype(np.float32))
    (out * upstream).sum().backward()
    exact, bpda = images.grad.flatten(1), upstream.flatten(1)
    cosine = torch.nn.functional.cosine_similarity(exact, bpda, dim=1)
    assert torch.all(cosine < 0.95) and torch.all(cosine > -1.0)

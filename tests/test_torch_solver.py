"""The batched PyTorch solver against sporco, its oracle."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import psnr
from sporco import signal

from pipeline import torch_solver
from pipeline.basis import load_basis
from pipeline.options import CSCOptions
from pipeline.photos import sample
from pipeline.resources import BASIS_FOLDER
from pipeline.solvers import reconstruct

# The earlier shipped single basis, and sample tiles whose sporco solves with it stop after
# 9 to 200 iterations (mean ~66).
DEFAULT_BASIS = BASIS_FOLDER / "sample-k1" / "cluster_00" / "64_p8_lm0.2.npy"
MIXED = (0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240, 260, 280, 300)


@pytest.fixture(scope="module")
def mixed_images() -> np.ndarray:
    dataset = sample()
    return np.stack([dataset.load(i) for i in MIXED])


@pytest.fixture(scope="module")
def sporco_results(mixed_images):
    basis = load_basis(DEFAULT_BASIS)
    return reconstruct(mixed_images, basis, options=CSCOptions(solver="sporco"))


def test_sixteen_images_of_mixed_convergence_match_sporco(mixed_images, sporco_results):
    basis = load_basis(DEFAULT_BASIS)
    expected, expected_iter = sporco_results
    result, n_iter = torch_solver.reconstruct_batch(mixed_images, basis, batch_size=8)
    assert expected_iter.min() < 20 and expected_iter.max() == 200  # really mixed
    assert np.all(np.abs(n_iter - expected_iter) <= 1), (n_iter, expected_iter)
    agreement = [psnr(a, b) for a, b in zip(result, expected, strict=True)]
    assert min(agreement) > 40.0
    ours = np.mean([psnr(x, r) for x, r in zip(mixed_images, result, strict=True)])
    theirs = np.mean([psnr(x, r) for x, r in zip(mixed_images, expected, strict=True)])
    assert ours == pytest.approx(theirs, abs=0.05)


def test_each_image_stops_on_its_own_test(mixed_images):
    """In a batch, every image takes the iterations it takes alone, and gives the same pixels."""
    basis = load_basis(DEFAULT_BASIS)
    images = mixed_images[[14, 4, 0, 2]]  # 9, 200, 72 and 50 iterations with sporco
    together, together_iter = torch_solver.reconstruct_batch(images, basis, batch_size=4)
    for image, result, n_iter in zip(images, together, together_iter, strict=True):
        alone, alone_iter = torch_solver.reconstruct_batch(image[None], basis, batch_size=1)
        assert n_iter == alone_iter[0]
        assert psnr(result, alone[0]) > 100.0
    assert len(set(together_iter.tolist())) == 4


def test_batch_smaller_than_the_images_and_a_batch_of_one(mixed_images):
    basis = load_basis(DEFAULT_BASIS)
    images = mixed_images[:5]
    one, one_iter = torch_solver.reconstruct_batch(images[:1], basis)
    assert one.shape == (1, 64, 64, 3) and one.dtype == np.float32
    few, few_iter = torch_solver.reconstruct_batch(images, basis, batch_size=2)
    assert few.shape == images.shape and few_iter[0] == one_iter[0]
    assert psnr(few[0], one[0]) > 100.0


def test_max_iter_caps_every_image(mixed_images):
    basis = load_basis(DEFAULT_BASIS)
    _, n_iter = torch_solver.reconstruct_batch(mixed_images[:4], basis, CSCOptions(max_iter=7),
                                          batch_size=3)
    assert n_iter.tolist() == [7, 7, 7, 7]


def test_low_high_split_matches_sporcos_tikhonov_filter():
    image = np.random.default_rng(0).random((20, 26, 3), dtype=np.float32)
    low, high = torch_solver.split_low_high(torch.from_numpy(image).permute(2, 0, 1)[None])
    expected_low, expected_high = signal.tikhonov_filter(image, 5.0, 16)
    np.testing.assert_allclose(low[0].permute(1, 2, 0).numpy(), expected_low, atol=1e-5)
    np.testing.assert_allclose(high[0].permute(1, 2, 0).numpy(), expected_high, atol=1e-5)


def test_woodbury_x_step_solves_the_normal_equations(small_basis):
    """(rho I + D^H D) x = b at every frequency, for any rho, from one eigendecomposition."""
    spectrum = torch_solver.dictionary_spectrum(small_basis, (12, 10))
    rng = np.random.default_rng(1)
    b = torch.from_numpy(rng.standard_normal((2, 8, 12, 6)) + 1j * rng.standard_normal(
        (2, 8, 12, 6))).to(torch.complex64)
    rho = torch.tensor([0.5, 40.0]).reshape(2, 1, 1, 1)
    x = torch_solver._solve_x(b.clone(), rho, spectrum) / rho
    d = spectrum.filters  # (3, M, H, Wf)
    applied = rho * x + torch.einsum("cmhw,cnhw,bnhw->bmhw", d.conj(), d, x)
    np.testing.assert_allclose(applied.numpy(), b.numpy(), atol=2e-3 * float(b.abs().max()))


def test_odd_sized_images_match_sporco(small_basis):
    image = np.random.default_rng(6).random((15, 17, 3), dtype=np.float32)
    options = CSCOptions(max_iter=40)
    ours, ours_iter = reconstruct(image[None], small_basis, options=options)
    theirs, theirs_iter = reconstruct(image[None], small_basis,
                                      options=CSCOptions(max_iter=40, solver="sporco"))
    assert abs(int(ours_iter[0]) - int(theirs_iter[0])) <= 1
    assert psnr(ours[0], theirs[0]) > 60.0


def test_devices():
    assert torch_solver.resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert torch_solver.resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="PyTorch sees no GPU"):
            torch_solver.resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        torch_solver.resolve_device("tpu")


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU here: the Triton kernels run in the test below"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("joint", "batch_size"), [(False, 1), (False, 3), (True, 4)])
def test_fused_loops_give_the_pytorch_reference_codes(mixed_images, joint, batch_size, device):
    """The fused elementwise loops (numba on a CPU, Triton on a GPU) and the PyTorch
    operations: same iterations, same codes."""
    basis = load_basis(DEFAULT_BASIS)
    options = CSCOptions()
    images = torch.from_numpy(mixed_images[[14, 4, 0, 2]]).permute(0, 3, 1, 2).contiguous()
    _, high = torch_solver.split_low_high(images.to(device), lmbda=options.filter_lmbda,
                                     pad=options.pad)
    spectrum = torch_solver.dictionary_spectrum(basis, tuple(high.shape[-2:]), device)

    def codes(fuse):
        solved = torch_solver.solve(high, spectrum, options, batch_size=batch_size, joint=joint,
                               fuse=fuse)
        return {int(i): (y.cpu(), int(k)) for rows, ys, ks in solved
                for i, y, k in zip(rows, ys, ks, strict=True)}

    reference, fused = codes(False), codes(True)
    assert sorted(fused) == [0, 1, 2, 3]
    for i in range(4):
        assert fused[i][1] == reference[i][1]
        scale = float(reference[i][0].abs().max())
        assert float((fused[i][0] - reference[i][0]).abs().max()) <= 1e-4 * scale
    if not joint:
        assert len({k for _, k in fused.values()}) == 4  # each image stopped on its own test


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_a_gpu_out_of_memory_halves_the_batch(mixed_images, caplog):
    """Worker processes sharing a GPU can together ask for more than it has: the solve
    is run again in smaller batches, with the same results."""
    basis = load_basis(DEFAULT_BASIS)
    images = np.concatenate([mixed_images[:2]] * 64)  # 128 images: about 1.3 GB as one batch
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(0.6e9 / torch.cuda.mem_get_info()[1])
    try:
        with caplog.at_level("WARNING", logger="pipeline.torch_solver"):
            out, n_iter = torch_solver.reconstruct_batch(images, basis, batch_size=128,
                                                         device="cuda")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch_solver._gpu_batch_limit = None
    assert "ran out of memory; solving again in batches of 64 images" in caplog.text, caplog.text
    reference, reference_iter = torch_solver.reconstruct_batch(mixed_images[:2], basis)
    for k in (0, 1, 126, 127):
        assert psnr(out[k], reference[k % 2]) > 60.0
        assert abs(int(n_iter[k]) - int(reference_iter[k % 2])) <= 1


def test_fused_loops_are_the_cpu_default():
    assert torch_solver.fused.AVAILABLE  # numba is a dependency: the CPU runs the fused loops
    images = torch.rand((1, 3, 8, 8))
    spectrum = torch_solver.dictionary_spectrum(np.ones((3, 3, 3, 2), np.float32), (8, 8))
    _, codes, _ = next(torch_solver.solve(images, spectrum, CSCOptions(), fuse=None))
    _, reference, _ = next(torch_solver.solve(images, spectrum, CSCOptions(), fuse=False))
    assert torch.allclose(codes, reference, atol=1e-5)


def test_without_the_fused_loops_the_pytorch_path_runs(monkeypatch):
    """A machine where numba (or on a GPU, Triton or a C compiler for it) is missing:
    the default solve takes the PyTorch path with the same codes; asking for the
    fused loops there is refused with the reason."""
    images = torch.rand((2, 3, 12, 12), generator=torch.Generator().manual_seed(0))
    spectrum = torch_solver.dictionary_spectrum(np.ones((3, 3, 3, 2), np.float32) / 9, (12, 12))
    fused_codes = {int(i): y for rows, ys, _ in torch_solver.solve(images, spectrum, CSCOptions(),
                                                             batch_size=2)
                   for i, y in zip(rows, ys, strict=True)}
    monkeypatch.setattr(torch_solver.fused, "AVAILABLE", False)
    plain = {int(i): y for rows, ys, _ in torch_solver.solve(images, spectrum, CSCOptions(),
                                                       batch_size=2)
             for i, y in zip(rows, ys, strict=True)}
    assert sorted(plain) == [0, 1]
    for i in plain:
        assert torch.allclose(plain[i], fused_codes[i], atol=1e-5)
    with pytest.raises(ValueError, match="need numba on a CPU"):
        next(torch_solver.solve(images, spectrum, CSCOptions(), fuse=True))


def test_gpu_kernels_agree_with_the_reference_in_tritons_interpreter():
    """The Triton kernels, run by Triton's interpreter on the CPU, step for step with the
    PyTorch iteration: the same residuals, penalties and variables to float32 rounding."""
    if importlib.util.find_spec("triton") is None:  # not imported here: only in the subprocess
        pytest.skip("Triton is not installed (the test extra installs it)")
    script = Path(__file__).with_name("triton_interpreted.py")
    done = subprocess.run([sys.executable, str(script)], check=True,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["iterations"] == 10
    worst = result["relative_differences"]
    assert worst["rho"] <= 1e-5 and worst["r"] <= 1e-4 and worst["s"] <= 1e-4, worst
    assert worst["y"] <= 1e-4 and worst["u"] <= 1e-4, worst

"""The measuring stage (pipeline.quality), a basis set's figures (pipeline.plots) and the
errors every command ends with (pipeline.errors), each tested on its own."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest
from helpers import psnr
from PIL import Image

import evaluation
import flows
import pipeline
from pipeline import plots
from pipeline.basis import DEFAULT_BASIS, load_basis
from pipeline.errors import RunStopped, UserError
from pipeline.options import CSCOptions
from pipeline.photos import sample
from pipeline.quality import HeldOut, coding_quality, measure_by_cluster
from pipeline.torch_solver import reconstruct_batch

OPTIONS = CSCOptions(max_iter=30)


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    """Six 64x64 tiles of the embedded photographs, float32 in [0, 1]."""
    dataset = sample()
    return np.stack([dataset.load(i) for i in range(0, 300, 50)])


def test_coding_quality_psnr_is_the_reconstructions_psnr(tiles):
    basis = load_basis(DEFAULT_BASIS)
    quality = coding_quality(tiles, basis, OPTIONS)
    reconstructions, _ = reconstruct_batch(tiles, basis, OPTIONS)
    expected = [psnr(tile, out) for tile, out in zip(tiles, reconstructions, strict=True)]
    np.testing.assert_allclose(quality.psnr, expected, atol=0.01)
    assert np.all(quality.psnr > 25)  # the shipped basis reconstructs photographs well
    assert np.all((quality.density > 0) & (quality.density < 0.5))
    assert quality.usage.shape == (len(tiles), basis.shape[-1])
    np.testing.assert_allclose(quality.usage.mean(axis=1), quality.density, rtol=1e-6)


def test_each_image_is_measured_with_its_own_clusters_dictionary(tiles):
    one = load_basis(DEFAULT_BASIS)
    other = np.roll(one, 1, axis=-1)[..., :32]  # half the filters: codes worse
    clusters = np.array([0, 1, 0, 1, 1, 0])
    measured = measure_by_cluster(tiles, clusters, [one, other], control=one, options=OPTIONS)
    for c, basis in enumerate([one, other]):
        alone = coding_quality(tiles[clusters == c], basis, OPTIONS)
        np.testing.assert_allclose(measured.psnr[clusters == c], alone.psnr, atol=1e-4)
        np.testing.assert_allclose(measured.density[clusters == c], alone.density, rtol=1e-5)
    np.testing.assert_allclose(measured.control_psnr, coding_quality(tiles, one, OPTIONS).psnr,
                               atol=1e-4)

    rows = measured.table(n_clusters=3)
    assert [row["cluster"] for row in rows] == [0, 1, 2, "all"]
    assert [row["images"] for row in rows] == [3, 3, 0, 6]
    assert rows[2]["psnr"] is None and rows[2]["gain_db"] is None  # an empty cluster
    assert rows[1]["gain_db"] == pytest.approx(rows[1]["psnr"] - rows[1]["control_psnr"])
    assert rows[1]["gain_db"] < 0  # half the filters, against the whole basis
    assert rows[3]["psnr"] == pytest.approx(float(np.mean(measured.psnr)))


def test_measurements_of_chunks_join_into_one(tiles):
    basis = load_basis(DEFAULT_BASIS)
    clusters = np.zeros(len(tiles), np.int64)
    whole = measure_by_cluster(tiles, clusters, [basis], control=None, options=OPTIONS)
    parts = [measure_by_cluster(tiles[s], clusters[s], [basis], control=None, options=OPTIONS)
             for s in (slice(0, 2), slice(2, 6))]
    joined = HeldOut.concatenate(parts)
    np.testing.assert_allclose(joined.psnr, whole.psnr, atol=1e-4)
    np.testing.assert_array_equal(joined.cluster, clusters)
    assert joined.control_psnr is None and "control_psnr" not in joined.table(1)[0]


def test_filter_mosaic_shows_every_filter_scaled_to_the_unit_range():
    basis = load_basis(DEFAULT_BASIS)  # (8, 8, 3, 64)
    mosaic = plots.filter_mosaic(basis)
    assert mosaic.shape == (8 * 9 + 1, 8 * 9 + 1, 3)
    first = mosaic[1:9, 1:9]
    assert first.min() == 0.0 and first.max() == 1.0
    scaled = (basis[..., 0] - basis[..., 0].min()) / np.ptp(basis[..., 0])
    np.testing.assert_allclose(first, scaled, atol=1e-6)


def test_basis_set_figures_are_drawn(tmp_path, tiles):
    basis = load_basis(DEFAULT_BASIS)
    rng = np.random.default_rng(0)
    plots.plot_filters([basis, basis[..., ::-1]], tmp_path / "filters.png")
    plots.plot_examples(tiles, np.array([0, 0, 1, 1, 2, 2]), tmp_path / "examples.png")
    plots.plot_latents(rng.standard_normal((40, 16)), rng.integers(0, 3, 40),
                       tmp_path / "latents.png")
    curve = {"step": np.array([0, 20, 40]), "objective": np.array([3.0, 2.1, 2.0]),
             "psnr": np.array([30.0, 31.5, 31.6])}
    plots.plot_validation({"cluster 0": curve, "control": curve}, tmp_path / "objective.png")
    for name in ("filters", "examples", "latents", "objective"):
        with Image.open(tmp_path / f"{name}.png") as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.shape[0] > 100 and pixels.std() > 10, name  # drawn, not blank


def test_every_error_a_command_ends_with_is_a_user_error_or_a_stated_stop():
    """The commands give exit status 2 for a UserError and 1 for a RunStopped
    (pipeline.cli): every error class the project defines is one of the two, so no
    problem in the user's input surfaces as a traceback."""
    defined = {}
    for package in (pipeline, flows, evaluation):
        for info in pkgutil.iter_modules(package.__path__):
            if info.name in ("triton_kernels", "fused_gpu") or info.name.startswith("_"):
                continue  # the GPU kernels import Triton
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            defined.update({f"{cls.__module__}.{name}": cls
                            for name, cls in inspect.getmembers(module, inspect.isclass)
                            if issubclass(cls, Exception) and cls.__module__ == module.__name__})
    assert len(defined) >= 12
    for name, cls in defined.items():
        assert issubclass(cls, UserError | RunStopped) or cls in (UserError, RunStopped), name
    assert not issubclass(RunStopped, UserError) and not issubclass(UserError, RunStopped)

"""Basis files: the published ones load as they are; bad ones are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import REFERENCE, normalised

from pipeline.basis import (
    DEFAULT_BASIS,
    BasisError,
    basis_name,
    file_sha256,
    load_basis,
    load_basis_set,
    save_basis,
)


def test_all_published_bases_load_as_they_are():
    files = sorted((REFERENCE / "basis").rglob("*.npy"))
    if not files:
        pytest.skip("reference bases not found")
    assert len(files) == 8
    for path in files:
        basis = load_basis(path)
        assert basis.shape == (8, 8, 3, 64) and basis.dtype == np.float32
        np.testing.assert_array_equal(basis, np.load(path))


def test_shipped_single_basis_is_valid_and_matches_its_manifest():
    import json

    basis = load_basis(DEFAULT_BASIS)
    assert basis.shape == (8, 8, 3, 64)
    folder = DEFAULT_BASIS.parents[1]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["cluster_00/64_p8_lm0.2.npy"] == file_sha256(DEFAULT_BASIS)
    assert manifest["command"].startswith(
        "python -m pipeline.learn --clusters 1 --budget converged")
    assert not load_basis_set(folder).stratified


def test_save_then_load_round_trips(tmp_path, small_basis):
    path = tmp_path / basis_name(8, 4, 0.2)
    assert path.name == "8_p4_lm0.2.npy"
    save_basis(path, small_basis)
    np.testing.assert_array_equal(load_basis(path), small_basis)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.ones((8, 8, 64), np.float32), r"expected shape \(P, P, 3, M\), got \(8, 8, 64\)"),
        (np.ones((8, 6, 3, 4), np.float32), "filters must be square"),
        (np.ones((4, 4, 3, 2), np.int32), "expected a float array"),
        (np.full((4, 4, 3, 2), np.nan, np.float32), "NaN or Inf"),
        (np.ones((4, 4, 3, 2), np.float32), "zero-mean"),
        (normalised(np.random.default_rng(0).standard_normal((4, 4, 3, 2))) * 2, "unit L2 norm"),
    ],
)
def test_bad_basis_is_refused_with_the_file_name(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(BasisError, match=message) as err:
        load_basis(path)
    assert str(path) in str(err.value)


def test_truncated_missing_and_pickled_files_are_refused(tmp_path, small_basis):
    truncated = tmp_path / "truncated.npy"
    np.save(truncated, small_basis)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(BasisError, match="truncated.npy: not a readable .npy array"):
        load_basis(truncated)
    with pytest.raises(BasisError, match="missing.npy: basis file not found"):
        load_basis(tmp_path / "missing.npy")
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BasisError, match="pickled.npy: not a readable .npy array"):
        load_basis(pickled)

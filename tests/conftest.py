"""Shared fixtures: small bases, a folder of photographs, a Dask client, the published data.

Every test runs on a fresh clone with only the project's own files (the
shipped basis sets, the embedded sample).  The tests of the original
project's published numbers read its data from ``../shared/reference``
beside the clone (``reference_basis_path``, ``REFERENCE``) and skip where it
is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
BASIS_64 = REFERENCE / "basis" / "basis_64" / "64_p8_lm0.2.npy"


def write_photos(root: Path) -> Path:
    """An ImageNet-style folder of 12 real photograph crops (64x64 tiles of the embedded
    sample, as JPEG) in two classes, ``cups`` and ``cats``; returns ``root``."""
    from PIL import Image

    from pipeline.datasets import sample

    dataset = sample()
    for i, index in enumerate(range(0, 348, 29)):
        folder = root / ("cats" if i % 2 else "cups")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dataset.items[index]).save(folder / f"photo_{i:02d}.jpg", quality=95)
    return root


def normalised(filters: np.ndarray) -> np.ndarray:
    """Make every filter zero-mean per channel and unit-norm, as a basis must be."""
    filters = filters - filters.mean(axis=(0, 1), keepdims=True)
    return (filters / np.linalg.norm(filters.reshape(-1, filters.shape[-1]), axis=0)).astype(
        np.float32
    )


@pytest.fixture
def small_basis() -> np.ndarray:
    """A (4, 4, 3, 8) random basis that passes validation."""
    return normalised(np.random.default_rng(1).standard_normal((4, 4, 3, 8)))


@pytest.fixture
def reference_basis_path() -> Path:
    if not BASIS_64.is_file():
        pytest.skip(f"reference basis not found at {BASIS_64}")
    return BASIS_64


@pytest.fixture(scope="module")
def client():
    """A LocalCluster with two threaded workers in this process (fast to start)."""
    from pipeline.runtime import connect

    client = connect(n_workers=2, processes=False, dashboard_address="127.0.0.1:0")
    yield client
    cluster = client.cluster
    client.close()
    cluster.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)

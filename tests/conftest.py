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
from helpers import BASIS_64, normalised


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

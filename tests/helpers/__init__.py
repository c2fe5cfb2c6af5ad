"""What the tests share: the published data's place, small real inputs, one launcher.

Fixtures live in ``tests/conftest.py``; plain functions and constants here,
imported as ``from helpers import ...`` (pytest puts ``tests/`` on the path).
Real deployments for the tests about distribution: :mod:`helpers.dask_processes`
(a scheduler and worker processes) and :mod:`helpers.s3_server` (moto's
S3-protocol server).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
"""The original project's published bases and test images, beside the clone."""
BASIS_64 = REFERENCE / "basis" / "basis_64" / "64_p8_lm0.2.npy"

SLOW_SOLVES = {"max_iter": 800, "rel_stop_tol": 1.0e-9}
"""``csc`` settings under which every solve runs all its iterations (about 1 s for a
32x32 image on one thread), so that a run lasts long enough to stop or hit."""

RUNTIME = ("--workers", "2", "--dashboard-address", "127.0.0.1:0")
"""A command's LocalCluster in the tests: two worker processes, a dashboard on a free
local port."""


def write_photos(root: Path) -> Path:
    """An ImageNet-style folder of 12 real photograph crops (64x64 tiles of the embedded
    sample, as JPEG) in two classes, ``cups`` and ``cats``; returns ``root``."""
    from PIL import Image

    from pipeline.photos import sample

    dataset = sample()
    for i, index in enumerate(range(0, 348, 29)):
        folder = root / ("cats" if i % 2 else "cups")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dataset.items[index]).save(folder / f"photo_{i:02d}.jpg", quality=95)
    return root


def write_config(path: Path, **sections: Any) -> Path:
    """A YAML config at ``path`` with these sections (``dataset={...}, basis=...``)."""
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


def overrides(section: str, settings: dict[str, Any]) -> list[str]:
    """``--set section.key=value`` arguments for a command."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{section}.{key}={value}")]


def launch(module: str, *args: str, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``python -m module args`` in its own process group (so a test can kill the
    command and its worker processes together); stdout and stderr as one text stream."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finished(process: subprocess.Popen, timeout: float = 300) -> str:
    """The output of a launched command, which must exit with status 0."""
    output = process.communicate(timeout=timeout)[0]
    assert process.returncode == 0, output
    return output


def wait_until_done(store: Path, count: int, timeout: float = 120) -> None:
    """Wait until a local store marks at least ``count`` images done."""
    chunks = store / "done" / "c"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if chunks.is_dir() and len(list(chunks.iterdir())) >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{store}: fewer than {count} images done after {timeout} s")


def normalised(filters: np.ndarray) -> np.ndarray:
    """Make every filter zero-mean per channel and unit-norm, as a basis must be."""
    filters = filters - filters.mean(axis=(0, 1), keepdims=True)
    return (filters / np.linalg.norm(filters.reshape(-1, filters.shape[-1]), axis=0)).astype(
        np.float32
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)

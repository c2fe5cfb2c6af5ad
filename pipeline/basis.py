"""Basis files: names, shapes, validation and loading.

A basis is one joint colour convolutional dictionary saved as a ``.npy`` array
of shape ``(P, P, 3, M)`` (sporco's layout: filter rows, filter columns,
colour channel, filter), float32, every filter zero-mean in each channel and
of unit L2 norm over its ``P*P*3`` values.  Files are named
``<M>_p<P>_lm<lambda>.npy`` as the original project named them, e.g.
``64_p8_lm0.2.npy``: 64 filters of 8x8 learned with sparsity weight 0.2.

This module owns the layout: no other module reshapes or checks a basis.
Arrays are read with ``allow_pickle=False``: a basis is data, never code.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASIS = PROJECT_ROOT / "basis" / "sample" / "64_p8_lm0.2.npy"
"""The basis the project learned on its embedded sample (see ``basis/README.md``)."""

NAME_PATTERN = re.compile(r"^(?P<filters>\d+)_p(?P<size>\d+)_lm(?P<lmbda>[0-9.]+)\.npy$")

#: Tolerances of the zero-mean and unit-norm checks.  The published bases
#: meet them to about 1e-7; a looser 1e-3 still admits float32 rounding.
MEAN_TOL = 1e-3
NORM_TOL = 1e-3


class BasisError(ValueError):
    """A basis file is missing, unreadable or not a valid dictionary."""


def resolve_basis_path(value: str | Path) -> Path:
    """Turn a config value into a basis path: ``"default"`` names the shipped one."""
    return DEFAULT_BASIS if str(value) == "default" else Path(value).expanduser()


def load_basis(path: str | Path) -> np.ndarray:
    """Load and validate one basis file.

    Parameters
    ----------
    path : str or Path
        A ``.npy`` file holding a ``(P, P, 3, M)`` array.

    Returns
    -------
    (P, P, 3, M) ndarray, float32
        The filters as stored (float64 files are converted to float32).

    Raises
    ------
    BasisError
        With the file name and the problem: missing, unreadable, wrong shape,
        dtype, non-finite values, or filters not zero-mean / unit-norm.
    """
    path = Path(path)
    if not path.is_file():
        raise BasisError(f"{path}: basis file not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise BasisError(f"{path}: not a readable .npy array ({err})") from None
    validate_basis(array, name=str(path))
    return array.astype(np.float32, copy=False)


def validate_basis(array: np.ndarray, *, name: str = "basis") -> None:
    """Check that ``array`` is a valid ``(P, P, 3, M)`` dictionary; raise BasisError if not."""
    if not isinstance(array, np.ndarray) or array.ndim != 4 or array.shape[2] != 3:
        shape = getattr(array, "shape", type(array).__name__)
        raise BasisError(f"{name}: expected shape (P, P, 3, M), got {shape}")
    if array.shape[0] != array.shape[1]:
        raise BasisError(f"{name}: filters must be square, got shape {array.shape}")
    if array.dtype.kind != "f":
        raise BasisError(f"{name}: expected a float array, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise BasisError(f"{name}: contains NaN or Inf values")
    filters = array.astype(np.float64)
    worst_mean = float(np.abs(filters.mean(axis=(0, 1))).max())
    if worst_mean > MEAN_TOL:
        raise BasisError(
            f"{name}: filters must be zero-mean in each channel, "
            f"largest channel mean is {worst_mean:.3g}"
        )
    norms = np.linalg.norm(filters.reshape(-1, array.shape[3]), axis=0)
    worst_norm = float(np.abs(norms - 1.0).max())
    if worst_norm > NORM_TOL:
        raise BasisError(
            f"{name}: filters must have unit L2 norm, largest deviation is {worst_norm:.3g}"
        )


def basis_name(n_filters: int, filter_size: int, lmbda: float) -> str:
    """File name of a basis, e.g. ``basis_name(64, 8, 0.2) == "64_p8_lm0.2.npy"``."""
    return f"{n_filters}_p{filter_size}_lm{lmbda:g}.npy"


def save_basis(path: str | Path, basis: np.ndarray) -> str:
    """Validate and write a basis as a plain ``.npy``; return its SHA-256."""
    validate_basis(basis, name=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, basis.astype(np.float32), allow_pickle=False)
    return file_sha256(path)


def basis_record(path: str | Path) -> dict:
    """What a store records of the basis it used: file name and SHA-256."""
    return {"file": Path(path).name, "sha256": file_sha256(path)}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_manifest(folder: str | Path, entries: dict[str, dict]) -> Path:
    """Write ``manifest.json`` listing each basis file with its checksum and settings."""
    path = Path(folder) / "manifest.json"
    path.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return path

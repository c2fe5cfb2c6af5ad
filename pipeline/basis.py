"""Basis files: names, shapes, validation and loading.

A basis is one joint colour convolutional dictionary saved as a ``.npy`` array
of shape ``(P, P, 3, M)`` (sporco's layout: filter rows, filter columns,
colour channel, filter), float32, every filter zero-mean in each channel and
of unit L2 norm over its ``P*P*3`` values.  Files are named
``<M>_p<P>_lm<lambda>.npy`` as the original project named them, e.g.
``64_p8_lm0.2.npy``: 64 filters of 8x8 learned with sparsity weight 0.2.

This module owns the file format and the checks (:func:`validate_basis`) and
makes filters valid (:func:`project_filters`); the solvers only transpose a
basis into the layout of their FFTs.  Arrays are read with
``allow_pickle=False``: a basis is data, never code.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.resources import BASIS_FOLDER
from pipeline.storage import (
    StorageOptions,
    filesystem,
    is_url,
    location,
    name_of,
    translate_errors,
)

STRATIFIED_SET = BASIS_FOLDER / "photos-k10"
"""The stratified method's set: 10 clusters of DAE latents, each dictionary learned to
convergence on the embedded photo tiles (the evaluation's per-cluster row)."""
ONE_BASIS_SET = BASIS_FOLDER / "photos-k1"
"""One basis learned to convergence on the same tiles (``basis/README.md``)."""
DEFAULT_BASIS_SET = ONE_BASIS_SET
"""The default of reconstruct: the set that codes photographs held out by photograph best
(one basis; ``benchmarks/README.md``, "Does stratification pay?")."""
DEFAULT_BASIS = ONE_BASIS_SET / "cluster_00" / "64_p8_lm0.2.npy"
"""The single basis of :data:`ONE_BASIS_SET`, as a file."""

#: Tolerances of the zero-mean and unit-norm checks.  The published bases
#: meet them to about 1e-7; a looser 1e-3 still admits float32 rounding.
MEAN_TOL = 1e-3
NORM_TOL = 1e-3


class BasisError(UserError, ValueError):
    """A basis file is missing, unreadable or not a valid dictionary."""


def resolve_basis_path(value: str | Path) -> Path:
    """Turn a config value into a basis path.

    ``"default"`` is the shipped set :data:`DEFAULT_BASIS_SET`; the name of
    a shipped set (``"photos-k1"``, ``"sample-k10"``, ...) is that set; anything
    else is a path to a basis ``.npy`` file or a basis-set folder.
    """
    text = str(value)
    if text == "default":
        return DEFAULT_BASIS_SET
    if "/" not in text and (BASIS_FOLDER / text / MANIFEST).is_file():
        return BASIS_FOLDER / text
    return location(text)


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


def project_filters(filters: np.ndarray) -> np.ndarray:
    """(P, P, 3, M) filters made valid: zero-mean in each channel, unit L2 norm, float32."""
    basis = np.array(filters, dtype=np.float32)
    basis -= basis.mean(axis=(0, 1), keepdims=True)
    norms = np.linalg.norm(basis.reshape(-1, basis.shape[3]), axis=0)
    basis /= np.where(norms == 0, 1, norms)  # an all-zero filter stays zero, as in sporco
    return basis


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


# --- basis sets: one basis per KMeans cluster -------------------------------------

MANIFEST = "manifest.json"


@dataclass
class BasisSet:
    """One basis per cluster, and what assigns an image to its cluster.

    Attributes
    ----------
    bases : list of (P, P, 3, M) float32 arrays
        ``bases[c]`` reconstructs the images of cluster ``c``.
    clusters : pipeline.clustering.Clusters or None
        PCA and centroids over the images' features; None with a single basis.
    dae_weights : dict of str to Tensor, or None
        The DAE whose encoder makes the latents (``feature="dae"``).
    feature : {"dae", "highpass"}
        What the clusters were fitted on: DAE latents, or the texture
        features of :func:`pipeline.features.highpass_features`.
    record : dict
        What a store records: the files with their SHA-256.
    """

    bases: list[np.ndarray]
    clusters: object | None = None
    dae_weights: dict | None = None
    feature: str = "dae"
    record: dict = field(default_factory=dict)

    @property
    def stratified(self) -> bool:
        return self.clusters is not None


def open_bases(path: str | Path, storage: StorageOptions = StorageOptions()) -> BasisSet:
    """A basis set folder (with ``manifest.json``) or a single basis ``.npy`` file; either
    may be a URL (``s3://bucket/bases/photos-k10``), reached with ``storage``."""
    if is_url(path):
        return _open_remote_bases(str(path).rstrip("/"), storage)
    path = Path(path)
    if path.is_dir():
        return load_basis_set(path)
    return BasisSet([load_basis(path)], record=basis_record(path))


def _open_remote_bases(url: str, storage: StorageOptions) -> BasisSet:
    """Copy a basis set or file from object storage to a temporary folder and open it
    there, so every check of a local set applies; errors name the URL."""
    fs, inner = filesystem(url, storage)
    parent = url.rsplit("/", 1)[0]
    with tempfile.TemporaryDirectory() as tmp, translate_errors(url, storage):
        target = Path(tmp) / name_of(url)
        if fs.isfile(inner):
            fs.get(inner, str(target))
        elif fs.isfile(f"{inner}/{MANIFEST}"):  # a set: only then copy the whole prefix
            fs.get(inner + "/", str(target) + "/", recursive=True)
        else:
            raise BasisError(f"{url}: basis not found (neither a basis file nor a basis-set "
                             f"folder with {MANIFEST})")
        try:
            return open_bases(target)
        except BasisError as err:
            raise BasisError(str(err).replace(tmp, parent)) from None


def save_basis_set(folder: str | Path, bases: list[np.ndarray], *, clusters=None,
                   dae_weights: dict | None = None, feature: str = "dae",
                   control: np.ndarray | None = None, manifest: dict) -> Path:
    """Write a basis set and its manifest (settings plus the SHA-256 of every file).

    Layout: ``cluster_<c>/<M>_p<P>_lm<lambda>.npy`` per cluster, and with
    more than one cluster ``pca_mean.npy``, ``pca_components.npy``,
    ``centroids.npy`` and, for clusters of DAE latents (``feature``),
    ``dae.pt`` (a state dict of tensors).  A
    ``control`` basis (one dictionary learned on all the images, which the
    learn command measures the clusters against) goes to
    ``control/<M>_p<P>_lm<lambda>.npy``, named in the manifest's ``control``;
    it is checked like every file but never used to reconstruct.
    """
    from pipeline.dae import save_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Replacing a set: without its manifest, a half-written folder never loads as a set.
    (folder / MANIFEST).unlink(missing_ok=True)
    lmbda = manifest.get("settings", {}).get("lmbda", 0.2)
    files = {}
    for c, basis in enumerate(bases):
        name = f"cluster_{c:02d}/{basis_name(basis.shape[3], basis.shape[0], lmbda)}"
        files[name] = save_basis(folder / name, basis)
    if clusters is not None:
        for name, array in (("pca_mean.npy", clusters.mean),
                            ("pca_components.npy", clusters.components),
                            ("centroids.npy", clusters.centroids)):
            np.save(folder / name, array, allow_pickle=False)
            files[name] = file_sha256(folder / name)
        if feature == "dae":
            save_weights(folder / "dae.pt", dae_weights)
            files["dae.pt"] = file_sha256(folder / "dae.pt")
    extra = {}
    if control is not None:
        extra["control"] = f"control/{basis_name(control.shape[3], control.shape[0], lmbda)}"
        files[extra["control"]] = save_basis(folder / extra["control"], control)
    body = {**manifest, "version": __version__, "n_clusters": len(bases),
            "bases": [n for n in files if n.startswith("cluster_")], **extra, "files": files}
    if clusters is not None:
        body["feature"] = feature
    (folder / MANIFEST).write_text(json.dumps(body, indent=2) + "\n")
    return folder / MANIFEST


def read_manifest(folder: str | Path) -> dict:
    """A basis set's manifest (settings, how each dictionary learned, the report)."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BasisError(f"{path}: not a basis-set manifest ({err})") from None


def load_basis_set(folder: str | Path) -> BasisSet:
    """Load a basis set, verifying every file's checksum and the arrays' shapes.

    Raises
    ------
    BasisError
        Naming the file: missing manifest or file, checksum mismatch, a basis
        that fails :func:`validate_basis`, or arrays whose shapes disagree.
    """
    from pipeline.clustering import Clusters
    from pipeline.dae import LATENT_SHAPE, load_weights
    from pipeline.features import N_FEATURES

    folder = Path(folder)
    manifest = read_manifest(folder)
    try:
        files, names = manifest["files"], manifest["bases"]
    except (KeyError, TypeError) as err:
        raise BasisError(f"{folder / MANIFEST}: not a basis-set manifest ({err})") from None
    for name, sha256 in files.items():
        if not (folder / name).is_file():
            raise BasisError(f"{folder / name}: listed in the manifest but missing")
        if file_sha256(folder / name) != sha256:
            raise BasisError(f"{folder / name}: checksum does not match the manifest "
                             "(the file was changed after the set was written)")
    bases = [load_basis(folder / name) for name in names]
    record = {"set": folder.name, "files": files}
    if len(bases) == 1 and "centroids.npy" not in files:
        return BasisSet(bases, record=record)
    arrays = {n: np.load(folder / n, allow_pickle=False)
              for n in ("pca_mean.npy", "pca_components.npy", "centroids.npy")}
    clusters = Clusters(arrays["pca_mean.npy"], arrays["pca_components.npy"],
                        arrays["centroids.npy"])
    feature = manifest.get("feature", "dae")
    widths = {"dae": int(np.prod(LATENT_SHAPE)), "highpass": N_FEATURES}
    if feature not in widths:
        raise BasisError(f"{folder / MANIFEST}: unknown feature {feature!r} (known: dae, "
                         "highpass)")
    width = widths[feature]
    if (clusters.mean.shape != (width,) or clusters.components.shape[1:] != (width,)
            or clusters.centroids.shape != (len(bases), clusters.components.shape[0])):
        raise BasisError(
            f"{folder}: PCA/centroid shapes {clusters.mean.shape}, "
            f"{clusters.components.shape}, {clusters.centroids.shape} do not fit "
            f"{len(bases)} clusters of {width}-value {feature} features")
    weights = None
    if feature == "dae":
        try:
            weights = load_weights(folder / "dae.pt")
        except ValueError as err:
            raise BasisError(str(err)) from None
    return BasisSet(bases, clusters, weights, feature, record)

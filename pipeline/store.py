"""The output Zarr store: one chunk per image, a completion record, resume.

Layout of the Zarr (v3) group written for one data set:

========  ==============  =============  ===========================================
array     shape           chunks         meaning
========  ==============  =============  ===========================================
images    (N, H, W, 3)    (1, H, W, 3)   reconstructions, uint8 (or float32 in [0, 1])
names     (N,)            (N,)           source name of each image
labels    (N,)            (N,)           class label, -1 where unknown
cluster   (N,)            (1,)           KMeans cluster whose basis was used (0: one basis)
n_iter    (N,)            (1,)           ADMM iterations of the image's solve
done      (N,)            (1,)           completion record: True once ``images[i]`` is written
========  ==============  =============  ===========================================

The group's attributes hold ``settings`` (everything that determines the
pixels: data set, size, basis checksum, solver options, dtype), ``version``,
``config`` and, after a run, ``failed`` (name -> reason) and ``summary``.

Each image is written by one task as one whole chunk, and ``done[i]`` is set
only after that write returns, so an interrupted run never counts a
half-written image; a re-run recomputes every image not marked done.

A run holds an exclusive lock on the file ``<store>.lock`` beside the store
(:func:`lock_store`), so a second run on the same store is refused instead of
racing the first.  The operating system releases the lock when the holder
exits, however it exits, so a killed run never blocks its own resume.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr
from filelock import FileLock, Timeout

from pipeline import __version__
from pipeline.errors import UserError


class StoreError(UserError, ValueError):
    """The output store cannot be used: not a Zarr store, or made with other settings."""


def open_store(
    path: str | Path,
    *,
    names: list[str],
    image_shape: tuple[int, int, int],
    dtype: str,
    settings: dict,
    labels: np.ndarray | None = None,
    attrs: dict | None = None,
    overwrite: bool = False,
) -> zarr.Group:
    """Create the store, or reopen it to resume when its settings are the same.

    Parameters
    ----------
    path : str or Path
        Folder of the Zarr group.
    names : list of str, length N
        Source name of each image.
    image_shape : (H, W, 3)
        Shape of one reconstructed image.
    dtype : {"uint8", "float32"}
        Storage type of ``images``.
    settings : dict
        What determines the pixels; a store made with different settings is
        refused unless ``overwrite``.
    labels : (N,) int array, optional
        Class labels (-1 unknown).
    attrs : dict, optional
        Further attributes to record (e.g. the resolved config).
    overwrite : bool
        Replace an existing store made with other settings.

    Raises
    ------
    StoreError
        If ``path`` exists and is not a Zarr group, or holds a store made with
        other settings and ``overwrite`` is False.
    """
    existing = check_store(path, names=names, image_shape=image_shape, dtype=dtype,
                           settings=settings, overwrite=overwrite)
    if existing is not None:
        return existing
    settings = _full_settings(settings, names, image_shape, dtype)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    n = len(names)
    group.create_array("images", shape=(n, *image_shape), chunks=(1, *image_shape),
                       dtype=dtype, fill_value=0)
    group.create_array("names", shape=(n,), chunks=(max(n, 1),), dtype=str)[:] = np.array(names)
    group.create_array("labels", shape=(n,), chunks=(max(n, 1),), dtype="int64")[:] = (
        -1 if labels is None else labels)
    group.create_array("cluster", shape=(n,), chunks=(1,), dtype="int16", fill_value=-1)
    group.create_array("n_iter", shape=(n,), chunks=(1,), dtype="int16", fill_value=0)
    group.create_array("done", shape=(n,), chunks=(1,), dtype=bool, fill_value=False)
    group.attrs.update({"settings": settings, "version": __version__, **_plain(attrs or {})})
    return group


@contextlib.contextmanager
def lock_store(path: str | Path) -> Iterator[Path]:
    """Hold ``<path>.lock`` while writing to the store at ``path``; yield the lock's path.

    The lock file sits beside the store, not in it, so that ``--overwrite``
    (which empties the store's folder) cannot remove a lock that is held.

    Raises
    ------
    StoreError
        If another process holds the lock, or the lock file cannot be made.
    """
    path = Path(path)
    lock_path = path.with_name(path.name + ".lock")
    lock = FileLock(lock_path, timeout=0)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise StoreError(f"{path}: another run is writing to this store (it holds {lock_path}); "
                         "wait for it to finish, or write elsewhere with --out") from None
    except OSError as err:
        raise StoreError(f"{path}: cannot lock the store ({err})") from None
    try:
        yield lock_path
    finally:
        lock.release()


def check_store(
    path: str | Path,
    *,
    names: list[str],
    image_shape: tuple[int, int, int],
    dtype: str,
    settings: dict,
    overwrite: bool = False,
) -> zarr.Group | None:
    """The existing store to resume, None when a new one is to be made; never writes.

    Takes the arguments of :func:`open_store`, which calls it; the commands
    also call it before starting any workers, so a wrong ``--out`` costs
    nothing.

    Raises
    ------
    StoreError
        As :func:`open_store`.
    """
    path = Path(path)
    existing = _existing_group(path)
    if existing is None or overwrite:
        return None
    old, new = existing.attrs.get("settings"), _full_settings(settings, names, image_shape, dtype)
    if old == new:
        return existing
    diff = ", ".join(_differences(old or {}, new)) or "unrecorded settings"
    raise StoreError(f"{path}: store was made with other settings ({diff}); "
                     "pass --overwrite to replace it, or --out to write elsewhere")


def _full_settings(settings: dict, names: list[str], image_shape, dtype: str) -> dict:
    return _plain({**settings, "n_images": len(names), "image_shape": list(image_shape),
                   "dtype": dtype, "names_digest": _digest(names)})


def _existing_group(path: Path) -> zarr.Group | None:
    if not path.exists():
        return None
    if path.is_dir() and not any(path.iterdir()):
        return None
    try:
        group = zarr.open_group(path, mode="r+")
    except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError) as err:
        raise StoreError(f"{path}: exists and is not a Zarr store ({err}); "
                         "choose another --out") from None
    if "done" not in group or "images" not in group:
        raise StoreError(f"{path}: a Zarr group, but not a reconstruction store; "
                         "choose another --out")
    return group


def pending(group: zarr.Group) -> np.ndarray:
    """Indices of the images not yet marked done, ascending."""
    return np.flatnonzero(~group["done"][:])


def write_image(
    path: str | Path, index: int, image: np.ndarray, n_iter: int = 0, cluster: int = 0
) -> None:
    """Write reconstruction ``index`` as its own chunk, then mark it done.

    ``image`` is (H, W, 3) float32 in [0, 1]; it is stored as the ``images``
    array's dtype (uint8 by rounding ``image * 255``).  Called on workers.
    """
    group = zarr.open_group(path, mode="r+")
    images = group["images"]
    if images.dtype == np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    images[index] = image
    group["n_iter"][index] = n_iter
    group["cluster"][index] = cluster
    group["done"][index] = True  # only after the image's chunk is written


def read_images(group: zarr.Group, indices=slice(None)) -> np.ndarray:
    """Stored images as float32 in [0, 1], whatever the storage dtype."""
    images = group["images"][indices]
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images


def _digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_short(a)} -> {_short(b)}")
    return out


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _plain(value):
    """JSON-safe copy of a settings structure (tuples -> lists, paths -> str)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def export_images(group: zarr.Group, folder: str | Path) -> int:
    """Write every done image as a PNG under ``folder``, named after its source.

    ``photos/cat.jpg`` becomes ``folder/photos/cat.png`` (PNG: lossless, so
    the file holds exactly the stored pixels).  Returns the number written.
    """
    from PIL import Image

    folder = Path(folder)
    names, done = group["names"][:], group["done"][:]
    for index in np.flatnonzero(done):
        parts = [p for p in Path(str(names[index])).parts if p not in ("/", "..")]
        target = folder.joinpath(*parts).with_suffix(".png")  # never outside folder
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.round(read_images(group, index) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(target)
    return int(done.sum())

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

With ``images_per_shard`` S > 1, ``images``, ``cluster``, ``n_iter`` and
``done`` are sharded (Zarr v3's sharding codec): S images per object, each
image still its own inner chunk, so a reader fetches one image with one
range request while a writer writes one object per S images.  Images are
then written a shard at a time (:func:`write_images`), by one task per
shard, so no two workers ever rewrite the same object.

The store may be a local folder or a URL (``s3://bucket/out.zarr``,
:mod:`pipeline.storage`).

The group's attributes hold ``settings`` (everything that determines the
pixels: data set, size, basis checksum, solver options, dtype), ``version``,
``config`` and, after a run, ``failed`` (name -> reason) and ``summary``.

Each image is written by one task as one whole chunk, and ``done[i]`` is set
only after that write returns, so an interrupted run never counts a
half-written image; a re-run recomputes every image not marked done.

A run guards its store against a second run (:func:`guard_store`): a local
store by an exclusive lock on the file ``<store>.lock`` beside it, which the
operating system releases when the holder exits, however it exits, so a
killed run never blocks its own resume; an ``s3://`` store by the lease
object ``<store>.lease`` beside it (:mod:`pipeline.lease`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from filelock import FileLock, Timeout

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.lease import Lease, check_free, hold_lease
from pipeline.storage import (
    StorageOptions,
    filesystem,
    is_url,
    location,
    protocol_of,
    sibling,
    translate_errors,
    zarr_options,
)


class StoreError(UserError, ValueError):
    """The output store cannot be used: not a Zarr store, or made with other settings."""


@dataclass(frozen=True)
class StoreLayout:
    """What a store holds and what made its pixels; a store is resumed only with the same.

    Attributes
    ----------
    names : list of str, length N
        Source name of each image.
    image_shape : (H, W, 3)
        Shape of one reconstructed image.
    dtype : {"uint8", "float32"}
        Storage type of ``images``.
    settings : dict
        What determines the pixels (the data set's size and fit, the basis
        record, the CSC options); a store made with other settings is refused
        unless overwritten.
    images_per_shard : int
        Images per stored object (1: no sharding; ``store.images_per_shard``).
    """

    names: list[str]
    image_shape: tuple[int, int, int]
    dtype: str
    settings: dict
    images_per_shard: int


def open_store(
    path: str | Path,
    layout: StoreLayout,
    *,
    labels: np.ndarray | None = None,
    attrs: dict | None = None,
    overwrite: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> zarr.Group:
    """Create the store, or reopen it to resume when its layout is the same.

    Parameters
    ----------
    path : str or Path
        Folder of the Zarr group, or a URL (``s3://bucket/out.zarr``).
    layout : StoreLayout
        The images' names and shape, the storage type, the settings that made
        the pixels and the sharding.
    labels : (N,) int array, optional
        Class labels (-1 unknown).
    attrs : dict, optional
        Further attributes to record (e.g. the resolved config).
    overwrite : bool
        Replace an existing store made with another layout.
    storage : StorageOptions
        How to reach a URL.

    Raises
    ------
    StoreError
        If ``path`` exists and is not a Zarr group, or holds a store made with
        other settings (or another ``images_per_shard``) and ``overwrite`` is
        False.
    """
    existing = check_store(path, layout, overwrite=overwrite, storage=storage)
    if existing is not None:
        return existing
    names, image_shape, dtype = layout.names, layout.image_shape, layout.dtype
    settings = _full_settings(layout)
    group = zarr.open_group(location(path), mode="w", zarr_format=3,
                            storage_options=zarr_options(path, storage))
    n = len(names)
    per_shard = (layout.images_per_shard,) if layout.images_per_shard > 1 else None
    group.create_array("images", shape=(n, *image_shape), chunks=(1, *image_shape),
                       shards=per_shard and (*per_shard, *image_shape), dtype=dtype,
                       fill_value=0)
    group.create_array("names", shape=(n,), chunks=(max(n, 1),), dtype=str)[:] = np.array(names)
    group.create_array("labels", shape=(n,), chunks=(max(n, 1),), dtype="int64")[:] = (
        -1 if labels is None else labels)
    group.create_array("cluster", shape=(n,), chunks=(1,), shards=per_shard, dtype="int16",
                       fill_value=-1)
    group.create_array("n_iter", shape=(n,), chunks=(1,), shards=per_shard, dtype="int16",
                       fill_value=0)
    group.create_array("done", shape=(n,), chunks=(1,), shards=per_shard, dtype=bool,
                       fill_value=False)
    group.attrs.update({"settings": settings, "version": __version__, **_plain(attrs or {})})
    return group


def open_group(path: str | Path, storage: StorageOptions = StorageOptions(),
               mode: str = "r") -> zarr.Group:
    """An existing store's group, local or at a URL (``mode`` ``"r"`` or ``"r+"``)."""
    return zarr.open_group(location(path), mode=mode,
                           storage_options=zarr_options(path, storage))


@contextlib.contextmanager
def guard_store(path: str | Path, storage: StorageOptions, *,
                guard: str) -> Iterator[Lease | None]:
    """Keep every other run from writing the store at ``path`` while the block runs.

    A local store: an exclusive lock file beside it (:func:`lock_store`).
    An ``s3://`` store: a lease object beside it (:func:`pipeline.lease.hold_lease`),
    yielded so the caller can check ``lease.lost`` between units of work.
    ``guard="none"`` holds nothing (the user runs one job per store).

    Raises
    ------
    StoreError
        If another run holds a local store, or an object store other than S3
        is to be written with ``guard="auto"`` (it offers no conditional write).
    pipeline.lease.LeaseError
        If another run holds an ``s3://`` store's lease.
    """
    if guard == "none":
        yield None
    elif not is_url(path):
        with lock_store(path):
            yield None
    elif protocol_of(str(path)) in ("s3", "s3a"):
        with hold_lease(str(sibling(path, ".lease")), storage, what=str(path)) as lease:
            yield lease
    else:
        raise StoreError(
            f"{path}: no guard against a second run writing this store ({protocol_of(path)}:// "
            "offers no lock; the lease needs S3's conditional writes); make sure only one "
            "run writes it and set store.guard: none")


def check_guard(path: str | Path, storage: StorageOptions, *, guard: str) -> None:
    """Raise now if :func:`guard_store` would refuse; holds nothing after it returns
    (an S3 lease is only read, so that a refused run writes nothing)."""
    if guard != "none" and is_url(path) and protocol_of(str(path)) in ("s3", "s3a"):
        check_free(str(sibling(path, ".lease")), storage, what=str(path))
    else:
        with guard_store(path, storage, guard=guard):
            return


@contextlib.contextmanager
def lock_store(path: str | Path) -> Iterator[Path]:
    """Hold ``<path>.lock`` while writing to the local store at ``path``; yield the lock's path.

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
    layout: StoreLayout,
    *,
    overwrite: bool = False,
    storage: StorageOptions = StorageOptions(),
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
    existing = _existing_group(location(path), storage)
    if existing is None or overwrite:
        return None
    old, new = existing.attrs.get("settings"), _full_settings(layout)
    if old != new:
        diff = ", ".join(_differences(old or {}, new)) or "unrecorded settings"
        raise StoreError(f"{path}: store was made with other settings ({diff}); "
                         "pass --overwrite to replace it, or --out to write elsewhere")
    if shard_size(existing) != layout.images_per_shard:
        raise StoreError(f"{path}: store was made with {shard_size(existing)} images per "
                         f"shard, the config asks for {layout.images_per_shard}; set "
                         f"store.images_per_shard: {shard_size(existing)} to resume it, or "
                         "pass --overwrite to replace it")
    return existing


def shard_size(group: zarr.Group) -> int:
    """Images per stored object of ``images`` (1 when the store is not sharded)."""
    shards = group["images"].shards
    return 1 if shards is None else int(shards[0])


def _full_settings(layout: StoreLayout) -> dict:
    return _plain({**layout.settings, "n_images": len(layout.names),
                   "image_shape": list(layout.image_shape), "dtype": layout.dtype,
                   "names_digest": _digest(layout.names)})


def _existing_group(path: str | Path, storage: StorageOptions) -> zarr.Group | None:
    if not _has_content(path, storage):
        return None
    try:
        group = open_group(path, storage, mode="r+")
    except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError) as err:
        raise StoreError(f"{path}: exists and is not a Zarr store ({err}); "
                         "choose another --out") from None
    if "done" not in group or "images" not in group:
        raise StoreError(f"{path}: a Zarr group, but not a reconstruction store; "
                         "choose another --out")
    return group


def _has_content(path: str | Path, storage: StorageOptions) -> bool:
    """Whether anything is at ``path``: a file, a non-empty folder, objects under a URL
    (whose bucket must exist)."""
    if is_url(path):
        fs, inner = filesystem(str(path), storage)
        bucket, _, key = inner.strip("/").partition("/")
        if not key:
            raise StoreError(f"{path}: a store must be a folder inside the bucket, "
                             f"e.g. {str(path).rstrip('/')}/out.zarr")
        with translate_errors(path, storage):
            if not fs.exists(bucket):
                raise StoreError(f"{path}: its bucket {bucket!r} does not exist")
            try:
                return bool(fs.ls(inner.rstrip("/"), detail=False, refresh=True))
            except FileNotFoundError:
                return False
    path = Path(path)
    return path.exists() and not (path.is_dir() and not any(path.iterdir()))


def pending(group: zarr.Group) -> np.ndarray:
    """Indices of the images not yet marked done, ascending."""
    return np.flatnonzero(~group["done"][:])


def already_written(group: zarr.Group, indices: list[int]) -> set[int]:
    """Which of ``indices`` the store marks done (one read of their range)."""
    if len(indices) == 0:
        return set()
    start, stop = min(indices), max(indices) + 1
    done = group["done"][start:stop]
    return {int(i) for i in indices if done[i - start]}


def shard_blocks(indices: np.ndarray, images_per_shard: int) -> list[np.ndarray]:
    """``indices`` (ascending) split by the shard they fall in: one block per shard."""
    if len(indices) == 0:
        return []
    shards = np.asarray(indices) // images_per_shard
    return np.split(np.asarray(indices), np.flatnonzero(np.diff(shards)) + 1)


def write_images(group: zarr.Group, indices: list[int], images: np.ndarray,
                 n_iter: list[int], clusters: list[int]) -> None:
    """Write reconstructions ``indices`` into the store's ``group`` (opened ``"r+"``), then
    mark them done, a shard at a time.

    ``indices``, ``n_iter`` and ``clusters`` have length K; ``images`` is
    (K, H, W, 3) float32 in [0, 1], stored as the ``images`` array's dtype
    (uint8 by rounding ``image * 255``).  Each shard's images (one image when
    the store is not sharded) are written as one region, so each stored
    object is written once; images of the shard that are not given keep what
    the store holds.  Called on workers.
    """
    per_shard = shard_size(group)
    values = {"images": _as_stored(images, group["images"].dtype),
              "n_iter": np.asarray(n_iter, np.int16), "cluster": np.asarray(clusters, np.int16),
              "done": np.ones(len(indices), bool)}
    indices = np.asarray(indices)
    order = np.argsort(indices)
    for block in shard_blocks(indices[order], per_shard):
        rows = order[np.searchsorted(indices[order], block)]
        start = int(block[0]) // per_shard * per_shard
        stop = min(start + per_shard, group["done"].shape[0])
        whole = len(block) == stop - start
        for name in ("images", "n_iter", "cluster", "done"):  # done only after the rest
            array = group[name]
            region = np.empty((stop - start, *array.shape[1:]), array.dtype) if whole \
                else array[start:stop]
            region[block - start] = values[name][rows]
            array[start:stop] = region


def write_image(
    path: str | Path, index: int, image: np.ndarray, n_iter: int = 0, cluster: int = 0
) -> None:
    """Write reconstruction ``index`` (:func:`write_images` for one image)."""
    write_images(open_group(path, mode="r+"), [index], image[None], [n_iter], [cluster])


def _as_stored(images: np.ndarray, dtype) -> np.ndarray:
    if dtype == np.uint8:
        return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    return images.astype(dtype)


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

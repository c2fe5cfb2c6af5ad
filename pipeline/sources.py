"""Data sets from files: image folders, CIFAR-10 batches, .npy/.npz arrays, Zarr arrays.

Each source lists its images as items (:mod:`pipeline.datasets`) without
reading their pixels, locally or under a URL (:mod:`pipeline.storage`);
:func:`open_dataset` picks the source a config's ``dataset`` section names,
the bundled photographs (:mod:`pipeline.photos`) included.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from pipeline.datasets import Dataset, DatasetError, RemoteFile, StoredImage, open_array
from pipeline.images import Sizing
from pipeline.photos import photo_tiles, sample
from pipeline.storage import (
    StorageOptions,
    filesystem,
    is_url,
    join,
    location,
    open_file,
    translate_errors,
    zarr_options,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def image_folder(path: str | Path, *, name: str = "folder", sizing: Sizing = Sizing(),
                 storage: StorageOptions = StorageOptions()) -> Dataset:
    """All image files under ``path`` (a folder or a URL prefix), recursively, sorted;
    labels from class sub-folders.

    ImageNet-style layouts (``path/<class>/<image>.JPEG``) give each image the
    index of its class folder among the sorted class folders.  Under a URL
    (``s3://bucket/imagenet/val``) the listing is one request per thousand
    objects, and each image is read by the worker that uses it.
    """
    if is_url(path):
        root, relative = _list_objects(str(path), storage)
        items = [RemoteFile(f"{root}/{n}", storage) for n in relative]
    else:
        local = Path(path).expanduser().resolve()
        if not local.is_dir():
            raise DatasetError(f"{path}: data set folder not found")
        files = sorted(p for p in local.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
        root, relative = str(local), [p.relative_to(local).as_posix() for p in files]
        items = [str(p) for p in files]
    if not relative:
        raise DatasetError(
            f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    tops = [n.split("/")[0] if "/" in n else None for n in relative]
    labels = classes = None
    if all(t is not None for t in tops):
        classes = sorted(set(tops))
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[t] for t in tops], dtype=np.int64)
    return Dataset(name, relative, items, labels, classes, image_size=sizing.size,
                   fit=sizing.fit)


def _list_objects(url: str, storage: StorageOptions) -> tuple[str, list[str]]:
    """``(url, names)``: the image objects under a URL prefix, relative to it, sorted."""
    fs, inner = filesystem(url, storage)
    inner = inner.rstrip("/")
    with translate_errors(url, storage):
        found = fs.find(inner)
    if not found:
        raise DatasetError(f"{url}: data set folder not found (no objects under it)")
    names = sorted(p[len(inner) + 1:] for p in found
                   if p.startswith(inner + "/") and Path(p).suffix.lower() in IMAGE_SUFFIXES)
    return url.rstrip("/"), names


def array_file(path: str | Path, *, name: str = "arrays", sizing: Sizing = Sizing(),
               storage: StorageOptions = StorageOptions()) -> Dataset:
    """Images from a ``.npy`` (N, H, W[, C]) or ``.npz`` (``images``, ``labels``, ``names``),
    a local file or a URL.

    A ``.npy`` is read where its images are used, one image at a time
    (memory-mapped, or by range requests under a URL); a ``.npz`` is
    compressed, so it is read whole.
    """
    where = location(path)
    if not _is_file(where, storage):
        raise DatasetError(f"{path}: array file not found")
    labels = names = None
    suffix = Path(str(where)).suffix
    try:
        if suffix == ".npz":
            with open_file(where, storage) as f, np.load(io.BytesIO(f.read()),
                                                          allow_pickle=False) as npz:
                key = next((k for k in ("images", "x", "arr_0") if k in npz), None)
                if key is None:
                    raise DatasetError(f"{path}: no 'images' array (keys: {sorted(npz.files)})")
                images = npz[key]
                labels = npz["labels"] if "labels" in npz else None
                names = [str(n) for n in npz["names"]] if "names" in npz else None
        else:
            images = open_array(str(where), None, storage if is_url(where) else None)
    except (ValueError, OSError) as err:
        raise DatasetError(f"{path}: not a readable NumPy array file ({err})") from None
    if images.ndim not in (3, 4):
        raise DatasetError(f"{path}: expected images of shape (N, H, W[, C]), got {images.shape}")
    if suffix != ".npz":  # read where used: each image is (file, index)
        source = str(where) if is_url(where) else str(where.resolve())
        return _from_stored(name, source, len(images), sizing=sizing,
                            storage=storage if is_url(where) else None)
    return _from_array(name, images, sizing=sizing, labels=labels, names=names)


def _is_file(path: str | Path, storage: StorageOptions) -> bool:
    if not is_url(path):
        return Path(path).is_file()
    fs, inner = filesystem(str(path), storage)
    with translate_errors(path, storage):
        return fs.isfile(inner)


def zarr_images(path: str | Path, *, name: str = "zarr", sizing: Sizing = Sizing(),
                storage: StorageOptions = StorageOptions()) -> Dataset:
    """Images from a Zarr array (N, H, W[, C]), or from the ``images`` array of a Zarr group
    (as the reconstruct command writes: its ``names`` and ``labels`` are used too); a local
    path or a URL."""
    import zarr

    where = location(path)
    try:
        with translate_errors(where, storage):
            node = zarr.open(where, mode="r", storage_options=zarr_options(where, storage))
    except (FileNotFoundError, ValueError, zarr.errors.NodeTypeValidationError) as err:
        raise DatasetError(f"{path}: not a readable Zarr array or group ({err})") from None
    key = ""
    labels = names = None
    if isinstance(node, zarr.Group):
        if "images" not in node:
            raise DatasetError(f"{path}: a Zarr group without an 'images' array "
                               f"(arrays: {sorted(node.array_keys())})")
        key = "images"
        names = [str(n) for n in node["names"][:]] if "names" in node else None
        labels = node["labels"][:] if "labels" in node else None
        node = node["images"]
    if node.ndim not in (3, 4):
        raise DatasetError(f"{path}: expected images of shape (N, H, W[, C]), got {node.shape}")
    source = where if is_url(where) else str(where.resolve())
    return _from_stored(name, source, node.shape[0], sizing=sizing, key=key, labels=labels,
                        names=names, storage=storage if is_url(where) else None)


def _from_stored(name: str, path: str, count: int, *, sizing: Sizing, key: str | None = None,
                 labels: np.ndarray | None = None, names: list[str] | None = None,
                 storage: StorageOptions | None = None) -> Dataset:
    """Image ``i`` of the array at ``path`` (``key``: in a Zarr group) as item ``i``."""
    items = [StoredImage(path, i, key, storage) for i in range(count)]
    return _from_array(name, items, sizing=sizing, labels=labels, names=names)


def cifar10(path: str | Path, *, split: str = "test", name: str = "cifar10",
            sizing: Sizing = Sizing(), storage: StorageOptions = StorageOptions()) -> Dataset:
    """CIFAR-10 python batches (``cifar-10-batches-py``, a folder or a URL): ``split`` is
    test, train or all."""
    root = location(path)
    batches = {"test": ["test_batch"], "train": [f"data_batch_{i}" for i in range(1, 6)]}
    batches["all"] = batches["train"] + batches["test"]
    if split not in batches:
        raise DatasetError(f"cifar10 split must be one of {sorted(batches)}, got {split!r}")
    images, labels, names = [], [], []
    for batch in batches[split]:
        data = _read_cifar_batch(join(root, batch), storage)
        images.append(data[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(data[b"labels"])
        names.extend(f"{batch}/{n.decode()}" for n in data[b"filenames"])
    return _from_array(name, np.concatenate(images), sizing=sizing, labels=np.array(labels),
                       names=names)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only, so a batch file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: str | Path, storage: StorageOptions) -> dict:
    if not _is_file(path, storage):
        raise DatasetError(f"{path}: CIFAR-10 batch not found")
    try:
        with open_file(path, storage) as f:
            data = _ArrayUnpickler(f, encoding="bytes").load()
        if not {b"data", b"labels", b"filenames"} <= set(data):
            raise DatasetError(f"{path}: not a CIFAR-10 batch (keys {sorted(data)})")
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as err:
        raise DatasetError(f"{path}: not a readable CIFAR-10 batch ({err})") from None
    return data


def _from_array(name: str, images, *, sizing: Sizing, labels: np.ndarray | None = None,
                names: list[str] | None = None) -> Dataset:
    """Items (arrays or :class:`StoredImage`) as a data set; names ``000000``... if none."""
    if len(images) == 0:
        raise DatasetError(f"{name}: the data set is empty")
    names = names or [f"{i:06d}" for i in range(len(images))]
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    return Dataset(name, list(names), list(images), labels, None, image_size=sizing.size,
                   fit=sizing.fit)


def open_dataset(config, name: str, storage: StorageOptions = StorageOptions()) -> Dataset:
    """The data set a :class:`pipeline.config.DatasetConfig` describes; a ``path`` that is
    a URL is reached with ``storage`` (the config's ``storage_options``)."""
    sizing = Sizing(config.image_size, config.fit)
    path = location(config.path) if config.path else None  # file:// too
    if config.source == "photos":
        return photo_tiles(config.count, name=name, seed=config.seed)
    if config.source == "sample":
        dataset = sample(name=name)
        if config.image_size and config.image_size != dataset.image_size:
            dataset.image_size, dataset.fit = config.image_size, config.fit
        return dataset
    if not config.path:
        raise DatasetError(f"{name}: dataset.path is required for source {config.source!r}")
    if config.source == "folder":
        return image_folder(path, name=name, sizing=sizing, storage=storage)
    if config.source == "cifar10":
        return cifar10(path, split=config.split, name=name, sizing=sizing,
                       storage=storage)
    if config.source == "zarr":
        return zarr_images(path, name=name, sizing=sizing, storage=storage)
    return array_file(path, name=name, sizing=sizing, storage=storage)

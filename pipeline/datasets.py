"""Data sets as lists of items: what a worker reads, never the pixels on the client.

A :class:`Dataset` is a list of images known by name, not the pixels: each
image is an *item* that :func:`load_item` turns into a ``(size, size, 3)``
float32 image in [0, 1]: a file path, a :class:`RemoteFile`, a
:class:`StoredImage` (one image of a ``.npy`` or Zarr array), a
:class:`pipeline.photos.PhotoTile` (a tile of a bundled photograph), or a
small uint8 array (CIFAR-10, ``.npz``, the 350-tile sample).  Items are
cheap to send to a Dask worker, so images are read where they are used and
the client never holds a whole data set.  The sources that make data sets
are in :mod:`pipeline.sources` and :mod:`pipeline.photos`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.images import Fit, ImageReadError, fit_image, read_image, to_float_rgb
from pipeline.storage import StorageOptions, filesystem, is_url, open_file, zarr_options


class DatasetError(UserError, ValueError):
    """A data set cannot be read: missing path, empty, unknown format."""


@dataclass
class Dataset:
    """Names, labels and per-image items of one data set.

    Attributes
    ----------
    name : str
        Name of the data set (its config name).
    names : list of str
        Source name of each image, e.g. its path relative to the folder.
    items : list
        What :func:`load_item` reads: a path (str), an (H, W, C) array, a
        :class:`StoredImage` or a :class:`pipeline.photos.PhotoTile`.
    labels : (N,) int64 ndarray or None
        Class label of each image where the source knows it.
    classes : list of str
        Class names of the labels, where known (folder names).
    image_size : int or None
        Side of the square images after :func:`pipeline.images.fit_image`; None keeps sizes.
    fit : {"resize", "center_crop", "none"}
        How images of another size are brought to ``image_size``.
    sources : (N,) int64 ndarray or None
        The source each image was cut from (the photograph of a tile), where
        several images share one; None: every image is its own source.  What
        is held out of learning is held out by source
        (:func:`pipeline.split.split_images`).
    """

    name: str
    names: list[str]
    items: list
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    image_size: int | None = None
    fit: Fit = "center_crop"
    sources: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> np.ndarray:
        """Image ``index`` as (H, W, 3) float32 in [0, 1]."""
        return load_item(self.items[index], size=self.image_size, fit=self.fit)

    def side(self) -> int:
        """Side of the square images the data set yields.

        ``image_size`` when set; else the first image's side, which every
        other image is then brought to.
        """
        if self.image_size:
            return self.image_size
        image = self.load(0)
        if image.shape[0] != image.shape[1]:
            raise ImageReadError(
                f"image_size is not set and the image is not square "
                f"({image.shape[0]}x{image.shape[1]}); set dataset.image_size in the config",
                self.names[0])
        return int(image.shape[0])


class Images:
    """Some items of a data set, read on demand: ``images[indices]`` is (K, S, S, 3).

    A stage that walks over many images in mini-batches (the DAE's training,
    the online dictionary learner) takes one of these where it would take an
    (N, S, S, 3) array, so only a mini-batch is ever in memory.  Cheap to
    send to a worker: it holds the items, not the pixels.
    """

    def __init__(self, items: list, *, size: int | None, fit: Fit = "center_crop"):
        self.items, self.size, self.fit = list(items), size, fit

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, indices) -> np.ndarray:
        """(K, S, S, 3) float32 in [0, 1] for an array or list of K indices."""
        chosen = np.arange(len(self.items))[indices]
        return np.stack([load_item(self.items[i], size=self.size, fit=self.fit)
                         for i in np.atleast_1d(chosen)])


@dataclass(frozen=True)
class StoredImage:
    """Image ``index`` of the array at ``path``: a ``.npy`` file (read memory-mapped) or,
    with ``key``, the array ``key`` of a Zarr group (``key=""``: a Zarr array itself)."""

    path: str
    index: int
    key: str | None = None
    storage: StorageOptions | None = None

    def read(self) -> np.ndarray:
        array = open_array(self.path, self.key, self.storage)
        return to_float_rgb(np.asarray(array[self.index]))


@dataclass(frozen=True)
class RemoteFile:
    """An image file in object storage: ``url`` read with ``storage``'s options."""

    url: str
    storage: StorageOptions

    def read(self) -> np.ndarray:
        return read_image(self.url, self.storage)


@functools.lru_cache(maxsize=8)
def open_array(path: str, key: str | None, storage: StorageOptions | None = None):
    """The array of a :class:`StoredImage`, opened once per process.

    ``key`` None is a ``.npy`` file: memory-mapped when local, read image by
    image with range requests under a URL; otherwise a Zarr array or group.
    """
    if key is None:
        if is_url(path):
            return _RemoteNpy(path, storage or StorageOptions())
        return np.load(path, mmap_mode="r", allow_pickle=False)
    import zarr

    node = zarr.open(path, mode="r", storage_options=zarr_options(path, storage or
                                                                   StorageOptions()))
    return node[key] if key else node


class _RemoteNpy:
    """A ``.npy`` object read one leading-axis slice at a time (``array[i]``)."""

    def __init__(self, url: str, storage: StorageOptions):
        self.url, self.storage = url, storage
        with open_file(url, storage) as f:
            version = np.lib.format.read_magic(f)
            readers = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ValueError(f"{url}: .npy format version {version} is not supported")
            shape, fortran, dtype = readers[version](f)
            self.offset = f.tell()
        if fortran or dtype.hasobject:
            raise ValueError(f"{url}: only C-ordered plain arrays can be read lazily")
        self.shape, self.dtype, self.ndim = shape, dtype, len(shape)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        fs, inner = filesystem(self.url, self.storage)
        start = self.offset + int(index) * self.row_bytes
        data = fs.cat_file(inner, start=start, end=start + self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(self.shape[1:])


def load_item(item, *, size: int | None, fit: Fit = "center_crop") -> np.ndarray:
    """Read one data-set item as (size, size, 3) float32 in [0, 1].

    ``item`` is a file path, an array, or an object with a ``read()`` method
    (:class:`StoredImage`, :class:`pipeline.photos.PhotoTile`).
    """
    if isinstance(item, (str, Path)):
        image = read_image(item)
    else:
        image = item.read() if hasattr(item, "read") else to_float_rgb(item)
    try:
        return fit_image(image, size, fit)
    except ImageReadError as err:
        source = item if isinstance(item, (str, Path)) else getattr(item, "url", None)
        raise ImageReadError(err.reason, source) from None

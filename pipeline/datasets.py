"""Image sources: folders, CIFAR-10 batches, .npy/.npz arrays, Zarr arrays, the photographs.

A :class:`Dataset` is a list of images known by name, not the pixels: each
image is an *item* that :func:`load_item` turns into a ``(size, size, 3)``
float32 image in [0, 1]: a file path, a :class:`StoredImage` (one image of a
``.npy`` or Zarr array), a :class:`PhotoTile` (a tile of a bundled
photograph), or a small uint8 array (CIFAR-10, ``.npz``, the 350-tile
sample).  Items are cheap to send to a Dask worker, so images are read where
they are used and the client never holds a whole data set.
"""

from __future__ import annotations

import functools
import io
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from skimage.transform import resize as _resize

from pipeline.errors import UserError
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

#: Largest image decoded, in pixels (50 megapixels: 600 MB as float32 RGB).
#: The header is checked before any pixel is decoded, so a tiny file that
#: declares a huge image (a decompression bomb) costs nothing.
MAX_PIXELS = 50_000_000
Fit = Literal["resize", "center_crop", "none"]


class DatasetError(UserError, ValueError):
    """A data set cannot be read: missing path, empty, unknown format."""


class ImageReadError(UserError, ValueError):
    """One image cannot be read or converted.

    ``reason`` says why, without the file's name; ``source`` is the file (or
    the image's name) where known.  The message is ``"<source>: <reason>"``,
    so each names the file once: a run's record of failed images maps each
    image's name to its ``reason``.
    """

    def __init__(self, reason: str, source: str | Path | None = None):
        self.reason, self.source = reason, None if source is None else str(source)
        super().__init__(f"{source}: {reason}" if source is not None else reason)


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
        :class:`StoredImage` or a :class:`PhotoTile`.
    labels : (N,) int64 ndarray or None
        Class label of each image where the source knows it.
    classes : list of str
        Class names of the labels, where known (folder names).
    image_size : int or None
        Side of the square images after :func:`fit_image`; None keeps sizes.
    fit : {"resize", "center_crop", "none"}
        How images of another size are brought to ``image_size``.
    sources : (N,) int64 ndarray or None
        The source each image was cut from (the photograph of a tile), where
        several images share one; None: every image is its own source.  What
        is held out of learning is held out by source
        (:func:`flows.learn.split_images`).
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


# --- one image -------------------------------------------------------------------


def to_float_rgb(array: np.ndarray) -> np.ndarray:
    """Convert greyscale, RGBA, uint8, uint16 or float pixels to (H, W, 3) float32 in [0, 1].

    Integer images are scaled by their type's range (uint8 by 255, uint16 by
    65535); float images are taken to be in [0, 1] and clipped; an alpha
    channel is dropped; one channel is repeated three times.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ImageReadError(f"expected an (H, W[, C]) image, got shape {array.shape}")
    if array.shape[-1] in (1, 2):  # grey, grey + alpha
        array = np.repeat(array[..., :1], 3, axis=-1)
    array = array[..., :3]
    if array.dtype == bool:
        return array.astype(np.float32)
    if array.dtype.kind in "ui":
        scale = 65535.0 if array.dtype.itemsize > 1 else 255.0
        return np.clip(array.astype(np.float32) / scale, 0.0, 1.0)
    if not np.all(np.isfinite(array)):
        raise ImageReadError("image contains NaN or Inf values")
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def read_image(path: str | Path, storage: StorageOptions | None = None) -> np.ndarray:
    """Read an image file (a local path or a URL) as (H, W, 3) float32 in [0, 1].

    Palette, CMYK, greyscale, RGBA and 16-bit images are converted; a URL is
    opened with ``storage`` (:mod:`pipeline.storage`).

    Raises
    ------
    ImageReadError
        Naming the file: unreadable, truncated, not an image, or too large.
    """
    try:
        with warnings.catch_warnings():  # Pillow warns past 89 Mpx; MAX_PIXELS decides here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(_fetch(path, storage) if is_url(path) else path)
        with img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageReadError(
                    f"declares {img.width}x{img.height} pixels, more than the "
                    f"{MAX_PIXELS:,} this pipeline decodes: a decompression bomb?", path)
            img.load()
            if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
                return to_float_rgb(np.asarray(img).astype(np.uint16))
            if img.mode == "F":
                return to_float_rgb(np.asarray(img))
            return to_float_rgb(np.asarray(img.convert("RGB")))
    except ImageReadError as err:
        raise ImageReadError(err.reason, path) from None
    except UnidentifiedImageError:
        raise ImageReadError("cannot read image (not an image file that Pillow knows)",
                             path) from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        # An OSError's strerror ("Permission denied") leaves out the path it would repeat.
        raise ImageReadError(f"cannot read image ({getattr(err, 'strerror', None) or err})",
                             path) from None


def _fetch(url: str, storage: StorageOptions | None) -> io.BytesIO:
    """An object's bytes, fetched in one request (images are small)."""
    fs, inner = filesystem(url, storage or StorageOptions())
    return io.BytesIO(fs.cat_file(inner))


def fit_image(image: np.ndarray, size: int | None, fit: Fit = "center_crop") -> np.ndarray:
    """Bring an (H, W, 3) image to (size, size, 3).

    ``"resize"`` scales both sides to ``size`` (the reference's behaviour,
    aspect ratio not kept); ``"center_crop"`` scales the shorter side to
    ``size`` and cuts the centre; ``"none"`` only checks the size.
    """
    if size is None or image.shape[:2] == (size, size):
        return image
    if fit == "none":
        h, w = image.shape[:2]
        raise ImageReadError(f"expected {size}x{size} pixels, got {h}x{w}")
    h, w = image.shape[:2]
    if fit == "center_crop":
        scale = size / min(h, w)
        h, w = max(size, round(h * scale)), max(size, round(w * scale))
    else:
        h, w = size, size
    image = _resize(image, (h, w), order=1, anti_aliasing=True, preserve_range=True)
    top, left = (h - size) // 2, (w - size) // 2
    return np.clip(image[top : top + size, left : left + size], 0, 1).astype(np.float32)


@dataclass(frozen=True)
class StoredImage:
    """Image ``index`` of the array at ``path``: a ``.npy`` file (read memory-mapped) or,
    with ``key``, the array ``key`` of a Zarr group (``key=""``: a Zarr array itself)."""

    path: str
    index: int
    key: str | None = None
    storage: StorageOptions | None = None

    def read(self) -> np.ndarray:
        array = _open_array(self.path, self.key, self.storage)
        return to_float_rgb(np.asarray(array[self.index]))


@dataclass(frozen=True)
class RemoteFile:
    """An image file in object storage: ``url`` read with ``storage``'s options."""

    url: str
    storage: StorageOptions

    def read(self) -> np.ndarray:
        return read_image(self.url, self.storage)


@dataclass(frozen=True)
class PhotoTile:
    """A ``size`` x ``size`` tile of a shipped photograph (:func:`photographs`):
    the photograph scaled so its shorter side is ``side``, cut at ``(row, col)``,
    mirrored left-right when ``flip``."""

    photo: str
    side: int
    row: int
    col: int
    size: int
    flip: bool = False

    def read(self) -> np.ndarray:
        tile = _scaled_photo(self.photo, self.side)[self.row:self.row + self.size,
                                                    self.col:self.col + self.size]
        return to_float_rgb(tile[:, ::-1] if self.flip else tile)


def load_item(item, *, size: int | None, fit: Fit = "center_crop") -> np.ndarray:
    """Read one data-set item as (size, size, 3) float32 in [0, 1].

    ``item`` is a file path, an array, or an object with a ``read()`` method
    (:class:`StoredImage`, :class:`PhotoTile`).
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


# --- sources ---------------------------------------------------------------------


def image_folder(path: str | Path, *, name: str = "folder",
                 storage: StorageOptions = StorageOptions(), **fit_args) -> Dataset:
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
    return Dataset(name, relative, items, labels, classes, **fit_args)


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


def array_file(path: str | Path, *, name: str = "arrays",
               storage: StorageOptions = StorageOptions(), **fit_args) -> Dataset:
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
            images = _open_array(str(where), None, storage if is_url(where) else None)
    except (ValueError, OSError) as err:
        raise DatasetError(f"{path}: not a readable NumPy array file ({err})") from None
    if images.ndim not in (3, 4):
        raise DatasetError(f"{path}: expected images of shape (N, H, W[, C]), got {images.shape}")
    if suffix != ".npz":  # read where used: each image is (file, index)
        source = str(where) if is_url(where) else str(where.resolve())
        return _from_stored(name, source, None, len(images), None, None,
                            storage=storage if is_url(where) else None, **fit_args)
    return _from_array(name, images, labels, names, **fit_args)


def _is_file(path: str | Path, storage: StorageOptions) -> bool:
    if not is_url(path):
        return Path(path).is_file()
    fs, inner = filesystem(str(path), storage)
    with translate_errors(path, storage):
        return fs.isfile(inner)


def zarr_images(path: str | Path, *, name: str = "zarr",
                storage: StorageOptions = StorageOptions(), **fit_args) -> Dataset:
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
    return _from_stored(name, source, key, node.shape[0], labels, names,
                        storage=storage if is_url(where) else None, **fit_args)


def _from_stored(name, path, key, count, labels, names, *, storage=None, **fit_args) -> Dataset:
    items = [StoredImage(path, i, key, storage) for i in range(count)]
    return _from_array(name, items, labels, names, **fit_args)


@functools.lru_cache(maxsize=8)
def _open_array(path: str, key: str | None, storage: StorageOptions | None = None):
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


def cifar10(path: str | Path, *, split: str = "test", name: str = "cifar10",
            storage: StorageOptions = StorageOptions(), **fit_args) -> Dataset:
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
    return _from_array(name, np.concatenate(images), np.array(labels), names, **fit_args)


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


def _from_array(name, images, labels, names, **fit_args) -> Dataset:
    if len(images) == 0:
        raise DatasetError(f"{name}: the data set is empty")
    names = names or [f"{i:06d}" for i in range(len(images))]
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    return Dataset(name, list(names), list(images), labels, None, **fit_args)


def open_dataset(config, name: str, storage: StorageOptions = StorageOptions()) -> Dataset:
    """The data set a :class:`pipeline.config.DatasetConfig` describes; a ``path`` that is
    a URL is reached with ``storage`` (the config's ``storage_options``)."""
    fit_args = {"image_size": config.image_size, "fit": config.fit, "storage": storage}
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
        return image_folder(path, name=name, **fit_args)
    if config.source == "cifar10":
        return cifar10(path, split=config.split, name=name, **fit_args)
    if config.source == "zarr":
        return zarr_images(path, name=name, **fit_args)
    return array_file(path, name=name, **fit_args)


# --- the built-in sample ------------------------------------------------------------


def bundled_photographs() -> dict[str, np.ndarray]:
    """Colour photographs that scikit-image and scikit-learn install with themselves."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    return {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "motorcycle": data.stereo_motorcycle()[0],
        "hubble": data.hubble_deep_field(),
        "china": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"),
    }


def sample(
    *, tile: int = 64, scales: tuple[int, ...] = (192, 320), name: str = "sample"
) -> Dataset:
    """The embedded sample: real photographs cut into ``tile`` x ``tile`` images.

    Each photograph is scaled so its shorter side is each of ``scales`` and
    cut into non-overlapping tiles; with the defaults that is 350 images of
    64x64.  Built from files that installed packages ship, so nothing is
    downloaded.  Labels are the index of the source photograph.
    """
    photos = bundled_photographs()
    names, items, labels = [], [], []
    for label, (photo_name, photo) in enumerate(photos.items()):
        photo = to_float_rgb(photo)
        for side in scales:
            h, w = photo.shape[:2]
            scaled = _resize(
                photo, (round(h * side / min(h, w)), round(w * side / min(h, w))),
                order=1, anti_aliasing=True,
            )
            for r in range(scaled.shape[0] // tile):
                for c in range(scaled.shape[1] // tile):
                    cut = scaled[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
                    items.append(np.round(np.clip(cut, 0, 1) * 255).astype(np.uint8))
                    names.append(f"{photo_name}/s{side}_r{r}_c{c}")
                    labels.append(label)
    return Dataset(
        name, names, items, np.array(labels, np.int64), list(photos), image_size=tile, fit="none"
    )


#: Shorter sides the photographs are scaled to for :func:`photo_tiles`, in pixels.
PHOTO_SIDES = (96, 128, 160, 192, 256, 320, 384, 448, 512)


def photographs() -> dict[str, np.ndarray]:
    """Every colour photograph the dependencies ship: 12 files of 11 scenes.

    :func:`bundled_photographs` (scikit-image's astronaut, cat, coffee,
    rocket, the left view of its stereo motorcycle and the Hubble deep
    field; scikit-learn's China and flower), and scikit-image's right view of
    the motorcycle (the same scene: :data:`SCENES`), its micrograph
    (immunohistochemistry) and its retina, and matplotlib's portrait of
    Grace Hopper.  Not used: scikit-image's synthetic images and its
    greyscale photographs (the dictionaries are joint colour ones).
    """
    from matplotlib import cbook
    from skimage import data

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as portrait:
        hopper = np.asarray(portrait.convert("RGB"))
    return {**bundled_photographs(), "motorcycle_right": data.stereo_motorcycle()[1],
            "micrograph": data.immunohistochemistry(), "retina": data.retina(),
            "hopper": hopper}


#: The scene of a photograph of :func:`photographs`, where two show one scene
#: (the rest are a scene each): such photographs are one source, so they are
#: held out together.
SCENES = {"motorcycle_right": "motorcycle"}


def photo_tiles(count: int = 20000, *, tile: int = 64, seed: int = 0,
                name: str = "photos") -> Dataset:
    """Many tiles of the photographs: the embedded data set to learn from.

    ``count`` random ``tile`` x ``tile`` tiles (a seeded draw): a scene
    chosen at random, then one of its photographs, scaled so its shorter
    side is one of :data:`PHOTO_SIDES` (those not larger than its own), cut
    at a random position, mirrored left-right half of the time.  Items are
    :class:`PhotoTile` descriptions, drawn on the worker that uses them, so
    the client holds no pixels.  Labels and sources are the index of the
    scene (:data:`SCENES`), so tiles of one scene are held out together.
    """
    photos = _photographs()
    shapes = {photo: image.shape[:2] for photo, image in photos.items()}
    scenes: dict[str, list[str]] = {}
    for photo in photos:
        scenes.setdefault(SCENES.get(photo, photo), []).append(photo)
    rng = np.random.default_rng(seed)
    names, items, labels = [], [], []
    for _ in range(count):
        label = int(rng.integers(len(scenes)))
        choices = list(scenes.values())[label]
        photo = choices[rng.integers(len(choices))] if len(choices) > 1 else choices[0]
        h, w = shapes[photo]
        sides = [side for side in PHOTO_SIDES if side <= min(h, w)]
        side = int(sides[rng.integers(len(sides))])
        height, width = _scaled_shape(h, w, side)
        row, col = int(rng.integers(height - tile + 1)), int(rng.integers(width - tile + 1))
        item = PhotoTile(photo, side, row, col, tile, bool(rng.integers(2)))
        items.append(item)
        names.append(f"{photo}/s{side}_y{row}_x{col}{'_flip' if item.flip else ''}")
        labels.append(label)
    labels = np.array(labels, np.int64)
    return Dataset(name, names, items, labels, list(scenes), image_size=tile, fit="none",
                   sources=labels)


def _scaled_shape(h: int, w: int, side: int) -> tuple[int, int]:
    return round(h * side / min(h, w)), round(w * side / min(h, w))


@functools.lru_cache(maxsize=128)
def _scaled_photo(photo: str, side: int) -> np.ndarray:
    """A bundled photograph scaled to shorter side ``side``, uint8, kept per process
    (every photograph at every side of :data:`PHOTO_SIDES`: about 30 MB)."""
    image = to_float_rgb(_photographs()[photo])
    scaled = _resize(image, _scaled_shape(*image.shape[:2], side), order=1,
                     anti_aliasing=True)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _photographs() -> dict[str, np.ndarray]:
    """:func:`photographs`, read once per process (never modified)."""
    return photographs()

"""One image: decoded from its file, converted to float RGB, brought to one size.

Every data source ends in these functions (:mod:`pipeline.datasets`), so
images of every kind are read, converted and checked alike: (H, W, 3)
float32 in [0, 1], with an :class:`ImageReadError` that names the file.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from skimage.transform import resize as _resize

from pipeline.errors import UserError
from pipeline.storage import StorageOptions, filesystem, is_url

#: Largest image decoded, in pixels (50 megapixels: 600 MB as float32 RGB).
#: The header is checked before any pixel is decoded, so a tiny file that
#: declares a huge image (a decompression bomb) costs nothing.
MAX_PIXELS = 50_000_000
Fit = Literal["resize", "center_crop", "none"]


@dataclass(frozen=True)
class Sizing:
    """How a data set's images are brought to one size: ``size`` x ``size`` pixels by
    ``fit`` (:func:`fit_image`); ``size`` None keeps each image's own size."""

    size: int | None = None
    fit: Fit = "center_crop"



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


def scaled_shape(h: int, w: int, side: int) -> tuple[int, int]:
    """The (height, width) of an h x w image scaled so that its shorter side is ``side``."""
    return round(h * side / min(h, w)), round(w * side / min(h, w))

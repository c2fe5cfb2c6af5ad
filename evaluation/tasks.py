"""Classification tasks built from data that installed packages ship, for the evaluation.

Each task returns train and test images as (N, 32, 32, 3) float32 in [0, 1]
with (N,) int64 labels.  Nothing is downloaded.

- :func:`scenes`: ten classes, one per colour photograph that scikit-image and
  scikit-learn install; training patches come from the left part of each
  photograph and test patches from the right part, which does not overlap it,
  so a test patch is never a shifted copy of a training patch.
- :func:`digits`: scikit-learn's 1,797 handwritten digits (8x8, 17 grey
  levels), upscaled to 32x32 and repeated over three channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.transform import resize

from pipeline.datasets import DatasetError, bundled_photographs, to_float_rgb

TASKS = ("scenes", "digits")


@dataclass
class Task:
    """Train and test split of a classification task; images (N, S, S, 3) in [0, 1]."""

    name: str
    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def scene_photographs() -> dict[str, np.ndarray]:
    """The ten bundled colour photographs: the sample's eight, a micrograph and a retina."""
    from skimage import data

    return {**bundled_photographs(), "micrograph": data.immunohistochemistry(),
            "retina": data.retina()}


def scenes(*, train_per_class: int = 200, test_per_class: int = 20, size: int = 32,
           scale: int = 160, train_share: float = 0.6, seed: int = 0) -> Task:
    """Random ``size`` x ``size`` patches of each photograph, scaled so its shorter side is
    ``scale`` pixels: training patches from its left ``train_share`` of the width, test
    patches from the rest."""
    rng = np.random.default_rng(seed)
    photos = scene_photographs()
    parts = {"train": ([], []), "test": ([], [])}
    for label, photo in enumerate(photos.values()):
        photo = to_float_rgb(photo)
        h, w = photo.shape[:2]
        photo = resize(photo, (round(h * scale / min(h, w)), round(w * scale / min(h, w))),
                       order=1, anti_aliasing=True).astype(np.float32)
        h, w = photo.shape[:2]
        split = round(w * train_share)
        for part, count, (lo, hi) in (("train", train_per_class, (0, split - size)),
                                      ("test", test_per_class, (split, w - size))):
            for _ in range(count):
                r, c = rng.integers(0, h - size + 1), rng.integers(lo, hi + 1)
                parts[part][0].append(photo[r:r + size, c:c + size])
                parts[part][1].append(label)
    (train, train_y), (test, test_y) = parts["train"], parts["test"]
    return Task("scenes", list(photos), np.clip(np.stack(train), 0, 1),
                np.array(train_y, np.int64), np.clip(np.stack(test), 0, 1),
                np.array(test_y, np.int64))


def digits(*, test_size: int = 200, size: int = 32, train_size: int | None = None,
           seed: int = 0) -> Task:
    """scikit-learn's digits, upscaled to ``size`` (bilinear); a seeded split of
    ``test_size`` test images, the rest (or ``train_size`` of them) for training."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = resize(data.images / 16.0, (len(data.images), size, size), order=1,
                    anti_aliasing=False).astype(np.float32)
    images = np.repeat(np.clip(images, 0, 1)[..., None], 3, axis=-1)
    order = np.random.default_rng(seed).permutation(len(images))
    test, train = order[:test_size], order[test_size:]
    if train_size is not None:
        train = train[:train_size]
    return Task("digits", [str(d) for d in range(10)], images[train],
                data.target[train].astype(np.int64), images[test],
                data.target[test].astype(np.int64))


def load_task(name: str, *, test_images: int = 200, train_images: int = 2000,
              seed: int = 0) -> Task:
    """:func:`scenes` or :func:`digits` by name, with about ``test_images`` and
    ``train_images`` images (scenes: a tenth of each per class; digits has at most
    1,597 training images)."""
    if name == "scenes":
        return scenes(train_per_class=max(1, train_images // 10),
                      test_per_class=max(1, test_images // 10), seed=seed)
    if name == "digits":
        return digits(test_size=test_images, train_size=train_images, seed=seed)
    raise ValueError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}")


def from_dataset(dataset, *, test_images: int = 200, seed: int = 0) -> Task:
    """A test-only task from a user's data set (a seeded random subset with labels).

    ``dataset`` is a :class:`pipeline.datasets.Dataset` with labels; there
    are no training images (the user brings the classifier), so the
    evaluation has no retrained rows.
    """
    from pipeline.datasets import load_item

    if dataset.labels is None or np.all(dataset.labels < 0):
        raise DatasetError(f"{dataset.name}: the evaluation needs class labels, and this data "
                         "set has none (an image folder needs one sub-folder per class)")
    labelled = np.flatnonzero(dataset.labels >= 0)
    chosen = np.sort(np.random.default_rng(seed).choice(
        labelled, min(test_images, len(labelled)), replace=False))
    size = dataset.side()
    images = np.stack([load_item(dataset.items[i], size=size, fit=dataset.fit) for i in chosen])
    classes = dataset.classes or [str(c) for c in range(int(dataset.labels.max()) + 1)]
    empty = np.zeros((0, size, size, 3), np.float32)
    return Task(dataset.name, classes, empty, np.zeros(0, np.int64), images,
                dataset.labels[chosen].astype(np.int64))

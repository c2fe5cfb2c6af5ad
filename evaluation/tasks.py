"""Classification tasks built from data that installed packages ship, for the evaluation.

Each task returns train and test images as (N, 32, 32, 3) float32 in [0, 1]
with (N,) int64 labels.  Nothing is downloaded.

- :func:`textures` (the default): nine classes, one per greyscale photograph
  that scikit-image installs (brick, grass, coins, a page of text, ...); each
  patch is standardised to one mean and contrast, so only texture and
  structure tell the classes apart.  An undefended classifier falls to a few
  per cent under 8/255 PGD, as on CIFAR-10 and ImageNet.  The defense's
  shipped bases were learned from colour photographs only, so none of these
  photographs trained any stage.
- :func:`scenes`: a sanity task; ten classes, one per colour photograph that
  scikit-image and scikit-learn install.  Colour alone separates several of
  them, so an undefended classifier keeps about a quarter of its accuracy at
  8/255: not comparable with the literature.
- In both, training patches come from the left part of each photograph and
  test patches from the right part, which does not overlap it, so a test
  patch is never a shifted copy of a training patch.
- :func:`digits`: scikit-learn's 1,797 handwritten digits (8x8, 17 grey
  levels), upscaled to 32x32 and repeated over three channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.transform import rescale, resize

from pipeline.datasets import DatasetError
from pipeline.images import to_float_rgb
from pipeline.photos import bundled_photographs

TASKS = ("textures", "scenes", "digits")

#: The greyscale photographs of :func:`textures`, by their ``skimage.data`` names.
TEXTURES = ("brick", "cell", "clock", "coins", "grass", "gravel", "moon", "page", "text")


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


def textures(*, train_per_class: int = 200, test_per_class: int = 20, size: int = 32,
             contrast: float = 0.1, train_share: float = 0.6, seed: int = 0) -> Task:
    """Random ``size`` x ``size`` grey patches of the :data:`TEXTURES` photographs at half
    their resolution, each standardised to mean 0.5 and standard deviation ``contrast``
    (clipped to [0, 1]): training patches from the left ``train_share`` of each
    photograph's width, test patches from the rest.

    The standardisation takes brightness and contrast away as cues.  A low
    ``contrast`` keeps clipping rare (0.5 is five deviations from either end)
    and makes the task as fragile as natural-image benchmarks: with 222
    training and 22 test patches per class (``load_task``'s defaults), a
    :class:`~evaluation.classifier.SmallCNN` trained for 20 epochs scores 0.874
    clean and 0.005 under 50-step PGD at 8/255 (seed 0; seed 1: 0.833 and
    0.005).
    """
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = {name: to_float_rgb(getattr(data, name)()).mean(-1) for name in TEXTURES}
    photos = {name: rescale(photo, 0.5, anti_aliasing=True) for name, photo in photos.items()}
    train, test = _split_patches(photos, train_per_class, test_per_class, size, train_share,
                                 rng)

    def standardised(patches: np.ndarray) -> np.ndarray:
        mean = patches.mean((1, 2), keepdims=True)
        deviation = np.maximum(patches.std((1, 2), keepdims=True), 1e-3)
        grey = np.clip((patches - mean) / deviation * contrast + 0.5, 0, 1)
        return np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)

    return Task("textures", list(TEXTURES), standardised(train[0]), train[1],
                standardised(test[0]), test[1])


def _split_patches(photos: dict[str, np.ndarray], train_per_class: int, test_per_class: int,
                   size: int, train_share: float, rng: np.random.Generator):
    """``(train, test)``, each ``(patches, labels)``: random ``size`` x ``size`` patches of
    each photograph (label: its position in ``photos``), training ones from the left
    ``train_share`` of its width and test ones from the rest."""
    parts = {"train": ([], []), "test": ([], [])}
    for label, photo in enumerate(photos.values()):
        h, w = photo.shape[:2]
        split = round(w * train_share)
        for part, count, (lo, hi) in (("train", train_per_class, (0, split - size)),
                                      ("test", test_per_class, (split, w - size))):
            for _ in range(count):
                r, c = rng.integers(0, h - size + 1), rng.integers(lo, hi + 1)
                parts[part][0].append(photo[r:r + size, c:c + size])
                parts[part][1].append(label)
    return tuple((np.stack(patches), np.array(labels, np.int64))
                 for patches, labels in parts.values())


def scenes(*, train_per_class: int = 200, test_per_class: int = 20, size: int = 32,
           scale: int = 160, train_share: float = 0.6, seed: int = 0) -> Task:
    """Random ``size`` x ``size`` patches of each photograph, scaled so its shorter side is
    ``scale`` pixels: training patches from its left ``train_share`` of the width, test
    patches from the rest."""
    photos = {}
    for name, photo in scene_photographs().items():
        photo = to_float_rgb(photo)
        h, w = photo.shape[:2]
        photos[name] = resize(photo, (round(h * scale / min(h, w)), round(w * scale / min(h, w))),
                              order=1, anti_aliasing=True).astype(np.float32)
    (train, train_y), (test, test_y) = _split_patches(
        photos, train_per_class, test_per_class, size, train_share, np.random.default_rng(seed))
    return Task("scenes", list(photos), np.clip(train, 0, 1), train_y, np.clip(test, 0, 1),
                test_y)


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
    """:func:`textures`, :func:`scenes` or :func:`digits` by name, with about
    ``test_images`` and ``train_images`` images (textures and scenes: an equal share of each per
    class; digits has at most 1,597 training images)."""
    if name == "textures":
        return textures(train_per_class=max(1, train_images // len(TEXTURES)),
                        test_per_class=max(1, test_images // len(TEXTURES)), seed=seed)
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

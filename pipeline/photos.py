"""The embedded data: real photographs that the dependencies install with themselves.

scikit-image, scikit-learn and matplotlib ship a dozen colour photographs;
:func:`sample` cuts them into the 350-tile sample the commands run on by
default, and :func:`photo_tiles` draws any number of random tiles from them
to learn bases from.  Nothing is downloaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.transform import resize as _resize

from pipeline.datasets import Dataset
from pipeline.images import scaled_shape, to_float_rgb


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
            scaled = _resize(photo, scaled_shape(*photo.shape[:2], side), order=1,
                             anti_aliasing=True)
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
        height, width = scaled_shape(h, w, side)
        row, col = int(rng.integers(height - tile + 1)), int(rng.integers(width - tile + 1))
        item = PhotoTile(photo, side, row, col, tile, bool(rng.integers(2)))
        items.append(item)
        names.append(f"{photo}/s{side}_y{row}_x{col}{'_flip' if item.flip else ''}")
        labels.append(label)
    labels = np.array(labels, np.int64)
    return Dataset(name, names, items, labels, list(scenes), image_size=tile, fit="none",
                   sources=labels)


@functools.lru_cache(maxsize=128)
def _scaled_photo(photo: str, side: int) -> np.ndarray:
    """A bundled photograph scaled to shorter side ``side``, uint8, kept per process
    (every photograph at every side of :data:`PHOTO_SIDES`: about 30 MB)."""
    image = to_float_rgb(_photographs()[photo])
    scaled = _resize(image, scaled_shape(*image.shape[:2], side), order=1,
                     anti_aliasing=True)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _photographs() -> dict[str, np.ndarray]:
    """:func:`photographs`, read once per process (never modified)."""
    return photographs()

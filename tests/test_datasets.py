"""Data sources: folders of odd images, arrays, CIFAR-10 batches, the sample."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets import DatasetError, load_item
from pipeline.images import ImageReadError, Sizing, fit_image, read_image
from pipeline.photos import sample
from pipeline.sources import array_file, cifar10, image_folder


@pytest.fixture
def odd_folder(tmp_path):
    """Class folders holding greyscale, RGBA, 16-bit, palette and CMYK images."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog" / "deep").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "cat" / "rgb.jpg")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "cat" / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 48), 128, np.uint8)])).save(
        tmp_path / "cat" / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "dog" / "grey16.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "dog" / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "dog" / "deep" / "cmyk.jpg")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_lists_images_recursively_with_class_labels(odd_folder):
    dataset = image_folder(odd_folder, sizing=Sizing(32, "center_crop"))
    assert dataset.names == ["cat/grey.png", "cat/rgb.jpg", "cat/rgba.png",
                             "dog/deep/cmyk.jpg", "dog/grey16.png", "dog/palette.png"]
    assert dataset.classes == ["cat", "dog"]
    assert dataset.labels.tolist() == [0, 0, 0, 1, 1, 1]
    for i in range(len(dataset)):
        image = dataset.load(i)
        assert image.shape == (32, 32, 3) and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1


def test_conversions_keep_the_pixel_values(odd_folder):
    grey = read_image(odd_folder / "cat" / "grey.png")
    grey16 = read_image(odd_folder / "dog" / "grey16.png")
    np.testing.assert_allclose(grey16, grey, atol=1e-6)  # v * 257 / 65535 == v / 255
    assert np.array_equal(grey[..., 0], grey[..., 2])
    rgba = read_image(odd_folder / "cat" / "rgba.png")
    assert rgba.shape == (40, 48, 3)


def test_fit_modes():
    image = np.random.default_rng(1).random((40, 80, 3)).astype(np.float32)
    assert fit_image(image, 20, "resize").shape == (20, 20, 3)
    cropped = fit_image(image, 20, "center_crop")
    assert cropped.shape == (20, 20, 3)
    with pytest.raises(ImageReadError, match="expected 20x20 pixels, got 40x80"):
        fit_image(image, 20, "none")


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg: cannot read image"):
        load_item(str(bad), size=32)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: data set folder not found"):
        image_folder(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no image files found"):
        image_folder(tmp_path)


def test_npy_and_npz(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    dataset = array_file(tmp_path / "x.npy", sizing=Sizing(16, "none"))
    assert len(dataset) == 5 and dataset.labels is None
    np.testing.assert_allclose(dataset.load(3), images[3] / 255.0, atol=1e-6)
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(5), names=np.array(list("abcde")))
    dataset = array_file(tmp_path / "x.npz", sizing=Sizing(16))
    assert dataset.names == list("abcde") and dataset.labels.tolist() == [0, 1, 2, 3, 4]
    np.save(tmp_path / "empty.npy", np.zeros((0, 16, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match="empty"):
        array_file(tmp_path / "empty.npy")


def test_cifar10_batches_are_read_without_running_code(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    batch = {b"data": data, b"labels": [3, 1, 4, 1],
             b"filenames": [f"img{i}.png".encode() for i in range(4)]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch))
    dataset = cifar10(tmp_path, split="test", sizing=Sizing(32, "none"))
    assert dataset.names[0] == "test_batch/img0.png" and dataset.labels.tolist() == [3, 1, 4, 1]
    red = data[2, :1024].reshape(32, 32) / 255.0  # CIFAR rows hold R, then G, then B planes
    np.testing.assert_allclose(dataset.load(2)[..., 0], red, atol=1e-6)

    class Exploit:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        cifar10(tmp_path)


def test_sample_is_real_photographs_cut_to_64x64():
    first, second = sample(), sample()
    assert len(first) == 350 and first.image_size == 64
    assert len(set(first.names)) == 350
    image = first.load(10)
    assert image.shape == (64, 64, 3) and image.std() > 0.02  # a photograph, not a flat tile
    np.testing.assert_array_equal(first.items[123], second.items[123])


def test_non_finite_float_images_are_refused():
    image = np.full((8, 8, 3), 0.5, np.float32)
    image[2, 3, 1] = np.nan
    with pytest.raises(ImageReadError, match="image contains NaN or Inf values"):
        load_item(image, size=8)


def test_npy_items_are_read_where_used_not_held(tmp_path):
    from pipeline.datasets import StoredImage

    images = np.random.default_rng(4).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    dataset = array_file(tmp_path / "x.npy", sizing=Sizing(16, "none"))
    assert dataset.items[4] == StoredImage(str((tmp_path / "x.npy").resolve()), 4)
    assert len(pickle.dumps(dataset.items)) < 2000  # descriptions, not pixels
    np.testing.assert_allclose(dataset.load(4), images[4] / 255.0, atol=1e-6)


def test_zarr_arrays_and_reconstruction_stores_are_sources(tmp_path):
    import zarr

    from pipeline.sources import zarr_images

    images = np.random.default_rng(5).random((4, 16, 16, 3)).astype(np.float32)
    zarr.create_array(tmp_path / "a.zarr", shape=images.shape, chunks=(1, 16, 16, 3),
                      dtype="float32")[:] = images
    dataset = zarr_images(tmp_path / "a.zarr", sizing=Sizing(16, "none"))
    assert len(dataset) == 4 and dataset.names[0] == "000000"
    np.testing.assert_allclose(dataset.load(2), images[2], atol=1e-6)

    group = zarr.open_group(tmp_path / "store.zarr", mode="w")
    group.create_array("images", shape=(4, 16, 16, 3), dtype="uint8")[:] = np.round(images * 255)
    group.create_array("names", shape=(4,), dtype=str)[:] = np.array(list("wxyz"))
    group.create_array("labels", shape=(4,), dtype="int64")[:] = [1, 0, 1, 0]
    stored = zarr_images(tmp_path / "store.zarr", sizing=Sizing(16, "none"))
    assert stored.names == list("wxyz") and stored.labels.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(stored.load(2), images[2], atol=0.5 / 255 + 1e-6)
    with pytest.raises(DatasetError, match="not a readable Zarr array or group"):
        zarr_images(tmp_path / "nowhere.zarr")


def test_photo_tiles_are_seeded_descriptions_cut_where_read():
    from pipeline.photos import PhotoTile, photo_tiles

    first, again = photo_tiles(400, seed=2), photo_tiles(400, seed=2)
    assert first.names == again.names and len(set(first.names)) > 390
    assert all(isinstance(item, PhotoTile) for item in first.items)
    assert len(pickle.dumps(first.items)) < 100_000  # no pixels
    assert len(set(first.labels.tolist())) == 11 and first.image_size == 64  # scenes
    np.testing.assert_array_equal(first.sources, first.labels)  # held out by scene
    photos = {item.photo for item in first.items}
    assert len(photos) == 12 and {"motorcycle", "motorcycle_right", "hopper"} <= photos
    scene = first.classes.index("motorcycle")  # the stereo pair's two views: one scene
    assert {first.items[i].photo for i in np.flatnonzero(first.labels == scene)} == {
        "motorcycle", "motorcycle_right"}
    sides = {item.side for item in first.items}
    assert min(sides) == 96 and max(sides) == 512
    tile = first.load(0)
    assert tile.shape == (64, 64, 3) and tile.dtype == np.float32
    flipped = next(i for i, item in enumerate(first.items) if item.flip)
    item = first.items[flipped]
    mirror = PhotoTile(item.photo, item.side, item.row, item.col, item.size, flip=False)
    np.testing.assert_array_equal(first.load(flipped), mirror.read()[:, ::-1])

"""The Zarr store: layout, completion record, resume and refusal."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.store import (
    StoreError,
    StoreLayout,
    export_images,
    open_store,
    pending,
    read_images,
    write_image,
)

NAMES = ["a/one.png", "a/two.png", "b/three.jpg"]


def make(path, *, overwrite=False, **changes):
    layout = StoreLayout(**{**dict(names=NAMES, image_shape=(8, 8, 3), dtype="uint8",
                                   settings={"csc": {"lmbda": 0.2}}, images_per_shard=1),
                            **changes})
    return open_store(path, layout, labels=np.array([0, 0, 1]), overwrite=overwrite)


def test_layout_chunks_one_image_per_chunk(tmp_path):
    group = make(tmp_path / "s.zarr")
    assert group["images"].shape == (3, 8, 8, 3) and group["images"].chunks == (1, 8, 8, 3)
    assert group["images"].dtype == np.uint8
    assert group["names"][:].tolist() == NAMES
    assert group["labels"][:].tolist() == [0, 0, 1]
    assert group["cluster"][:].tolist() == [-1, -1, -1]  # set by each image's task
    assert group.attrs["settings"]["csc"] == {"lmbda": 0.2}
    assert pending(group).tolist() == [0, 1, 2]


def test_write_marks_done_only_with_the_image(tmp_path):
    path = tmp_path / "s.zarr"
    make(path)
    image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    write_image(path, 1, image, n_iter=42, cluster=3)
    group = zarr.open_group(path, mode="r")
    assert pending(group).tolist() == [0, 2]
    assert group["n_iter"][1] == 42 and group["cluster"][1] == 3
    np.testing.assert_allclose(read_images(group, 1), image, atol=0.5 / 255 + 1e-6)
    # one file per image chunk: the written image and nothing else
    assert sorted(p.name for p in (path / "images" / "c").iterdir()) == ["1"]


def test_reopen_with_same_settings_resumes(tmp_path):
    path = tmp_path / "s.zarr"
    make(path)
    write_image(path, 0, np.zeros((8, 8, 3), np.float32))
    assert pending(make(path)).tolist() == [1, 2]


def test_other_settings_are_refused_and_nothing_is_lost(tmp_path):
    path = tmp_path / "s.zarr"
    make(path)
    write_image(path, 0, np.ones((8, 8, 3), np.float32))
    with pytest.raises(StoreError, match=r"other settings \(csc.lmbda: 0.2 -> 0.3\).*--overwrite"):
        make(path, settings={"csc": {"lmbda": 0.3}})
    assert pending(make(path)).tolist() == [1, 2]  # the done image survived
    fresh = make(path, settings={"csc": {"lmbda": 0.3}}, overwrite=True)
    assert pending(fresh).tolist() == [0, 1, 2]


def test_a_path_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "important.txt").write_text("keep me")
    with pytest.raises(StoreError, match="notes: exists and is not a Zarr store"):
        make(tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "important.txt").read_text() == "keep me"


def test_export_writes_pngs_named_after_sources(tmp_path):
    path = tmp_path / "s.zarr"
    group = make(path)
    write_image(path, 2, np.full((8, 8, 3), 0.5, np.float32))
    assert export_images(group, tmp_path / "png") == 1
    from PIL import Image

    pixels = np.asarray(Image.open(tmp_path / "png" / "b" / "three.png"))
    assert pixels.shape == (8, 8, 3) and (pixels == 128).all()

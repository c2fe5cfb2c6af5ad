"""A folder of broken and unusual files, through the reconstruct command.

Every good image is reconstructed; every bad one is listed with its reason in
the store and in the summary; the run's exit status is 0 unless ``--strict``
or nothing succeeded.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import RUNTIME, write_config
from PIL import Image

from pipeline.images import MAX_PIXELS, ImageReadError, read_image
from pipeline.reconstruct import main

pytestmark = pytest.mark.slow

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads a chmod-000 file


def bomb_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header declares ``width x height`` pixels (CRC fixed up)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8  # after the signature: length (4), b"IHDR" (4), fields, CRC
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", width, height)
    fields = bytes(data[ihdr + 4:ihdr + 21])
    data[ihdr + 21:ihdr + 25] = struct.pack(">I", zlib.crc32(fields))
    return bytes(data)


def photo(mode: str, rng) -> Image.Image:
    pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.fixture
def dirty(tmp_path) -> tuple[Path, set[str], set[str]]:
    """(folder, names expected to succeed, names expected to fail)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "dirty"
    root.mkdir()
    good = {"rgb.jpg", "grey.png", "rgba.png", "palette.png", "cmyk.jpg", "deep16.png",
            "café_日本.png"}
    photo("RGB", rng).save(root / "rgb.jpg", quality=90)
    photo("L", rng).save(root / "grey.png")
    photo("RGBA", rng).save(root / "rgba.png")
    photo("P", rng).save(root / "palette.png")
    photo("CMYK", rng).save(root / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65536, (40, 48), dtype=np.uint16)).save(root / "deep16.png")
    photo("RGB", rng).save(root / "café_日本.png")
    jpeg = io.BytesIO()
    photo("RGB", rng).save(jpeg, format="JPEG")
    (root / "truncated.jpg").write_bytes(jpeg.getvalue()[:400])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image\n")
    (root / "bomb.png").write_bytes(bomb_png(12_000, 12_000))
    os.symlink("loop.jpg", root / "loop.jpg")
    photo("RGB", rng).save(root / "secret.png")
    (root / "secret.png").chmod(0)
    bad = {"truncated.jpg", "empty.png", "notes.jpg", "bomb.png", "loop.jpg"}
    (good if AS_ROOT else bad).add("secret.png")
    yield root, good, bad
    (root / "secret.png").chmod(0o644)


def dirty_config(folder: Path, images: Path) -> Path:
    return write_config(folder / "dirty.yaml",
                        dataset={"source": "folder", "path": str(images), "image_size": 32},
                        basis="default", csc={"max_iter": 20},
                        store={"path": str(folder / "d.zarr")})


@pytest.mark.parametrize("side", [12_000, 100_000])
def test_bomb_is_refused_from_its_header(tmp_path, side):
    """12000^2 is past our limit but under Pillow's own error (it would only warn, then
    decode 144 megapixels); 100000^2 Pillow refuses itself."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(side, side))
    assert side * side > MAX_PIXELS
    with pytest.raises(ImageReadError, match=r"bomb.png: .*decompression bomb"):
        read_image(path)


def test_dirty_folder_good_images_done_bad_ones_listed(dirty, tmp_path, capsys):
    root, good, bad = dirty
    config = dirty_config(tmp_path, root)
    assert main([str(config), *RUNTIME]) == 0  # some images failed: still a success
    err = capsys.readouterr().err
    group = zarr.open_group(tmp_path / "d.zarr", mode="r")
    names = list(group["names"][:])
    done = {n for n, d in zip(names, group["done"][:], strict=True) if d}
    assert done == good
    failed = group.attrs["failed"]
    assert set(failed) == bad
    assert "declares 12000x12000 pixels" in failed["bomb.png"]
    assert "symbolic links" in failed["loop.jpg"]
    for name in bad:
        assert name in err  # the summary lists each with its reason
        assert name not in failed[name]  # the reason does not repeat the file's name
        lines = [line for line in err.splitlines() if name in line]
        assert lines and all(line.count(name) == 1 for line in lines), lines
    images = group["images"][:]
    for i, name in enumerate(names):  # good images hold pixels; CMYK and 16-bit converted
        assert (images[i].std() > 0) == (name in good)

    assert main([str(config), "--strict", "--overwrite", *RUNTIME]) == 1
    assert "--strict stops at the first bad image" in capsys.readouterr().err


def test_nothing_readable_is_exit_1(tmp_path, capsys):
    root = tmp_path / "junk"
    root.mkdir()
    (root / "a.png").write_bytes(b"")
    (root / "b.jpg").write_text("text")
    config = dirty_config(tmp_path, root)
    assert main([str(config), "--workers", "1", "--dashboard-address", "127.0.0.1:0"]) == 1
    assert "no image could be reconstructed" in capsys.readouterr().err

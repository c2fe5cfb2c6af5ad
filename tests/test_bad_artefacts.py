"""Bad artefacts through the reconstruct command: a clear error before any work, nothing lost.

Each case gives the command one broken input (basis file, basis set, config,
store); it must exit 2 with one sentence that names the file and the problem,
start no workers, and leave the existing store and every other file as they
were.  Files that would run code if unpickled must not run it.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import RUNTIME, normalised, write_photos

from pipeline.basis import STRATIFIED_SET as SHIPPED_SET
from pipeline.basis import file_sha256
from pipeline.reconstruct import main

pytestmark = pytest.mark.slow


class TouchesAFile:
    """Unpickling this creates ``path``: a stand-in for code hidden in a pickle."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Twelve photos, a config and a finished store."""
    root = tmp_path_factory.mktemp("artefacts")
    write_photos(root / "photos")
    (root / "photos.yaml").write_text(
        f"dataset:\n  source: folder\n  path: {root / 'photos'}\n  image_size: 32\n"
        f"basis: {SHIPPED_SET}\ncsc:\n  max_iter: 3\nstore:\n  path: {root / 'photos.zarr'}\n")
    assert run(root) == 0
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a store\n")
    return root


def config(root: Path) -> str:
    return str(root / "photos.yaml")


def run(root: Path, *args: str) -> int:
    return main([config(root), *args, *RUNTIME])


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def bad_npy(folder: Path, name: str, array: np.ndarray, **save) -> list[str]:
    np.save(folder / name, array, **save)
    return [config(folder), "--basis", str(folder / name)]


def truncated_npy(folder: Path) -> list[str]:
    basis = normalised(np.random.default_rng(0).standard_normal((8, 8, 3, 64)))
    args = bad_npy(folder, "truncated.npy", basis)
    path = folder / "truncated.npy"
    path.write_bytes(path.read_bytes()[:1000])
    return args


def broken_set(folder: Path, change) -> list[str]:
    """A copy of the shipped set with ``change(set_folder)`` applied."""
    target = folder / f"set-{change.__name__}"
    shutil.copytree(SHIPPED_SET, target)
    change(target)
    return [config(folder), "--basis-set", str(target)]


def with_checksum(folder: Path, name: str) -> None:
    """Record ``name``'s new checksum, as someone who edits a set by hand might."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = file_sha256(folder / name)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def edited_centroids(folder: Path) -> None:
    np.save(folder / "centroids.npy", np.zeros((10, 64), np.float32))


def missing_dae(folder: Path) -> None:
    (folder / "dae.pt").unlink()


def dae_not_weights(folder: Path) -> None:
    (folder / "dae.pt").write_bytes(b"this is no checkpoint")
    with_checksum(folder, "dae.pt")


def dae_pickle_with_code(folder: Path) -> None:
    torch.save({"encoder": TouchesAFile(folder.parent / "ran-code")}, folder / "dae.pt")
    with_checksum(folder, "dae.pt")


def config_typo(folder: Path) -> list[str]:
    text = (folder / "photos.yaml").read_text().replace("max_iter: 3", "max_iter: 3\n  lamda: 0.3")
    (folder / "typo.yaml").write_text(text)
    return [str(folder / "typo.yaml")]


CASES = {
    "basis of the wrong shape": (
        lambda f: bad_npy(f, "flat.npy", np.ones((8, 8, 64), np.float32)),
        "flat.npy: expected shape (P, P, 3, M), got (8, 8, 64)"),
    "basis with NaN": (
        lambda f: bad_npy(f, "nan.npy", np.full((8, 8, 3, 4), np.nan, np.float32)),
        "nan.npy: contains NaN or Inf values"),
    "basis with Inf": (
        lambda f: bad_npy(f, "inf.npy", np.full((8, 8, 3, 4), np.inf, np.float32)),
        "inf.npy: contains NaN or Inf values"),
    "truncated .npy": (truncated_npy, "truncated.npy: not a readable .npy array"),
    ".npy holding a pickle": (
        lambda f: bad_npy(f, "pickled.npy", np.array([TouchesAFile(f / "ran-code")]),
                          allow_pickle=True),
        "pickled.npy: not a readable .npy array"),
    "checksum mismatch": (
        lambda f: broken_set(f, edited_centroids),
        "set-edited_centroids/centroids.npy: checksum does not match the manifest"),
    "manifest names a missing file": (
        lambda f: broken_set(f, missing_dae),
        "set-missing_dae/dae.pt: listed in the manifest but missing"),
    "DAE weights that are not weights": (
        lambda f: broken_set(f, dae_not_weights), "set-dae_not_weights/dae.pt: not DAE weights"),
    "DAE weights holding code": (
        lambda f: broken_set(f, dae_pickle_with_code),
        "set-dae_pickle_with_code/dae.pt: not DAE weights"),
    "config typo": (config_typo, "typo.yaml: unknown key csc.'lamda' (did you mean 'lmbda'?)"),
    "override typo": (lambda f: [config(f), "--set", "csc.lamda=0.3"],
                      "unknown key csc.'lamda' (did you mean 'lmbda'?)"),
    "missing data set": (lambda f: [config(f), "--set", "dataset.path=/no/such/folder"],
                         "/no/such/folder: data set folder not found"),
    "store that is not a Zarr store": (lambda f: [config(f), "--out", str(f / "notes")],
                                       "notes: exists and is not a Zarr store"),
    "store made with other settings": (
        lambda f: [config(f), "--set", "csc.lmbda=0.3"],
        "store was made with other settings (csc.lmbda: 0.2 -> 0.3)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_artefact_is_one_sentence_before_any_work(workspace, case, capsys):
    make, message = CASES[case]
    args = make(workspace)
    before = snapshot(workspace)
    capsys.readouterr()
    assert main([*args, *RUNTIME]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    assert "Dask dashboard" not in err  # no runtime was started
    assert not (workspace / "ran-code").exists()  # nothing was unpickled
    assert snapshot(workspace) == before

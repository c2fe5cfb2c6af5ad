"""Installed, not cloned: a wheel of the project runs its commands from another directory.

``pip install .`` (not editable) puts the packages, and the shipped configs
and basis sets inside them, into a fresh folder; the commands run from an
empty directory with that folder first on the path, so nothing of the clone
is seen (the clone's own editable install stays behind it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zarr
from helpers import RUNTIME

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True,
                   text=True)
    return target


def run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


def test_wheel_carries_the_configs_and_basis_sets(installed, tmp_path):
    where = run(installed, tmp_path, "-c", "import pipeline, pipeline.resources as r; "
                "print(pipeline.__file__); print(r.CONFIG_FOLDER); print(r.BASIS_FOLDER)")
    assert where.returncode == 0, where.stderr
    package, configs, bases = where.stdout.split()
    assert Path(package).is_relative_to(installed)  # the wheel's package, not the clone's
    assert Path(configs) == installed / "pipeline" / "_configs"
    assert {p.name for p in Path(configs).glob("*.yaml")} == {
        p.name for p in (ROOT / "configs").glob("*.yaml")}
    for name in ("photos-k1", "photos-k10", "sample-k1", "sample-k10"):
        manifest = json.loads((Path(bases) / name / "manifest.json").read_text())
        assert all((Path(bases) / name / file).is_file() for file in manifest["files"])
    # The Dask config file of the worker settings (pipeline.worker), which the
    # LocalCluster reads and users give to their own workers.
    assert (installed / "pipeline" / "dask-worker.yaml").is_file()


def test_installed_commands_run_from_another_directory(installed, tmp_path):
    (tmp_path / "configs").mkdir()  # a configs/ folder here must not shadow the shipped ones
    (tmp_path / "configs" / "sample.yaml").write_text("dataset:\n  source: nowhere\n")
    runtime = [*RUNTIME, "-q"]
    reconstructed = run(installed, tmp_path, "-m", "pipeline.reconstruct", "sample",
                        "--set", "csc.max_iter=3", *runtime)
    assert reconstructed.returncode == 0, reconstructed.stderr
    group = zarr.open_group(tmp_path / "outputs" / "sample.zarr", mode="r")
    assert group["done"][:].all() and group["images"].shape == (350, 64, 64, 3)
    assert group.attrs["settings"]["basis"]["set"] == "photos-k1"  # the default: one basis
    assert set(group["cluster"][:]) == {0}

    learned = run(installed, tmp_path, "-m", "pipeline.learn", "--clusters", "2",
                  "--set", "learn.dictionary.max_iter=5", "--set", "learn.max_images=64",
                  "--dae-epochs", "2", *runtime)
    assert learned.returncode == 0, learned.stderr
    manifest = json.loads((tmp_path / "outputs" / "bases" / "photos-k2" / "manifest.json")
                          .read_text())
    assert manifest["n_clusters"] == 2 and len(manifest["objective"][0]) == 5

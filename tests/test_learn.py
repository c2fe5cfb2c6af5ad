"""Stratified learning: DAE, clusters, per-cluster dictionaries, basis sets."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import zarr
from helpers import REFERENCE, normalised, psnr

from flows.learn import learn_bases
from pipeline.basis import (
    ONE_BASIS_SET,
    STRATIFIED_SET,
    BasisError,
    load_basis,
    load_basis_set,
    open_bases,
    save_basis_set,
    validate_basis,
)
from pipeline.clustering import assign, assign_blocks, fit_clusters
from pipeline.config import LearnConfig
from pipeline.dae import encode, load_model, load_weights, save_weights, train_dae
from pipeline.datasets import Dataset
from pipeline.images import read_image
from pipeline.options import CDLOptions, DAEOptions
from pipeline.photos import sample
from pipeline.solvers import reconstruct_image
from pipeline.split import ClusterTooSmallError, split_images, validation_split
from pipeline.stratified import assign_clusters

SMALL_DAE = DAEOptions(max_epochs=2)
SMALL = LearnConfig(clusters=3, images_per_cluster=12, dae=SMALL_DAE,
                    dictionary=CDLOptions(n_filters=8, filter_size=6, max_iter=4, batch_size=4,
                                          coding_max_iter=10))


@pytest.fixture(scope="module")
def photos() -> Dataset:
    """117 sample tiles, every third."""
    full = sample()
    keep = list(range(0, 350, 3))
    return Dataset("photos", [full.names[i] for i in keep], [full.items[i] for i in keep],
                   image_size=64, fit="none")


def test_dae_trains_encodes_and_round_trips_weights(photos, tmp_path):
    images = np.stack([photos.load(i) for i in range(16)])
    weights, history = train_dae(images, SMALL_DAE)
    assert len(history["train"]) == 2 and all(np.isfinite(history["validation"]))
    latents = encode(load_model(weights), images)
    assert latents.shape == (16, 2048) and latents.dtype == np.float32
    save_weights(tmp_path / "dae.pt", weights)
    again = encode(load_model(load_weights(tmp_path / "dae.pt")), images)
    np.testing.assert_array_equal(again, latents)
    resized = encode(load_model(weights), np.stack([photos.load(0)] * 2)[:, ::2, ::2])
    assert resized.shape == (2, 2048)  # other sizes are resized to 64x64 for this stage


def test_weights_file_that_is_not_weights_is_refused(tmp_path):
    (tmp_path / "dae.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="dae.pt: not DAE weights"):
        load_weights(tmp_path / "dae.pt")
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not DAE weights"):
        load_weights(tmp_path / "other.pt")


def test_clusters_separate_blobs_and_assignment_is_arrays_only():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (3, 2048))
    latents = np.concatenate([c + rng.normal(0, 1, (20, 2048)) for c in centres])
    model, labels = fit_clusters(latents.astype(np.float32), 3, seed=0)
    assert model.components.shape == (60, 2048)  # 128 capped at the 60 samples
    assert model.centroids.shape == (3, 60)
    for blob in range(3):  # each blob is one cluster
        assert len(set(labels[blob * 20 : (blob + 1) * 20])) == 1
    assert len(set(labels)) == 3
    np.testing.assert_array_equal(assign(latents, model), labels)
    with pytest.raises(ValueError, match="--clusters must be between 1 and the number of images"):
        fit_clusters(latents, 61)


def test_clusters_fit_block_by_block_from_a_zarr_array(tmp_path):
    """Blocks of 16 rows read from Zarr: the same blobs found, the rows past ``count`` unused."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 10, (3, 64))
    latents = np.concatenate([c + rng.normal(0, 1, (20, 64)) for c in centres])[
        rng.permutation(60)].astype(np.float32)
    stored = zarr.create_array(tmp_path / "latents.zarr", shape=(70, 64), chunks=(16, 64),
                               dtype="float32")
    stored[:60] = latents
    stored[60:] = np.nan  # past count: must never be read into the fit
    model, labels = fit_clusters(stored, 3, count=60, n_components=4, block_rows=16)
    whole, whole_labels = fit_clusters(latents, 3, n_components=4)
    assert model.components.shape == (4, 64) and np.isfinite(model.centroids).all()
    truth = np.array([np.argmin(((centres - x) ** 2).sum(1)) for x in latents])
    for blob in range(3):  # each blob is one cluster, as with one block
        assert len(set(labels[truth == blob])) == 1
    assert len(set(labels)) == 3
    np.testing.assert_array_equal(labels, assign_blocks(stored, model, range(0, 60), 7))
    assert len(set(zip(labels, whole_labels, strict=True))) == 3  # the same partition


def test_learned_set_is_valid_deterministic_and_used_both_workers(client, photos, tmp_path):
    first = learn_bases(client, photos, SMALL, workdir=tmp_path / "a", progress=False)
    again = learn_bases(client, photos, SMALL, workdir=tmp_path / "b", progress=False)
    bases, labels, split = first.dictionaries.bases, first.strata.labels, first.split
    assert len(bases) == 3
    for basis in [*bases, first.dictionaries.control]:
        assert basis.shape == (6, 6, 3, 8)
        validate_basis(basis)  # zero-mean per channel, unit norm
    np.testing.assert_array_equal(labels, again.strata.labels)
    for a, b in zip(bases, again.dictionaries.bases, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # the clusters were learned on both workers
    assert len(set(first.dictionaries.workers)) == 2
    assert [len(o) for o in first.dictionaries.objectives] == [4, 4, 4]
    assert len(first.dictionaries.control_objective) == 12  # the budget of all three

    # 11 held-out images (a tenth), kept out of everything, measured with both dictionaries
    assert len(split.held_out) == 11 and len(split.training) == 106
    assert not set(split.held_out) & set(split.training) and set(split.dae) <= set(split.training)
    held = first.held_out
    assert held.psnr.shape == held.control_psnr.shape == (11,) and np.all(held.psnr > 15)
    assert np.all((held.density >= 0) & (held.density < 0.1)) and held.density.mean() > 0
    table = held.table(3)
    assert [row["cluster"] for row in table] == [0, 1, 2, "all"]
    assert sum(row["images"] for row in table[:3]) == table[3]["images"] == 11
    assert table[3]["gain_db"] == pytest.approx(table[3]["psnr"] - table[3]["control_psnr"])

    latents = zarr.open_array(first.strata.latents, mode="r")
    assert latents.shape == (117, 2048)  # training images, then the held-out ones
    np.testing.assert_array_equal(assign(latents[:106], first.strata.clusters), labels)

    manifest = {"settings": {"lmbda": 0.2}, "command": "test"}
    save_basis_set(tmp_path / "set", bases, clusters=first.strata.clusters,
                   dae_weights=first.strata.dae_weights, manifest=manifest)
    loaded = load_basis_set(tmp_path / "set")
    assert loaded.stratified and len(loaded.bases) == 3
    written = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert written["bases"][0] == "cluster_00/8_p6_lm0.2.npy"
    for name in written["bases"]:
        np.testing.assert_array_equal(load_basis(tmp_path / "set" / name),
                                      bases[int(name[8:10])])
    images = np.stack([photos.load(i) for i in split.training])
    latents = encode(load_model(loaded.dae_weights), images)
    np.testing.assert_array_equal(assign(latents, loaded.clusters), labels)


def test_held_out_by_photograph_never_shares_a_photograph_with_training():
    """Tiles of the photos data set: every tile of a held-out scene is out of every stage;
    every cluster's validation tiles are out of its learning."""
    from pipeline.photos import photo_tiles

    tiles = photo_tiles(3000, seed=4)
    split = split_images(len(tiles), LearnConfig(held_out_sources=3), tiles.sources)
    held, trained = set(tiles.sources[split.held_out]), set(tiles.sources[split.training])
    assert held == set(split.held_out_sources) and len(held) == 3 and len(trained) == 8
    assert not held & trained
    assert len(split.held_out) == 500 and set(split.dae) <= set(split.training)
    everything = np.concatenate([split.training, np.flatnonzero(np.isin(tiles.sources,
                                                                        list(held)))])
    assert sorted(everything.tolist()) == list(range(3000))  # nothing else is left out
    by_default = split_images(len(tiles), LearnConfig(), tiles.sources)  # enough scenes for 500
    assert len(by_default.held_out_sources) == 2 and len(by_default.held_out) == 500
    own = split_images(1000, LearnConfig(held_out=50))  # each image its own source
    assert len(own.held_out) == len(own.held_out_sources) == 50 and len(own.training) == 950
    with pytest.raises(ClusterTooSmallError, match="held_out_sources is 11, and the images "
                                                   "come from 11 sources"):
        split_images(len(tiles), LearnConfig(held_out_sources=11), tiles.sources)

    members = [split.training[tiles.labels[split.training] % 3 == c] for c in range(3)]
    learn, validation = validation_split(members, 32, seed=0)
    for mine, kept, judged in zip(members, learn, validation, strict=True):
        assert len(judged) == 32 and not set(kept) & set(judged)
        assert sorted([*kept, *judged]) == sorted(mine)


def test_texture_clusters_and_fine_tuned_shared_filters(client, photos, tmp_path):
    """feature highpass, clusters started from the control with 3 shared filters: each
    cluster keeps the control's 3 most used filters, and the set assigns by features."""
    settings = replace(SMALL, feature="highpass", init="control", shared_filters=3)
    result = learn_bases(client, photos, settings, workdir=tmp_path / "w", progress=False)
    control, clusters = result.dictionaries.control_learned, result.dictionaries.clusters
    shared = np.argsort(-control.usage, kind="stable")[:3]
    for learned in clusters:
        np.testing.assert_array_equal(learned.basis[..., shared], control.basis[..., shared])
        assert learned.first_step == control.steps
        assert not np.array_equal(learned.basis, control.basis) or learned.best_step == 0
    assert result.strata.dae_weights is None and result.strata.clusters.mean.shape == (12,)
    save_basis_set(tmp_path / "set", result.dictionaries.bases, clusters=result.strata.clusters,
                   feature="highpass", manifest={"settings": {"lmbda": 0.2}})
    loaded = load_basis_set(tmp_path / "set")
    assert loaded.feature == "highpass" and not (tmp_path / "set" / "dae.pt").exists()
    images = np.stack([photos.load(i) for i in result.split.training[:20]])
    np.testing.assert_array_equal(assign_clusters(images, loaded),
                                  result.strata.labels[:20])


def test_too_small_cluster_is_a_clear_error(client, photos, tmp_path):
    with pytest.raises(ClusterTooSmallError, match=r"cluster \d+ has \d+ images; dictionary "
                                                   r"learning needs at least 8 .* use fewer"):
        learn_bases(client, photos, replace(SMALL, clusters=12), workdir=tmp_path,
                    progress=False)
    with pytest.raises(ClusterTooSmallError, match="15 clusters of at least 8 images each need "
                                                   "120 images, and there are 106"):
        learn_bases(client, photos, replace(SMALL, clusters=15), workdir=tmp_path,
                    progress=False)


@pytest.mark.slow
def test_the_client_reads_no_image_while_learning(monkeypatch, tmp_path):
    """Worker processes read every image; the client only schedules (tiles of the photos)."""
    from pipeline import datasets, photos
    from pipeline.runtime import connect, disconnect

    dataset = photos.photo_tiles(300, seed=1)
    client = connect(n_workers=2, dashboard_address="127.0.0.1:0")
    reads = []
    original = datasets.load_item
    monkeypatch.setattr(datasets, "load_item", lambda *a, **k: reads.append(a) or original(*a, **k))
    try:
        result = learn_bases(client, dataset, SMALL, workdir=tmp_path, progress=False)
    finally:
        disconnect(client)
    assert reads == []
    held_out = np.isin(dataset.sources, result.split.held_out_sources)
    assert len(result.split.training) == (~held_out).sum() and held_out.any()
    assert len(result.held_out.psnr) == held_out.sum()
    assert len(set(result.dictionaries.workers)) == 2


@pytest.fixture
def small_set(tmp_path, small_basis):
    rng = np.random.default_rng(0)
    from pipeline.clustering import Clusters
    from pipeline.dae import DAE

    clusters = Clusters(np.zeros(2048, np.float32), rng.standard_normal((4, 2048)).astype(
        np.float32), rng.standard_normal((2, 4)).astype(np.float32))
    save_basis_set(tmp_path / "set", [small_basis, small_basis], clusters=clusters,
                   dae_weights=DAE().state_dict(), manifest={"settings": {"lmbda": 0.2}})
    return tmp_path / "set"


def test_tampered_or_missing_files_are_refused(small_set):
    load_basis_set(small_set)
    target = small_set / "cluster_01" / "8_p4_lm0.2.npy"
    original = target.read_bytes()
    target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(BasisError, match="cluster_01/8_p4_lm0.2.npy: checksum does not match"):
        load_basis_set(small_set)
    target.write_bytes(original)
    (small_set / "centroids.npy").unlink()
    with pytest.raises(BasisError, match="centroids.npy: listed in the manifest but missing"):
        load_basis_set(small_set)
    shutil.rmtree(small_set)
    small_set.mkdir()
    with pytest.raises(BasisError, match="manifest.json: not a basis-set manifest"):
        load_basis_set(small_set)


def shipped_set_psnr(images: list[np.ndarray], bases) -> list[float]:
    """PSNR of each image reconstructed with its own cluster's basis of a set."""
    clusters = assign_clusters(np.stack(images), bases)
    return [psnr(image, reconstruct_image(image, bases.bases[c])[0])
            for image, c in zip(images, clusters, strict=True)]


@pytest.mark.parametrize(("folder", "command"), [
    (STRATIFIED_SET, "python -m pipeline.learn --clusters 10 --budget converged "
                     "--out basis/photos-k10"),
    (ONE_BASIS_SET, "python -m pipeline.learn --clusters 1 --budget converged "
                    "--out basis/photos-k1")])
def test_shipped_sets_converged_on_photographs_they_never_saw(folder, command):
    """Made by the documented command; every dictionary stopped by the rule, its validation
    objective within 0.5 % over its last fifth of steps; the held-out tiles all come from
    the three held-out scenes."""
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["command"].startswith(command)
    records = manifest["learning"] + ([manifest["control_learning"]]
                                      if "control_learning" in manifest else [])
    assert len(records) == manifest["n_clusters"] + ("control" in manifest)
    for record in records:
        steps, objective = record["validation"]["step"], record["validation"]["objective"]
        before = max(i for i, step in enumerate(steps) if step <= 0.8 * steps[-1])
        assert record["stopped"] == "converged" and steps[-1] == record["steps"] >= 100
        assert abs(objective[-1] - objective[before]) <= 0.005 * objective[before]
        assert objective[-1] < 0.7 * objective[0]  # from a random start, it learned
    assert manifest["held_out_sources"] == ["astronaut", "coffee", "hopper"]
    assert len(manifest["held_out_images"]) == manifest["held_out"][-1]["images"] == 500
    assert {name.split("/")[0] for name in manifest["held_out_images"]} == {
        "astronaut", "coffee", "hopper"}


def test_shipped_set_beats_random_filters_on_its_held_out_tiles():
    """Tiles of the photos data set's held-out scenes, which no stage saw."""
    from pipeline.photos import photo_tiles

    manifest = json.loads((STRATIFIED_SET / "manifest.json").read_text())
    tiles = photo_tiles()
    index = {name: i for i, name in enumerate(tiles.names)}
    held_out = [tiles.load(index[name]) for name in manifest["held_out_images"][:8]]
    random_basis = normalised(np.random.default_rng(0).standard_normal((8, 8, 3, 64)))
    rand = [psnr(image, reconstruct_image(image, random_basis)[0]) for image in held_out]
    assert np.mean(shipped_set_psnr(held_out, load_basis_set(STRATIFIED_SET))) > np.mean(
        rand) + 1.0


def test_shipped_sets_near_the_published_basis_on_the_published_photographs(
        reference_basis_path):
    """The ten published 64x64 photographs, which no dictionary of either saw."""
    photos = [read_image(p) for p in
              sorted((REFERENCE / "sample_images_64" / "original").glob("*.png"))]
    assert len(photos) == 10
    published = load_basis(reference_basis_path)
    pub = [psnr(image, reconstruct_image(image, published)[0]) for image in photos]
    for folder in (STRATIFIED_SET, ONE_BASIS_SET):
        assert np.mean(shipped_set_psnr(photos, open_bases(folder))) > np.mean(pub) - 1.5

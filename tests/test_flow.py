"""The reconstruct flow on a real (threaded) LocalCluster with real Zarr stores."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import psnr
from PIL import Image
from sporco import signal
from sporco.admm import cbpdn

from flows.reconstruct import StoreTarget, StrictModeError, reconstruct_dataset
from pipeline.basis import DEFAULT_BASIS, open_bases
from pipeline.config import StoreConfig
from pipeline.images import Sizing
from pipeline.options import CSCOptions
from pipeline.photos import sample
from pipeline.sources import image_folder
from pipeline.store import StoreError, read_images


def run(client, dataset, basis_path, store, *, store_config=StoreConfig(), options=CSCOptions(),
        **kwargs):
    return reconstruct_dataset(client, dataset, open_bases(basis_path),
                               StoreTarget(store, store_config), options=options,
                               progress=False, **kwargs)


def test_stored_reconstructions_match_direct_sporco_solves(client, tmp_path):
    """Fidelity: >= 40 dB against ConvBPDN called directly, uint8 storage included."""
    full = sample()
    dataset = type(full)("sample8", full.names[::44][:8], full.items[::44][:8],
                         full.labels[::44][:8], image_size=64, fit="none")
    summary = run(client, dataset, DEFAULT_BASIS, tmp_path / "s.zarr",
                  options=CSCOptions())
    assert summary.done == summary.done_now == 8 and not summary.failed

    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    basis = np.load(DEFAULT_BASIS)
    opt = cbpdn.ConvBPDN.Options({"Verbose": False, "MaxMainIter": 200, "RelStopTol": 5e-3,
                                  "AuxVarObj": False})
    for i in range(8):
        image = dataset.load(i)
        low, high = signal.tikhonov_filter(image, 5.0, 16)
        solver = cbpdn.ConvBPDN(basis, high, 0.2, opt)
        solver.solve()
        direct = np.clip(low + solver.reconstruct().reshape(image.shape), 0, 1)
        assert psnr(read_images(group, i), direct) >= 40.0
        assert group["n_iter"][i] == solver.k
    assert group["names"][:].tolist() == dataset.names
    assert group.attrs["summary"]["done"] == 8
    assert group.attrs["settings"]["basis"]["file"] == "64_p8_lm0.2.npy"


@pytest.fixture
def folder_with_a_bad_image(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return tmp_path


@pytest.mark.parametrize("load_threads", [None, 3])
def test_bad_image_is_skipped_recorded_and_others_done(client, folder_with_a_bad_image,
                                                       tmp_path, load_threads):
    """Also with the images of a task decoded on several threads."""
    from pipeline.config import ComputeConfig

    dataset = image_folder(folder_with_a_bad_image, sizing=Sizing(16, "resize"))
    store = tmp_path / "out.zarr"
    options = CSCOptions(max_iter=5)
    summary = run(client, dataset, DEFAULT_BASIS, store, options=options,
                  compute=ComputeConfig(images_per_task=4, load_threads=load_threads))
    assert summary.done == 3 and list(summary.failed) == ["broken.png"]
    assert summary.failed["broken.png"].startswith("cannot read image")  # the name once, as key
    group = zarr.open_group(store, mode="r")
    assert group["done"][:].tolist() == [True, True, False, True]
    assert list(group.attrs["failed"]) == ["broken.png"]

    again = run(client, dataset, DEFAULT_BASIS, store, options=options)
    assert again.done_now == 0 and again.done_before == 3  # a second run redoes nothing
    assert list(again.failed) == ["broken.png"]  # the bad one is retried and fails again


def test_strict_stops_at_the_first_bad_image(client, folder_with_a_bad_image,
                                             tmp_path):
    dataset = image_folder(folder_with_a_bad_image, sizing=Sizing(16, "resize"))
    with pytest.raises(StrictModeError, match="broken.png: cannot read image"):
        run(client, dataset, DEFAULT_BASIS, tmp_path / "out.zarr",
            options=CSCOptions(max_iter=5), strict=True)


def test_batch_size_and_task_size_do_not_change_the_store(client, tmp_path):
    """compute settings change how work is cut, not the pixels (to uint8 rounding)."""
    from pipeline.config import ComputeConfig

    full = sample()
    dataset = type(full)("sample7", full.names[::50][:7], full.items[::50][:7],
                         full.labels[::50][:7], image_size=64, fit="none")
    run(client, dataset, DEFAULT_BASIS, tmp_path / "one.zarr", options=CSCOptions())
    summary = run(client, dataset, DEFAULT_BASIS, tmp_path / "batched.zarr",
                  options=CSCOptions(), compute=ComputeConfig(batch_size=4, images_per_task=5))
    assert summary.done == 7 and not summary.failed
    one, batched = (zarr.open_group(tmp_path / f"{n}.zarr", mode="r") for n in ("one", "batched"))
    assert np.abs(one["images"][:].astype(int) - batched["images"][:].astype(int)).max() <= 1
    assert np.abs(one["n_iter"][:] - batched["n_iter"][:]).max() <= 1


def test_a_sharded_store_resumes_and_holds_the_same_pixels(client, tmp_path):
    """images_per_shard 2 on 20 images: 10 objects per array, a task per shard; a run
    stopped after its first shard resumes the rest; pixels equal the unsharded store's."""
    full = sample()
    pick = slice(None, None, 17)
    dataset = type(full)("sample20", full.names[pick][:20], full.items[pick][:20],
                         full.labels[pick][:20], image_size=32, fit="center_crop")
    options = CSCOptions(max_iter=30)
    run(client, dataset, DEFAULT_BASIS, tmp_path / "plain.zarr", options=options)

    def first_shard_written() -> bool:  # a Ctrl-C once one shard is in the store
        store = tmp_path / "sharded.zarr"
        return (store / "done" / "c").is_dir() and any((store / "done" / "c").iterdir())

    with pytest.raises(KeyboardInterrupt):
        run(client, dataset, DEFAULT_BASIS, tmp_path / "sharded.zarr", options=options,
            store_config=StoreConfig(images_per_shard=2), stop_requested=first_shard_written)
    done = zarr.open_group(tmp_path / "sharded.zarr", mode="r")["done"][:]
    shards = done.reshape(10, 2)
    assert all(s.all() or not s.any() for s in shards)  # whole shards only
    # Shards already running on a worker at the stop still finish there; the rest wait.
    assert 1 <= sum(s.all() for s in shards) < 10
    summary = run(client, dataset, DEFAULT_BASIS, tmp_path / "sharded.zarr", options=options,
                  store_config=StoreConfig(images_per_shard=2))
    assert summary.done_before >= done.sum() and summary.done == 20
    for array in ("images", "done", "n_iter", "cluster"):
        objects = list((tmp_path / "sharded.zarr" / array / "c").rglob("*"))
        assert len([o for o in objects if o.is_file()]) == 10, array
    plain, sharded = (zarr.open_group(tmp_path / f"{n}.zarr", mode="r")
                      for n in ("plain", "sharded"))
    for array in ("images", "done", "n_iter", "cluster"):
        np.testing.assert_array_equal(plain[array][:], sharded[array][:])
    with pytest.raises(StoreError, match="made with 2 images per shard, the config asks for 1"):
        run(client, dataset, DEFAULT_BASIS, tmp_path / "sharded.zarr", options=options)


def test_the_scheduler_knows_the_whole_job_and_queues_it(client, tmp_path):
    """Every task is on the scheduler from the start (the dashboard's Progress panel reads
    ``reconstruct N / total``), while its own queuing keeps few in flight."""
    import threading

    from pipeline.config import ComputeConfig

    full = sample()
    dataset = type(full)("sample24", full.names[:24], full.items[:24], full.labels[:24],
                         image_size=32, fit="center_crop")

    def reconstruct_states(dask_scheduler) -> dict:
        group = dask_scheduler.task_groups.get("reconstruct")
        return dict(group.states) if group is not None else {}

    seen, running = [], threading.Event()
    running.set()

    def watch():
        while running.is_set():
            seen.append(client.run_on_scheduler(reconstruct_states))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run(client, dataset, DEFAULT_BASIS, tmp_path / "s.zarr",
            options=CSCOptions(max_iter=400, rel_stop_tol=1e-9),
            compute=ComputeConfig(images_per_task=1))
    finally:
        running.clear()
        watcher.join()
    during = [s for s in seen if s and s["memory"] + s["forgotten"] < 24]
    assert during and all(sum(s.values()) == 24 for s in during)  # the whole job, at once
    assert max(s["queued"] for s in during) >= 15  # waiting on the scheduler, not the client
    assert max(s["processing"] for s in during) <= 4  # two worker threads, a few in flight

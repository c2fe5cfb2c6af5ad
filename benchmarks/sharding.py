"""Sharded stores: objects written and images/s for 1, 100 and 1000 images per shard.

Reconstructs the same 2,000 photo tiles (64x64) into a store on local disk
and into a store on an S3-protocol server (moto's standalone server, started
here on 127.0.0.1), with ``store.images_per_shard`` 1, 100 and 1000, on one
LocalCluster of 2 workers, in one run.  The solve is cut to 5 ADMM
iterations so that the store's share of the time shows (a full solve,
~0.24 s per image, would hide it).  For each store it reports the objects
(files) written, images/s of the whole run, and the mean time to read one
random image back (50 reads).  Usage::

    python benchmarks/sharding.py [--images 2000] [--shards 1 100 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from flows.reconstruct import StoreTarget, reconstruct_dataset
from pipeline.basis import DEFAULT_BASIS, open_bases
from pipeline.config import StoreConfig
from pipeline.options import CSCOptions
from pipeline.photos import photo_tiles
from pipeline.runtime import connect, disconnect
from pipeline.storage import StorageOptions, filesystem
from pipeline.store import open_group

HERE = Path(__file__).resolve().parent


def start_s3() -> tuple[subprocess.Popen, str]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return server, endpoint


def count_objects(store, storage: StorageOptions) -> int:
    if isinstance(store, Path):
        return sum(1 for p in store.rglob("*") if p.is_file())
    fs, inner = filesystem(store, storage)
    fs.invalidate_cache()
    return len(fs.find(inner))


def read_seconds(store, storage: StorageOptions, n: int, reads: int = 50) -> float:
    images = open_group(store, storage)["images"]
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for index in rng.integers(n, size=reads):
        images[int(index)]
    return (time.perf_counter() - started) / reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 100, 1000])
    args = parser.parse_args()
    server, endpoint = start_s3()
    storage = StorageOptions(endpoint_url=endpoint)
    fs, _ = filesystem("s3://bench", storage)
    fs.mkdir("bench")
    dataset = photo_tiles(args.images, tile=64, seed=2)
    bases = open_bases(DEFAULT_BASIS)
    client = connect(n_workers=2, dashboard_address="127.0.0.1:0")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            for where in ("local disk", "S3 (moto)"):
                for shard in args.shards:
                    store = (Path(folder) / f"s{shard}.zarr" if where == "local disk"
                             else f"s3://bench/s{shard}.zarr")
                    started = time.perf_counter()
                    summary = reconstruct_dataset(
                        client, dataset, bases,
                        StoreTarget(store, StoreConfig(images_per_shard=shard), storage),
                        options=CSCOptions(max_iter=5), progress=False)
                    seconds = time.perf_counter() - started
                    assert summary.done == args.images
                    rows.append({"store": where, "images_per_shard": shard,
                                 "images": args.images,
                                 "objects": count_objects(store, storage),
                                 "images_per_second": round(args.images / seconds, 1),
                                 "read_one_image_ms": round(
                                     1000 * read_seconds(store, storage, args.images), 2)})
                    print(rows[-1], flush=True)
    finally:
        disconnect(client)
        server.kill()
    (HERE / "results_sharding.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

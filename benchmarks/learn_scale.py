"""Memory of the learn flow against the number of images: the client stays flat.

Runs :func:`flows.learn.learn_bases` on 2,000 and on 20,000 photo tiles
(``pipeline.photos.photo_tiles``) in one run, on a LocalCluster of 2
workers, with every stage present but short (4 clusters, one DAE epoch on 500
images, 2 learning steps per cluster), and samples every 50 ms the resident
memory of this process (the client) and of each worker process.  The
per-stage work that grows with N is reading and encoding every image and
clustering the latents; all of it runs on the workers.  Usage::

    python benchmarks/learn_scale.py [--sizes 2000 20000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil

from flows.learn import learn_bases
from pipeline.config import LearnConfig
from pipeline.options import CDLOptions, DAEOptions
from pipeline.photos import photo_tiles
from pipeline.runtime import connect, disconnect

HERE = Path(__file__).resolve().parent

SHORT = LearnConfig(clusters=4, held_out=100, dae_images=500, control=False,
                    dae=DAEOptions(max_epochs=1),
                    dictionary=CDLOptions(max_iter=2, batch_size=8, coding_max_iter=10))


class PeakMemory:
    """Peak RSS of this process and of its child processes (the workers), sampled."""

    def __init__(self, every: float = 0.05):
        self.every, self.client, self.workers = every, 0, 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.client = max(self.client, me.memory_info().rss)
            for child in me.children(recursive=True):
                try:
                    self.workers = max(self.workers, child.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(self.every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--out", type=Path, default=HERE / "results_learn_scale.json")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:  # fresh workers for each size
        dataset = photo_tiles(size, seed=3)
        client = connect(n_workers=2, dashboard_address="127.0.0.1:0")
        try:
            with tempfile.TemporaryDirectory() as work, PeakMemory() as peak:
                started = time.perf_counter()
                result = learn_bases(client, dataset, SHORT, workdir=Path(work), progress=False)
                seconds = time.perf_counter() - started
        finally:
            disconnect(client)
        rows.append({"images": size, "client_peak_mb": peak.client / 2**20,
                     "worker_peak_mb": peak.workers / 2**20, "seconds": seconds,
                     "stage_seconds": result.seconds})
        print(f"{size:6d} images: client peak {rows[-1]['client_peak_mb']:.0f} MB, "
              f"largest worker peak {rows[-1]['worker_peak_mb']:.0f} MB, {seconds:.0f} s",
              flush=True)
    first, last = rows[0], rows[-1]
    growth = {who: last[f"{who}_peak_mb"] / first[f"{who}_peak_mb"] - 1
              for who in ("client", "worker")}
    print(f"peaks from {first['images']} to {last['images']} images: client "
          f"{100 * growth['client']:+.1f} %, largest worker {100 * growth['worker']:+.1f} %")
    args.out.write_text(json.dumps({"settings": str(SHORT), "runs": rows, "growth": growth},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()

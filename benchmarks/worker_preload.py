"""Per-image time of the 64x64 solve on three kinds of worker, in one run.

(a) a worker of the LocalCluster that ``pipeline.runtime.connect`` starts
    (the shipped Dask config: malloc thresholds before start, the preload);
(b) a ``dask worker`` that a user starts with ``--preload pipeline.worker``,
    under its nanny's own environment (Dask's ``MALLOC_TRIM_THRESHOLD_=65536``,
    which the preload overrides through ``mallopt``);
(c) a plain ``dask worker`` under its nanny, nothing of the project's: what
    users' workers ran before, and what a client that registers no plugin
    still gets.

Each worker is one process of one thread.  The same images are solved by
the project's solver as its reconstruct task runs it
(:func:`pipeline.stratified.reconstruct_by_cluster`: cluster assignment, then
the cluster's dictionary, one image at a time on the CPU), timed inside the
worker, with the default solver (``torch``) and with sporco's.  The three
workers take turns, round after round, and each round's time is divided by
(a)'s in the same round, so a noisy, shared machine moves all three alike.
(b) and (c) are reached with a plain ``distributed.Client``, which registers
no plugin (a command's client would give (c) the settings too).

Usage::

    python benchmarks/worker_preload.py [--images 16] [--rounds 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = {"a": "LocalCluster worker (pipeline.runtime.connect)",
         "b": "dask worker --preload pipeline.worker",
         "c": "dask worker, plain nanny"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class UserWorker:
    """A ``dask scheduler`` and one ``dask worker`` (one thread) as a user starts them."""

    def __init__(self, *worker_args: str):
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        # The user's environment: no MALLOC_* of ours (the nanny then sets Dask's default).
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        common = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                      start_new_session=True)
        self.processes = [
            subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--dashboard-address",
                              f"127.0.0.1:{free_port()}"], **common),
            subprocess.Popen([sys.executable, "-m", "dask", "worker", self.address,
                              "--nthreads", "1", "--host", "127.0.0.1", "--dashboard-address",
                              "127.0.0.1:0", *worker_args], **common)]

    def client(self):
        from distributed import Client

        client = Client(self.address, timeout="60s")
        client.wait_for_workers(1, timeout=180)
        return client

    def stop(self) -> None:
        for process in self.processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def solve_in_worker(images, bases, solver: str) -> dict:
    """Runs in the worker: seconds per image of the reconstruct task's solve, and the
    worker's settings."""
    import torch

    import pipeline.worker
    from pipeline.options import CSCOptions
    from pipeline.stratified import reconstruct_by_cluster

    started = time.perf_counter()
    reconstruct_by_cluster(images, bases, options=CSCOptions(solver=solver), batch_size=1,
                           device="cpu")
    return {"s_per_image": (time.perf_counter() - started) / len(images),
            "torch_threads": torch.get_num_threads(),
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
            "applied": pipeline.worker.applied()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=16, help="64x64 images per solve")
    parser.add_argument("--sporco-images", type=int, default=6,
                        help="images per solve with sporco's solver (slower)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results_worker_preload.json")
    args = parser.parse_args()

    import numpy as np

    from pipeline.basis import STRATIFIED_SET, open_bases
    from pipeline.photos import sample
    from pipeline.runtime import connect, disconnect

    tiles = sample().items
    step = len(tiles) // args.images
    images = np.stack([tiles[i * step] for i in range(args.images)]).astype(np.float32) / 255
    bases = open_bases(STRATIFIED_SET)
    solves = {"torch": images, "sporco": images[:: max(1, args.images // args.sporco_images)]
              [:args.sporco_images]}

    started = time.perf_counter()
    users = {"b": UserWorker("--preload", "pipeline.worker"), "c": UserWorker()}
    try:
        clients = {"a": connect(n_workers=1, dashboard_address="127.0.0.1:0"),
                   **{kind: user.client() for kind, user in users.items()}}
        print(f"workers up in {time.perf_counter() - started:.1f} s", flush=True)
        futures = {kind: client.scatter(bases, broadcast=True)
                   for kind, client in clients.items()}
        for kind, client in clients.items():  # warm-up: first calls, dictionary spectra
            for solver, batch in solves.items():
                client.submit(solve_in_worker, batch[:2], futures[kind], solver,
                              pure=False).result()
        times = {solver: {kind: [] for kind in clients} for solver in solves}
        seen = {}
        for round_ in range(args.rounds):
            for solver, batch in solves.items():
                order = list(clients) if round_ % 2 == 0 else list(clients)[::-1]
                for kind in order:
                    result = clients[kind].submit(solve_in_worker, batch, futures[kind], solver,
                                                  pure=False).result()
                    times[solver][kind].append(result["s_per_image"])
                    seen[kind] = {k: v for k, v in result.items() if k != "s_per_image"}
            print(json.dumps({s: {k: round(v[-1], 4) for k, v in t.items()}
                              for s, t in times.items()}), flush=True)
        for kind in ("b", "c"):
            clients[kind].close()
        disconnect(clients["a"])
    finally:
        for user in users.values():
            user.stop()

    results = {"machine": machine(args), "kinds": KINDS, "workers": seen, "solvers": {}}
    for solver, by_kind in times.items():
        row = {"images": len(solves[solver]), "rounds": args.rounds}
        for kind, seconds in by_kind.items():
            ratios = [s / a for s, a in zip(seconds, by_kind["a"], strict=True)]
            row[kind] = {"s_per_image_median": statistics.median(seconds),
                         "s_per_image": seconds,
                         "ratio_to_a_median": statistics.median(ratios),
                         "ratio_to_a": ratios}
        results["solvers"][solver] = row
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))


def table(results: dict) -> str:
    lines = ["| worker | solver | s per image (median) | against (a) |", "|---|---|---|---|"]
    for solver, row in results["solvers"].items():
        for kind, label in results["kinds"].items():
            lines.append(f"| ({kind}) {label} | {solver} | {row[kind]['s_per_image_median']:.3f}"
                         f" | {row[kind]['ratio_to_a_median']:.2f}x |")
    return "\n".join(lines)


def machine(args) -> dict:
    import dask
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "dask": dask.__version__, "libc": " ".join(platform.libc_ver()),
            "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}


if __name__ == "__main__":
    main()

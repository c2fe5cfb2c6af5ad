"""Whole-process time of a small job: ``python -m pipeline.reconstruct`` on 8 images.

The command runs as its own process (imports, config, checks, a LocalCluster
of one worker per core, the flow, closing, the interpreter's exit), timed
from outside, on a YAML config of 8 photo tiles of 64x64 written to a
temporary folder.  Two or more source trees of the project are compared, in
turns (A B A B ...), so that a shared, noisy machine moves all of them
alike; each is given as ``NAME=FOLDER`` and run with that folder first on
the path (the same virtual environment for all).  Make the older tree with
``git worktree add /tmp/before <commit>``.

Besides the whole time, each run records when the command printed its
dashboard link (the LocalCluster is up and set) and its summary (the flow is
done), from the lines of its output as they arrive.

``--variant NAME=ARGS`` runs the first tree again with more arguments.

Usage::

    python benchmarks/startup.py --tree before=/tmp/before --tree after=. [--runs 5]
    python benchmarks/startup.py --tree processes=. --variant threads='--local-workers threads'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = "dataset:\n  source: photos\n  count: 8\n  image_size: 64\n"


def one_run(tree: Path, config: Path, out: Path, extra: tuple[str, ...] = ()) -> dict:
    """Start the command, note when its lines come, wait for it; seconds from the start."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.reconstruct", str(config), "--out", str(out),
         "--overwrite", "--dashboard-address", "127.0.0.1:0", *extra],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marks: dict[str, float] = {}

    def watch():
        for line in process.stderr:
            now = time.perf_counter() - started
            if "Dask dashboard" in line:
                marks.setdefault("dashboard_s", now)
            if "images done in" in line:
                marks.setdefault("summary_s", now)

    watcher = threading.Thread(target=watch)
    watcher.start()
    code = process.wait()
    wall = time.perf_counter() - started
    watcher.join()
    if code != 0:
        raise RuntimeError(f"{tree}: exit status {code}")
    return {"wall_s": wall, **marks}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=FOLDER",
                        help="a source tree to run, e.g. before=/tmp/before (repeatable; the "
                        "first is the baseline)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="the first tree again, with these arguments added, e.g. "
                        "threads='--local-workers threads' (repeatable)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each tree")
    parser.add_argument("--config", type=Path,
                        help="a YAML config to run instead of the 8 photo tiles")
    parser.add_argument("--out", type=Path, default=HERE / "results_startup.json")
    args = parser.parse_args()
    trees = {}
    for item in args.tree:
        name, _, folder = item.partition("=")
        trees[name] = (Path(folder).resolve(), ())
    first = next(iter(trees.values()))[0]
    for item in args.variant:
        name, _, extra = item.partition("=")
        trees[name] = (first, tuple(shlex.split(extra)))
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        config = args.config.resolve() if args.config else Path(tmp) / "eight.yaml"
        if not args.config:
            config.write_text(CONFIG)
        for tree, extra in trees.values():  # once each, unrecorded: into the page cache
            one_run(tree, config, Path(tmp) / "warm.zarr", extra)
        for round_ in range(args.runs):
            order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
            for name in order:
                runs[name].append(one_run(trees[name][0], config, Path(tmp) / f"{name}.zarr",
                                          trees[name][1]))
                print(name, json.dumps({k: round(v, 2) for k, v in runs[name][-1].items()}),
                      flush=True)
    baseline = next(iter(trees))
    summary = {}
    for name, rows in runs.items():
        summary[name] = {key: statistics.median(row[key] for row in rows)
                         for key in ("wall_s", "dashboard_s", "summary_s")}
        summary[name]["after_summary_s"] = statistics.median(
            row["wall_s"] - row["summary_s"] for row in rows)
        ratios = [row["wall_s"] / base["wall_s"] for row, base in
                  zip(rows, runs[baseline], strict=True)]
        summary[name]["wall_ratio_to_" + baseline] = statistics.median(ratios)
        summary[name]["wall_ratios"] = ratios
    results = {"machine": machine(),
               "trees": {k: " ".join([str(v[0]), *v[1]]) for k, v in trees.items()},
               "config": args.config.read_text() if args.config else CONFIG, "runs": runs,
               "median": summary}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(sys.argv)}


if __name__ == "__main__":
    main()

"""Speed-up of learning the per-cluster dictionaries in parallel.

Runs :func:`flows.learn.learn_bases` on the embedded sample twice in one run,
same seed and settings (no control dictionary, no held-out images): on a
LocalCluster of 1 worker (the clusters learned one after another) and of 2
workers (in parallel), and reports the wall time of the per-cluster stage of
each and their ratio.  The online learner's steps are cut (``--iterations``,
default 10) so the serial run stays short; the stage's cost is proportional
to them.

Usage::

    python benchmarks/learn_parallel.py [--clusters 10] [--iterations 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from flows.learn import learn_bases
from pipeline.config import LearnConfig
from pipeline.options import CDLOptions
from pipeline.photos import sample
from pipeline.runtime import connect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    dataset = sample()
    stage = {}
    for workers in (1, 2):
        client = connect(n_workers=workers, dashboard_address="127.0.0.1:0")
        settings = LearnConfig(clusters=args.clusters, control=False, held_out=0,
                               dictionary=CDLOptions(max_iter=args.iterations))
        with tempfile.TemporaryDirectory() as work:
            result = learn_bases(client, dataset, settings, workdir=Path(work), progress=False)
        stage[workers] = result.seconds["dictionaries"]
        print(f"{workers} worker(s): per-cluster stage {stage[workers]:.1f} s, "
              f"sum of task times {np.sum(result.dictionaries.task_seconds):.1f} s, "
              f"workers used {len(set(result.dictionaries.workers))}, "
              f"cluster sizes {np.bincount(result.strata.labels).tolist()}", flush=True)
        cluster = client.cluster
        client.close()
        cluster.close()
    print(f"speed-up of 2 workers over 1: {stage[1] / stage[2]:.2f}x")


if __name__ == "__main__":
    main()

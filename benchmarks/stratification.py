"""Does stratification pay?  Every basis set learned the same way, measured on unseen photographs.

Two steps, each resumable (a set or a measurement already made is kept):

``learn``
    runs ``python -m pipeline.learn`` (the ``photos`` data set: three
    scenes held out of every stage) once per design of :data:`DESIGNS`,
    into ``--sets`` (default ``outputs/stratification``): k = 1, 4 and 10
    clusters, of DAE latents (the paper's) or of high-pass texture features,
    each dictionary from a random start, fine-tuned from the converged one
    basis, or fine-tuned with half its filters shared, every dictionary
    learned with ``--budget converged`` (the same stopping rule for all);
    and the two equal-cost designs: one basis learned on for as many steps
    as the 10 DAE clusters took together, and 10 DAE clusters sharing the
    steps the one basis took.
``measure``
    codes, with each set (each image with its own cluster's dictionary) and
    with the original project's ``basis_64`` where ``../shared`` has it: the
    500 held-out tiles of the held-out scenes at lambda 0.1, 0.2 and 0.3
    (mean PSNR and code density, overall and per cluster, and the PSNR at
    the one basis's density, interpolated on the lambda curve); the ten
    published 64x64 photographs and their FGSM 8/255 versions (PSNR of the
    reconstruction, PSNR between the reconstructions of clean and attacked,
    and how often both land in one cluster).

Usage::

    python benchmarks/stratification.py learn      # hours on 2 cores; each set's time is in
                                                   # its manifest
    python benchmarks/stratification.py measure    # writes results_stratification.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "shared" / "reference"
LAMBDAS = (0.1, 0.2, 0.3)

#: name -> the learn command's arguments (after ``photos``), in the order they are learned;
#: ``{k1}`` is the one basis's folder.
DESIGNS = {
    "k1": ["--clusters", "1"],
    "k10-dae": ["--clusters", "10"],
    "k4-dae": ["--clusters", "4"],
    "k10-highpass": ["--clusters", "10", "--feature", "highpass"],
    "k4-highpass": ["--clusters", "4", "--feature", "highpass"],
    "k10-dae-tuned": ["--clusters", "10", "--init", "{k1}"],
    "k4-dae-tuned": ["--clusters", "4", "--init", "{k1}"],
    "k10-dae-shared": ["--clusters", "10", "--init", "{k1}", "--shared-filters", "32"],
    "k4-dae-shared": ["--clusters", "4", "--init", "{k1}", "--shared-filters", "32"],
    "k1-at-k10-cost": None,  # one basis, as many steps as k10-dae took together
    "k10-dae-at-k1-cost": None,  # ten DAE clusters sharing the steps k1 took
    "k10-highpass-tuned": ["--clusters", "10", "--feature", "highpass", "--init", "{k1}"],
    "k10-highpass-shared": ["--clusters", "10", "--feature", "highpass", "--init", "{k1}",
                            "--shared-filters", "32"],
    # A five times stricter stopping rule (0.1 % over the last fifth): does learning longer
    # change the ranking?
    "k1-strict": ["--clusters", "1", "--set", "learn.dictionary.stop_tol=0.001"],
    "k4-dae-strict": ["--clusters", "4", "--set", "learn.dictionary.stop_tol=0.001"],
}
COMMON = ["--budget", "converged", "--set", "learn.control=false"]
FIXED = ["--set", "learn.control=false", "--set", "learn.dictionary.stop_tol=1e-9"]  # no stop


def learn(sets: Path, only: list[str] | None) -> None:
    sets.mkdir(parents=True, exist_ok=True)
    k1 = sets / "k1"
    for name, args in DESIGNS.items():
        if only and name not in only:
            continue
        if args is None:
            args = _equal_cost(name, sets)
            if args is None:
                print(f"{name}: needs k1 and k10-dae first", flush=True)
                continue
        else:
            args = [a.replace("{k1}", str(k1)) for a in args] + COMMON
        _learn_one(sets / name, args)


def _equal_cost(name: str, sets: Path) -> list[str] | None:
    """The equal-cost designs' arguments: the steps of one design given to the other."""
    if not (_done(sets / "k1") and _done(sets / "k10-dae")):
        return None
    one, ten = sum(_steps(sets / "k1")), sum(_steps(sets / "k10-dae"))
    if name == "k1-at-k10-cost":
        return ["--clusters", "1", "--init", str(sets / "k1"), "--iterations",
                str(max(ten - one, 1)), *FIXED]
    return ["--clusters", "10", "--iterations", str(max(one // 10, 1)), *FIXED]


def _learn_one(folder: Path, args: list[str]) -> None:
    if _done(folder):
        print(f"{folder.name}: already learned", flush=True)
        return
    command = [sys.executable, "-m", "pipeline.learn", "photos", "--out", str(folder),
               "--overwrite", "-q", *args]
    print(f"{folder.name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"{folder.name}: {time.perf_counter() - started:.0f} s, steps {_steps(folder)}",
          flush=True)


def _done(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def _steps(folder: Path) -> list[int]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return [record["steps"] for record in manifest["learning"]]


# --- measuring ----------------------------------------------------------------------------


def training_scene_tiles(sets: Path, count: int = 500) -> np.ndarray:
    """``count`` tiles of the scenes the sets learned from, drawn with another seed."""
    from pipeline.photos import photo_tiles

    held = set(json.loads((sets / "k1" / "manifest.json").read_text())["held_out_sources"])
    fresh = photo_tiles(20000, seed=1)
    rows = [i for i, scene in enumerate(fresh.sources) if fresh.classes[scene] not in held]
    chosen = np.random.default_rng(1).choice(rows, count, replace=False)
    return np.stack([fresh.load(i) for i in np.sort(chosen)])


def held_out_tiles(sets: Path) -> tuple[np.ndarray, list[str]]:
    """The held-out tiles every set of ``sets`` kept out (one list: the same split)."""
    from pipeline.photos import photo_tiles

    lists = {tuple(json.loads((f / "manifest.json").read_text())["held_out_images"])
             for f in sets.iterdir() if _done(f)}
    if len(lists) != 1:
        raise SystemExit(f"{sets}: the sets hold out {len(lists)} different tile lists")
    names = list(lists.pop())
    dataset = photo_tiles()
    index = {name: i for i, name in enumerate(dataset.names)}
    return np.stack([dataset.load(index[name]) for name in names]), names


def published_pairs() -> tuple[np.ndarray, np.ndarray] | None:
    from pipeline.images import read_image

    folder = REFERENCE / "sample_images_64"
    if not folder.is_dir():
        return None
    clean = sorted((folder / "original").glob("*.png"))
    attacked = {p.name.split("_")[0]: p for p in (folder / "fgsm_0.08").glob("*.png")}
    return (np.stack([read_image(p) for p in clean]),
            np.stack([read_image(attacked[p.name.split("_")[0]]) for p in clean]))


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    error = np.mean((a.astype(np.float64) - b) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(1 / error)


def measure_set(name: str, path: str, tiles: np.ndarray, seen: np.ndarray) -> dict:
    """Every measurement of one set (run in a worker process, one thread)."""
    import torch

    from pipeline.basis import open_bases
    from pipeline.options import CSCOptions
    from pipeline.stratified import assign_clusters, reconstruct_by_cluster

    torch.set_num_threads(1)
    started = time.perf_counter()
    bases = open_bases(path)
    clusters = assign_clusters(tiles, bases)
    row = {"set": name, "clusters": len(bases.bases),
           "cluster_sizes": np.bincount(clusters, minlength=len(bases.bases)).tolist()}
    for lmbda in LAMBDAS:
        values, density = code_by_cluster(tiles, clusters, bases, CSCOptions(lmbda=lmbda))
        row[f"lmbda {lmbda:g}"] = {
            "psnr": float(values.mean()), "psnr_se": standard_error(values),
            "density": float(density.mean()), "psnr_per_image": values.tolist(),
            "per_cluster_psnr": [float(values[clusters == c].mean()) if (clusters == c).any()
                                 else None for c in range(len(bases.bases))]}
    values, _ = code_by_cluster(seen, assign_clusters(seen, bases), bases, CSCOptions())
    row["training_scenes"] = {"psnr": float(values.mean()), "psnr_per_image": values.tolist()}
    pairs = published_pairs()
    if pairs is not None:
        clean, attacked = pairs
        rec_clean, _, c_clean = reconstruct_by_cluster(clean, bases, device="cpu")
        rec_attacked, _, c_attacked = reconstruct_by_cluster(attacked, bases, device="cpu")
        row["published"] = {"psnr": float(psnr(clean, rec_clean).mean()),
                            "clean_vs_attacked": float(psnr(rec_clean, rec_attacked).mean()),
                            "same_cluster": float(np.mean(c_clean == c_attacked))}
    row["seconds"] = time.perf_counter() - started
    return row


def code_by_cluster(tiles: np.ndarray, clusters: np.ndarray, bases,
                    options) -> tuple[np.ndarray, np.ndarray]:
    """Each tile's PSNR and code density, coded with its own cluster's basis."""
    from pipeline.quality import coding_quality

    values, density = np.zeros(len(tiles)), np.zeros(len(tiles))
    for c in np.unique(clusters):
        rows = clusters == c
        quality = coding_quality(tiles[rows], bases.bases[c], options)
        values[rows], density[rows] = quality.psnr, quality.density
    return values, density


def standard_error(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def paired_gain(measured: dict, reference: dict) -> dict:
    """Mean per-image PSNR difference from ``reference`` on the same tiles, with its SE."""
    difference = np.subtract(measured["psnr_per_image"], reference["psnr_per_image"])
    return {"db": float(difference.mean()), "se": standard_error(difference)}


def at_density(row: dict, density: float) -> float:
    """The set's held-out PSNR at ``density``, interpolated linearly in log density over
    its lambda curve (extrapolated from the nearest two points outside it)."""
    points = sorted((np.log(row[f"lmbda {m:g}"]["density"]), row[f"lmbda {m:g}"]["psnr"])
                    for m in LAMBDAS)
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    i = int(np.clip(np.searchsorted(x, np.log(density)), 1, len(x) - 1))
    return float(y[i - 1] + (y[i] - y[i - 1]) * (np.log(density) - x[i - 1]) / (x[i] - x[i - 1]))


def measure(sets: Path, out: Path) -> None:
    tiles, names = held_out_tiles(sets)
    seen = training_scene_tiles(sets)
    candidates = {f.name: str(f) for f in sorted(sets.iterdir()) if _done(f)}
    published = REFERENCE / "basis" / "basis_64" / "64_p8_lm0.2.npy"
    if published.is_file():
        candidates["published basis_64"] = str(published)
    earlier = json.loads(out.read_text())["results"] if out.is_file() else {}
    done = {name: row for name, row in earlier.items()  # rows of sets still there
            if name in candidates and "lmbda 0.2" in row}
    todo = [name for name in candidates if name not in done]
    with ProcessPoolExecutor(2) as pool:
        for row in pool.map(measure_set, todo, [candidates[n] for n in todo],
                            [tiles] * len(todo), [seen] * len(todo)):
            done[row["set"]] = row
            print(f"{row['set']}: {row['lmbda 0.2']['psnr']:.3f} dB at density "
                  f"{row['lmbda 0.2']['density']:.5f} ({row['seconds']:.0f} s)", flush=True)
            _write(out, sets, names, done)
    reference = done["k1"]["lmbda 0.2"]
    for row in done.values():
        row["psnr_at_k1_density"] = at_density(row, reference["density"])
        row["gain_over_k1"] = paired_gain(row["lmbda 0.2"], reference)
        row["training_scenes"]["gain_over_k1"] = paired_gain(row["training_scenes"],
                                                             done["k1"]["training_scenes"])
    _write(out, sets, names, done)
    plot(done, out.with_suffix(".png"))
    print("\n".join(table(done)))


def table(results: dict) -> list[str]:
    """The comparison as a markdown table, one row per set."""
    lines = ["| set | held-out PSNR, lambda 0.2 | density | gain over k1 (paired) | "
             "PSNR at k1's density | lambda 0.1 / 0.3 | training scenes: gain over k1 | "
             "published photos | rec(clean) vs rec(FGSM) | same cluster |", "|" + "---|" * 10]
    for name, row in results.items():
        at = {m: row[f"lmbda {m:g}"] for m in LAMBDAS}
        published = row.get("published", {})
        lines.append(
            f"| {name} | {at[0.2]['psnr']:.2f} ± {at[0.2]['psnr_se']:.2f} | "
            f"{at[0.2]['density']:.5f} | {row['gain_over_k1']['db']:+.3f} ± "
            f"{row['gain_over_k1']['se']:.3f} | {row['psnr_at_k1_density']:.2f} | "
            f"{at[0.1]['psnr']:.2f} / {at[0.3]['psnr']:.2f} | "
            f"{row['training_scenes']['gain_over_k1']['db']:+.3f} ± "
            f"{row['training_scenes']['gain_over_k1']['se']:.3f} | "
            f"{published.get('psnr', float('nan')):.2f} | "
            f"{published.get('clean_vs_attacked', float('nan')):.2f} | "
            f"{published.get('same_cluster', float('nan')):.1f} |")
    return lines


def plot(results: dict, path: Path) -> None:
    """Held-out PSNR against code density over lambda 0.1, 0.2, 0.3, one line per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, row in results.items():
        points = [(row[f"lmbda {m:g}"]["density"], row[f"lmbda {m:g}"]["psnr"])
                  for m in LAMBDAS]
        style = {"color": "black", "lw": 2.5} if name == "k1" else {
            "ls": "--", "color": "0.5"} if name.startswith("published") else {"lw": 1}
        ax.plot(*zip(*points, strict=True), marker="o", ms=3, label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("code density (share of non-zero coefficients)")
    ax.set_ylabel("PSNR on the held-out scenes (dB)")
    ax.set_title("lambda 0.3, 0.2, 0.1 from left to right")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write(out: Path, sets: Path, names: list[str], results: dict) -> None:
    out.write_text(json.dumps({"sets": str(sets), "held_out_images": len(names),
                               "lambdas": LAMBDAS, "results": results}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["learn", "measure"])
    parser.add_argument("--sets", type=Path, default=Path("outputs/stratification"))
    parser.add_argument("--only", nargs="*", help="learn only these designs")
    parser.add_argument("--out", type=Path, default=HERE / "results_stratification.json")
    args = parser.parse_args()
    if args.step == "learn":
        learn(args.sets, args.only)
    else:
        measure(args.sets, args.out)


if __name__ == "__main__":
    main()

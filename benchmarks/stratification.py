"""Does stratification pay?  Held-out PSNR and code density of each basis, and the defense metric.

For every basis or basis set compared (the shipped sets, the control
dictionary that the 10-cluster run learned on all its images with the same
budget, and the original project's published basis when ``../shared`` is
there), on the same lambda (0.2) and solver:

- the 500 held-out tiles of the ``photos`` data set that the shipped
  ``photos-k10`` run kept out of every stage (its manifest lists them), each
  reconstructed with its own cluster's dictionary for a set: mean PSNR and
  mean code density (fraction of non-zero coefficients), per cluster of the
  10-cluster set and overall;
- the ten published 64x64 photographs and their FGSM (8/255) versions:
  PSNR(image, reconstruction), PSNR(reconstruction of clean, reconstruction
  of attacked), and for a set the share of pairs assigned to the same cluster.

Usage::

    python benchmarks/stratification.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pipeline.basis import BASIS_FOLDER, BasisSet, open_bases
from pipeline.datasets import photo_tiles, read_image
from pipeline.quality import coding_quality
from pipeline.stratified import assign_clusters, reconstruct_by_cluster

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "shared" / "reference"


def held_out_tiles(manifest: dict) -> np.ndarray:
    dataset = photo_tiles()  # the photos config's tiles, which the shipped sets learned from
    index = {name: i for i, name in enumerate(dataset.names)}
    return np.stack([dataset.load(index[name]) for name in manifest["held_out_images"]])


def quality(images: np.ndarray, bases: BasisSet, clusters: np.ndarray):
    psnr, density = np.zeros(len(images)), np.zeros(len(images))
    for c in np.unique(clusters):
        rows = clusters == c
        psnr[rows], density[rows] = coding_quality(images[rows], bases.bases[c])
    return psnr, density


def published_pairs() -> tuple[np.ndarray, np.ndarray] | None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="photos-k10", help="the stratified set measured")
    parser.add_argument("--out", type=Path, default=HERE / "results_stratification.json")
    args = parser.parse_args()
    folder = BASIS_FOLDER / args.set
    manifest = json.loads((folder / "manifest.json").read_text())
    candidates = {args.set: open_bases(folder),
                  f"{args.set} control (one dictionary, same budget)":
                      open_bases(folder / manifest["control"])}
    for name in ("photos-k1", "sample-k10", "sample-k1"):
        if (BASIS_FOLDER / name).is_dir():
            candidates[name] = open_bases(BASIS_FOLDER / name)
    published = REFERENCE / "basis" / "basis_64" / "64_p8_lm0.2.npy"
    if published.is_file():
        candidates["published basis_64"] = open_bases(published)

    tiles = held_out_tiles(manifest)
    strata = assign_clusters(tiles, candidates[args.set])
    pairs = published_pairs()
    results = {}
    for name, bases in candidates.items():
        own, density = quality(tiles, bases, assign_clusters(tiles, bases))
        row = {"held_out_psnr": float(own.mean()), "held_out_density": float(density.mean()),
               "per_cluster_psnr": [float(own[strata == c].mean()) if (strata == c).any()
                                    else None for c in range(len(candidates[args.set].bases))]}
        if pairs is not None:
            clean, attacked = pairs
            rec_clean, _, c_clean = reconstruct_by_cluster(clean, bases)
            rec_attacked, _, c_attacked = reconstruct_by_cluster(attacked, bases)
            row.update(photos_psnr=float(psnr(clean, rec_clean).mean()),
                       clean_vs_attacked_psnr=float(psnr(rec_clean, rec_attacked).mean()),
                       same_cluster=float(np.mean(c_clean == c_attacked)))
        results[name] = row
        print(f"{name:52s} held-out {row['held_out_psnr']:.3f} dB, density "
              f"{row['held_out_density']:.5f}" + (
                  f"; published photos {row['photos_psnr']:.2f} dB, rec clean vs attacked "
                  f"{row['clean_vs_attacked_psnr']:.2f} dB, same cluster "
                  f"{row['same_cluster']:.1f}" if pairs is not None else ""), flush=True)
    args.out.write_text(json.dumps({"set": args.set, "held_out_images": len(tiles),
                                    "cluster_sizes": np.bincount(
                                        strata, minlength=len(candidates[args.set].bases))
                                    .tolist(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

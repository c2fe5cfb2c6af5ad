"""How well a basis codes images: reconstruction PSNR, code density and objective, per image.

Two dictionaries compared at the same sparsity weight are only comparable
with both PSNR and density: a dictionary can reconstruct more detail by
coding with more non-zero coefficients, which is also more room for
adversarial noise.  The CBPDN objective is what learning minimises, so it is
the number a learner's convergence is judged by (:mod:`pipeline.online_cdl`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.options import CSCOptions
from pipeline.torch_solver import reconstruct_and_count


@dataclass(frozen=True)
class CodingQuality:
    """Per image: how one dictionary reconstructs and codes it.

    Attributes
    ----------
    psnr : (N,) float64 ndarray
        ``10 log10(1 / MSE)`` of the reconstruction, in dB.
    density : (N,) float64 ndarray
        Fraction of the ``M x H x W`` coefficients of the code ``Y`` that are not zero.
    objective : (N,) float64 ndarray
        CBPDN objective of the code, ``0.5 ||D * Y - s||^2 + lambda ||Y||_1``
        (``s`` the high-pass part).
    usage : (N, M) float64 ndarray
        Fraction of each filter's coefficients that are not zero.
    """

    psnr: np.ndarray
    density: np.ndarray
    objective: np.ndarray
    usage: np.ndarray


def coding_quality(
    images: np.ndarray,
    basis: np.ndarray,
    options: CSCOptions = CSCOptions(),
    *,
    device: str = "cpu",
    keep_spectrum: bool = True,
) -> CodingQuality:
    """PSNR of each image's reconstruction, and the density and objective of its code.

    The reconstruction is the pipeline's (the batched solver: the low-pass
    part plus ``D * Y``, finished as ``options.output`` says).

    Parameters
    ----------
    images : (N, H, W, 3) ndarray, float32
        Images in [0, 1].
    basis : (P, P, 3, M) ndarray, float32
        Joint colour dictionary.
    options : CSCOptions
        Solver settings.
    device : str
        Where the solver runs.
    keep_spectrum : bool
        Keep the dictionary's transforms for the next call
        (:func:`pipeline.torch_solver.reconstruct_and_count`); False for a
        dictionary being learned.

    Returns
    -------
    CodingQuality
        Each measure per image.

    Examples
    --------
    >>> from pipeline.basis import DEFAULT_BASIS, load_basis
    >>> images = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    >>> quality = coding_quality(images, load_basis(DEFAULT_BASIS))
    >>> quality.psnr.shape, bool(np.all((quality.density > 0) & (quality.density < 1)))
    ((2,), True)
    """
    coded = reconstruct_and_count(images, basis, options, device=device,
                                  keep_spectrum=keep_spectrum)
    error = np.mean((coded.reconstructions.astype(np.float64) - images) ** 2, axis=(1, 2, 3))
    return CodingQuality(psnr=10 * np.log10(1 / np.maximum(error, 1e-20)),
                         density=coded.density, objective=coded.objective, usage=coded.usage)


@dataclass(kw_only=True)
class HeldOut:
    """The held-out images coded with their own cluster's dictionary and with the control's.

    Each array is (H,): ``cluster``, then the PSNR of the reconstruction (dB)
    and the code density (fraction of non-zero coefficients) with each.
    """

    cluster: np.ndarray
    psnr: np.ndarray
    density: np.ndarray
    control_psnr: np.ndarray | None
    control_density: np.ndarray | None

    @classmethod
    def concatenate(cls, parts: list[HeldOut]) -> HeldOut:
        """Measurements of consecutive chunks of images, as one."""
        def joined(name: str) -> np.ndarray | None:
            arrays = [getattr(part, name) for part in parts]
            return None if arrays[0] is None else np.concatenate(arrays)
        return cls(cluster=joined("cluster"), psnr=joined("psnr"), density=joined("density"),
                   control_psnr=joined("control_psnr"),
                   control_density=joined("control_density"))

    def table(self, n_clusters: int) -> list[dict]:
        """One row per cluster, then ``"all"``: images, mean PSNR and density with the
        cluster's dictionary and (where learned) the control's, and the PSNR gain."""
        rows = []
        for c in [*range(n_clusters), "all"]:
            mine = np.ones(len(self.cluster), bool) if c == "all" else self.cluster == c
            row = {"cluster": c, "images": int(mine.sum()),
                   "psnr": _mean(self.psnr, mine), "density": _mean(self.density, mine)}
            if self.control_psnr is not None:
                row.update(control_psnr=_mean(self.control_psnr, mine),
                           control_density=_mean(self.control_density, mine))
                row["gain_db"] = (row["psnr"] - row["control_psnr"]) if mine.any() else None
            rows.append(row)
        return rows

def measure_by_cluster(images: np.ndarray, clusters: np.ndarray, bases: list[np.ndarray],
                       control: np.ndarray | None, options: CSCOptions, *,
                       device: str = "cpu") -> HeldOut:
    """Each image coded with its cluster's dictionary and, where there is one, the control's.

    ``images`` (N, H, W, 3) float32 in [0, 1]; ``clusters`` (N,) the cluster of
    each; ``bases[c]`` cluster ``c``'s dictionary; ``control`` one dictionary
    learned on all the clusters' images (None: not learned).
    """
    psnr, density = np.zeros(len(images)), np.zeros(len(images))
    for c in np.unique(clusters):
        rows = clusters == c
        quality = coding_quality(images[rows], bases[c], options, device=device)
        psnr[rows], density[rows] = quality.psnr, quality.density
    if control is None:
        return HeldOut(cluster=clusters, psnr=psnr, density=density, control_psnr=None,
                       control_density=None)
    quality = coding_quality(images, control, options, device=device)
    return HeldOut(cluster=clusters, psnr=psnr, density=density, control_psnr=quality.psnr,
                   control_density=quality.density)


def _mean(values: np.ndarray, rows: np.ndarray) -> float | None:
    return float(np.mean(values[rows])) if rows.any() else None

"""Defenses as PyTorch modules: images -> transformed images, with a BPDA backward pass.

:class:`CSCDefense` runs the pipeline's own stage,
:func:`pipeline.stratified.reconstruct_by_cluster` (each image with the
dictionary of its KMeans cluster), so a model ``nn.Sequential(defense,
classifier)`` sees what a classifier sees after ``pipeline.reconstruct``.  The
reconstruction is an ADMM solve, not differentiable in any useful sense, so
the module passes gradients straight through it (backward pass
differentiable approximation, BPDA [1]_): the gradient an adaptive attacker
needs.  :class:`TransformDefense` does the same for any NumPy image
transformation (the baselines: JPEG, median, bit depth, TV), so an adaptive
attack treats every defended row alike.

References
----------
.. [1] A. Athalye, N. Carlini and D. Wagner, "Obfuscated Gradients Give a
   False Sense of Security", ICML 2018, arXiv:1802.00420.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline import unrolled
from pipeline.basis import BasisSet, open_bases
from pipeline.options import CSCOptions
from pipeline.stratified import assign_clusters, reconstruct_by_cluster


class _StraightThrough(torch.autograd.Function):
    """Forward: the reconstruction computed outside autograd; backward: identity."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        return reconstruction

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class TransformDefense(torch.nn.Module):
    """A NumPy image transformation as a PyTorch module, with an identity backward pass (BPDA).

    Parameters
    ----------
    transform : callable
        (N, H, W, 3) float32 images in [0, 1] -> the same shape and range.
    name : str
        What ``repr`` shows.
    bpda : bool
        True: the backward pass is the identity, the gradient an adaptive
        (BPDA) attacker uses.  False: no gradient flows to the input.

    Notes
    -----
    Input and output are (B, 3, H, W) float tensors in [0, 1], PyTorch's
    layout; the transformation runs without autograd and its result is
    returned on the input's device and dtype.
    """

    def __init__(self, transform=None, name: str = "", *, bpda: bool = True):
        super().__init__()
        self._transform, self.name, self.bpda = transform, name, bpda

    def transform(self, images: np.ndarray) -> np.ndarray:
        return self._transform(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(x.shape)}")
        images = x.detach().permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
        out = torch.from_numpy(np.ascontiguousarray(self.transform(images)))
        out = out.permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)
        if self.bpda and x.requires_grad:
            return _StraightThrough.apply(x, out)
        return out

    def extra_repr(self) -> str:
        return f"{self.name}, bpda={self.bpda}"


class CSCDefense(TransformDefense):
    """CSC reconstruction as a PyTorch module, with an identity backward pass (BPDA) or the
    exact gradient of the unrolled solver.

    ``CSCDefense(bases)(x)`` equals the pipeline's reconstruction of the
    same images with the same bases and settings (the same function,
    :func:`pipeline.stratified.reconstruct_by_cluster`).  With
    ``exact=True``, an input that requires gradients is reconstructed by
    :func:`pipeline.unrolled.reconstruct` instead (the same iterations under
    autograd, each image with the dictionary of its cluster, the cluster
    chosen without gradient), so back-propagation goes through every ADMM
    iteration the solve made.

    Parameters
    ----------
    bases : BasisSet, str or Path
        A basis set (or single basis) object, or a path that
        :func:`pipeline.basis.open_bases` reads (a set folder or a ``.npy``).
    options : CSCOptions
        Solver settings; the pipeline's defaults by default.
    bpda : bool
        True: the backward pass is the identity, the gradient an adaptive
        (BPDA) attacker uses.  False: no gradient flows to the input.
    exact : bool
        True: the gradient of the unrolled solver instead of BPDA's identity
        (several times the cost of a solve per step).
    batch_size, device
        Of the solver (:func:`pipeline.solvers.reconstruct`).

    Notes
    -----
    Input and output are (B, 3, H, W) float tensors in [0, 1], PyTorch's
    layout; the solve runs without autograd on the solver's device and the
    result is returned on the input's device and dtype.
    """

    def __init__(self, bases: BasisSet | str | Path, options: CSCOptions = CSCOptions(), *,
                 bpda: bool = True, exact: bool = False, batch_size: int | None = None,
                 device: str = "auto"):
        super().__init__(name="CSC", bpda=bpda)
        self.bases = bases if isinstance(bases, BasisSet) else open_bases(bases)
        self.options, self.exact = options, exact
        self.batch_size, self.device = batch_size, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.exact and x.requires_grad):
            return super().forward(x)
        images = x.detach().permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
        clusters = assign_clusters(images, self.bases)
        parts, positions = [], []
        for cluster in np.unique(clusters):
            rows = np.flatnonzero(clusters == cluster)
            reconstructed, _ = unrolled.reconstruct(x[torch.from_numpy(rows).to(x.device)],
                                                    self.bases.bases[cluster], self.options)
            parts.append(reconstructed)
            positions.append(rows)
        order = torch.from_numpy(np.argsort(np.concatenate(positions))).to(x.device)
        return torch.cat(parts)[order]

    def transform(self, images: np.ndarray) -> np.ndarray:
        recs, _, _ = reconstruct_by_cluster(images, self.bases, options=self.options,
                                            batch_size=self.batch_size, device=self.device)
        return recs

    def extra_repr(self) -> str:
        kind = f"{len(self.bases.bases)} clusters" if self.bases.stratified else "one basis"
        gradient = "exact" if self.exact else f"bpda={self.bpda}"
        return f"{kind}, lmbda={self.options.lmbda}, {gradient}"

"""Step the PyTorch iteration and the Triton kernels' side by side on CPU tensors.

Run with ``TRITON_INTERPRET=1`` (Triton's interpreter runs the GPU kernels on
a CPU): :func:`pipeline.torch_solver._iterate` against
:func:`pipeline.torch_solver._iterate_triton` on the same starting state, for a few
small crops of the sample and a small random dictionary.  Prints, as JSON,
the largest differences of the residuals, the penalties and the variables
over the iterations.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import torch

from pipeline import torch_solver
from pipeline.options import CSCOptions
from pipeline.photos import sample


def main(iterations: int = 10) -> None:
    # A small random dictionary (5 filters: not a power of two, so the masks are used) and
    # crops of odd-width halves: the interpreter runs each program as NumPy operations.
    basis = np.random.default_rng(0).normal(size=(5, 5, 3, 5)).astype(np.float32)
    basis /= np.sqrt(np.sum(basis**2, axis=(0, 1, 2), keepdims=True))
    dataset = sample()
    crops = np.stack([dataset.load(i)[8:26, 4:18] for i in (0, 120, 280)])  # 18x14
    images = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
    _, high = torch_solver.split_low_high(images)
    spectrum = torch_solver.dictionary_spectrum(basis, tuple(high.shape[-2:]))
    lmbda = np.float32(CSCOptions().lmbda)
    xi = np.float32(1.0 + 18.3 ** (np.log10(lmbda) + 1.0))
    reference = torch_solver._start(high, np.arange(len(high)), spectrum, lmbda, fuse=True)
    kernels = copy.deepcopy(reference)
    worst = {"r": 0.0, "s": 0.0, "rho": 0.0, "y": 0.0, "u": 0.0}
    for _ in range(iterations):
        auto_rho = torch_solver.CONVBPDN_AUTORHO
        r, s = torch_solver._iterate(reference, spectrum, lmbda, xi, auto_rho, False)
        r2, s2 = torch_solver._iterate_triton(kernels, spectrum, lmbda, xi, auto_rho, False)
        y_scale = float(reference.y.abs().max()) or 1.0
        u_scale = float(reference.u.abs().max()) or 1.0
        for key, value in (("r", np.abs(r - r2).max() / max(r.max(), 1e-12)),
                           ("s", np.abs(s - s2).max() / max(s.max(), 1e-12)),
                           ("rho", np.abs(reference.rho - kernels.rho).max() / reference.rho.max()),
                           ("y", float((reference.y - kernels.y).abs().max()) / y_scale),
                           ("u", float((reference.u - kernels.u).abs().max()) / u_scale)):
            worst[key] = max(worst[key], float(value))
    print(json.dumps({"iterations": iterations, "relative_differences": worst}))


if __name__ == "__main__":
    main()

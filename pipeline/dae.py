"""Denoising autoencoder (PyTorch): the latent space that stratifies images.

The architecture is the reference's: 64x64x3 input; an encoder of three blocks
[conv 32 3x3, batch norm, ReLU, max-pool 2] down to an 8x8x32 latent (2048
values); a decoder that mirrors it with upsampling and ends in a sigmoid.  It
is trained with Adam on binary cross-entropy to restore images from copies
with Gaussian noise (std 0.15, clipped to [0, 1]), with early stopping on a
held-out split.

Images cross this module as NumPy arrays, channels-last (N, 64, 64, 3) float32
in [0, 1]; weights cross it as a state dict of tensors, saved with
``torch.save`` and loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from skimage.transform import resize
from torch import nn

from pipeline.datasets import Images
from pipeline.options import DAEOptions

SIZE = 64
"""Side of the DAE's square input images."""

LATENT_SHAPE = (32, 8, 8)
"""Channels, rows, columns of the latent: 2048 values per image."""


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


class DAE(nn.Module):
    """The reference DAE: 3x64x64 -> 32x8x8 -> 3x64x64 (NCHW tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            *_block(3, 32), nn.MaxPool2d(2), *_block(32, 32), nn.MaxPool2d(2),
            *_block(32, 32), nn.MaxPool2d(2),
        )
        self.decoder = nn.Sequential(
            *_block(32, 32), nn.Upsample(scale_factor=2), *_block(32, 32),
            nn.Upsample(scale_factor=2), *_block(32, 32), nn.Upsample(scale_factor=2),
            nn.Conv2d(32, 3, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def to_dae_input(images: np.ndarray) -> np.ndarray:
    """Resize (N, H, W, 3) images in [0, 1] to (N, 64, 64, 3) float32, for this stage only."""
    if images.shape[1:3] == (SIZE, SIZE):
        return images.astype(np.float32, copy=False)
    return np.stack([
        resize(im, (SIZE, SIZE), order=1, anti_aliasing=True).astype(np.float32) for im in images
    ])


def _tensor(images: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)


def default_device() -> str:
    """``"cuda"`` when a GPU is present, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def train_dae(
    images: np.ndarray | Images,
    options: DAEOptions = DAEOptions(),
    *,
    seed: int = 0,
    device: str = "cpu",
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Train the DAE on (N, H, W, 3) images in [0, 1] (resized to 64x64).

    ``images`` is an array, or :class:`pipeline.datasets.Images` read a
    mini-batch at a time, so that only a mini-batch and the held-out
    validation images are ever in memory.

    Returns
    -------
    state : dict of str to Tensor
        Weights of the epoch with the lowest validation loss (on the CPU).
    history : dict
        ``train`` and ``validation`` BCE per epoch.
    """
    if len(images) < 4:
        raise ValueError(f"the DAE needs at least 4 images to train, got {len(images)}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(images), generator=generator).numpy()
    n_val = max(1, int(round(len(images) * options.validation_fraction)))
    val, train = _tensor(to_dae_input(images[order[:n_val]]), device), order[n_val:]
    model = DAE().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    loss_fn = nn.BCELoss()
    history: dict[str, list[float]] = {"train": [], "validation": []}
    best, best_loss, waited = None, float("inf"), 0
    for epoch in range(options.max_epochs):
        model.train()
        losses = []
        for batch in torch.randperm(len(train), generator=generator).split(options.batch_size):
            clean = _tensor(to_dae_input(images[train[batch.numpy()]]), device)
            noisy = (clean + options.noise_std * torch.randn(clean.shape, generator=generator)
                     .to(device)).clamp(0, 1)
            optimiser.zero_grad()
            loss = loss_fn(model(noisy), clean)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(val), val).item()
        history["train"].append(float(np.mean(losses)))
        history["validation"].append(val_loss)
        if on_epoch is not None:
            on_epoch(epoch, history["train"][-1], val_loss)
        if val_loss < best_loss - 1e-5:
            best, best_loss, waited = copy.deepcopy(model.state_dict()), val_loss, 0
        else:
            waited += 1
            if waited >= options.patience:
                break
    return {k: v.detach().cpu() for k, v in best.items()}, history


def load_model(state: dict[str, torch.Tensor], device: str = "cpu") -> DAE:
    """A DAE in evaluation mode with the given weights."""
    model = DAE()
    model.load_state_dict(state)
    return model.to(device).eval()


def encode(model: DAE, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Latents of (N, H, W, 3) images in [0, 1]: (N, 2048) float32."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = _tensor(to_dae_input(images[start : start + batch_size]), str(device))
            out.append(model.encoder(batch).flatten(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, int(np.prod(LATENT_SHAPE))), np.float32)


def save_weights(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Write a state dict of tensors (no code) for :func:`load_weights`."""
    torch.save(state, path)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read DAE weights with ``weights_only=True``: tensors only, never arbitrary objects.

    Raises
    ------
    ValueError
        Naming the file, when it is not a DAE state dict.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        DAE().load_state_dict(state)
    except Exception as err:  # torch raises many types for a file that is not weights
        raise ValueError(f"{path}: not DAE weights ({type(err).__name__}: {err})") from None
    return state

"""A small CNN for the evaluation tasks: seeded, CPU, about a minute to train.

Images are channels-last (N, H, W, 3) float32 in [0, 1] at this module's
boundary, as everywhere in the project; the network itself takes PyTorch's
(N, 3, H, W).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from distributed.protocol import dask_deserialize, dask_serialize
from torch import nn

from pipeline.errors import UserError


class ClassifierError(UserError, ValueError):
    """A user's classifier cannot be loaded: the message names it and says why."""


class SmallCNN(nn.Sequential):
    """Three conv-ReLU-pool blocks (32, 64, 128 channels) and two linear layers."""

    def __init__(self, n_classes: int = 10, size: int = 32):
        blocks = []
        for c_in, c_out in ((3, 32), (32, 64), (64, 128)):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        super().__init__(*blocks, nn.Flatten(), nn.Linear(128 * (size // 8) ** 2, 128),
                         nn.ReLU(), nn.Linear(128, n_classes))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) array -> (N, 3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32)
                                                 .transpose(0, 3, 1, 2)))


def train_classifier(images: np.ndarray, labels: np.ndarray, *, n_classes: int = 10,
                     seed: int = 0, epochs: int = 10, batch_size: int = 64,
                     lr: float = 1e-3) -> SmallCNN:
    """Train a :class:`SmallCNN` with Adam and random horizontal flips; returns it in eval mode.

    The same arguments and seed give the same weights (one thread, CPU).
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallCNN(n_classes, images.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = to_tensor(images), torch.from_numpy(np.asarray(labels, np.int64))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            batch = x[rows]
            flip = torch.rand(len(rows), generator=generator) < 0.5
            batch[flip] = batch[flip].flip(-1)
            loss = nn.functional.cross_entropy(model(batch), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted class of each image, (N,) int64."""
    x = to_tensor(images)
    return np.concatenate([model(x[i:i + batch_size]).argmax(1).numpy()
                           for i in range(0, len(x), batch_size)]).astype(np.int64)


def load_classifier(spec: str) -> nn.Module:
    """A user's classifier: a ``torch.export`` file (``.pt2``), a TorchScript file, or
    ``package.module:function`` that builds one.

    The classifier takes (N, 3, H, W) float32 images in [0, 1] (any
    normalisation belongs inside it) and returns logits; it is put in eval
    mode on the CPU.  ``.pt2`` files are loaded with ``torch.export.load``
    and other files with ``torch.jit.load`` (TorchScript, deprecated by
    PyTorch but still common); both are archives of code and tensors, not
    pickles.  An exported program keeps the mode it was exported in.

    Raises
    ------
    ClassifierError
        Naming ``spec`` when it is neither a readable file nor an importable
        function that returns a module.
    """
    import importlib
    from pathlib import Path

    if Path(spec).is_file():
        kind = "export" if spec.endswith(".pt2") else "torchscript"
        try:
            return ArchivedClassifier(Path(spec).read_bytes(), kind)
        except Exception as err:  # torch raises many types for a bad archive
            what = "an exported" if kind == "export" else "a TorchScript"
            raise ClassifierError(f"{spec}: not {what} classifier ({err})") from None
    elif ":" in spec:
        module_name, _, function = spec.partition(":")
        try:
            model = getattr(importlib.import_module(module_name), function)()
        except (ImportError, AttributeError) as err:
            raise ClassifierError(f"{spec}: cannot build the classifier ({err})") from None
        if not isinstance(model, nn.Module):
            raise ClassifierError(f"{spec}: returned {type(model).__name__}, not a torch.nn.Module")
    else:
        raise ClassifierError(f"{spec}: no such file; give a TorchScript file or "
                         "package.module:function")
    return model.eval()


class ArchivedClassifier(nn.Module):
    """A classifier loaded from a ``torch.export`` or TorchScript archive (``kind``: "export"
    or "torchscript"), in eval mode on the CPU.

    It pickles as its archive's bytes, not as the loaded module (which
    neither format can be pickled as), so the evaluation can send it to
    Dask workers that do not share the file it came from.
    """

    def __init__(self, archive: bytes, kind: str):
        super().__init__()
        self.archive, self.kind = archive, kind
        if kind == "export":
            self.model = torch.export.load(io.BytesIO(archive)).module()
        else:
            self.model = torch.jit.load(io.BytesIO(archive), map_location="cpu").eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def __reduce__(self):
        return ArchivedClassifier, (self.archive, self.kind)


@dask_serialize.register(ArchivedClassifier)
def _serialize_archived(model: ArchivedClassifier) -> tuple[dict, list[bytes]]:
    # Dask serializes other modules attribute by attribute, which a loaded archive refuses.
    return {"kind": model.kind}, [model.archive]


@dask_deserialize.register(ArchivedClassifier)
def _deserialize_archived(header: dict, frames: list) -> ArchivedClassifier:
    return ArchivedClassifier(bytes(frames[0]), header["kind"])

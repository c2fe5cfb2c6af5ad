"""Where the project's shipped files are: its configs and its basis sets.

In a clone (and an editable install) they are the folders ``configs/`` and
``basis/`` beside the ``pipeline`` package.  A wheel (``pip install .``)
carries them inside the package, as ``pipeline/_configs`` and
``pipeline/_bases`` (``[tool.setuptools.package-dir]`` in ``pyproject.toml``).
Either way they are found relative to this file, never to the working
directory, so a ``configs/`` folder where a command runs is used only when a
config is named by its path.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(in_wheel: str, in_clone: str) -> Path:
    for folder in (_PACKAGE / in_wheel, _PACKAGE.parent / in_clone):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"the project's {in_clone}/ folder is missing from the "
                            f"installation (looked in {_PACKAGE / in_wheel} and "
                            f"{_PACKAGE.parent / in_clone}); reinstall the project")


CONFIG_FOLDER = _shipped("_configs", "configs")
"""The shipped configs: ``sample.yaml``, ``imagenet.yaml``, ``cifar10.yaml``, ..."""

BASIS_FOLDER = _shipped("_bases", "basis")
"""The shipped basis sets: ``photos-k1`` (the default), ``photos-k10`` (stratified), and the earlier
``sample-k10`` and ``sample-k1`` (``basis/README.md``)."""

"""Configs: ``configs/<name>.yaml`` -> a typed, validated :class:`ReconstructConfig`.

A config names a data set, the basis, the solver settings and the output
store.  Unknown keys are rejected with the nearest known key suggested, and
command-line overrides (``--set csc.lmbda=0.3``) are applied to the YAML
before validation, so an override is checked exactly like the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.basis import PROJECT_ROOT
from pipeline.csc import CSCOptions

CONFIG_DIRS = (Path("configs"), PROJECT_ROOT / "configs")


class ConfigError(ValueError):
    """A config file or override is missing, malformed or holds a bad value."""


@dataclass(frozen=True)
class DatasetConfig:
    """Where the images are and how they are brought to one size.

    ``source`` is ``sample`` (the embedded photographs), ``folder`` (image
    files under ``path``, class sub-folders give labels), ``cifar10`` (the
    python batches folder at ``path``; ``split`` test, train or all) or
    ``arrays`` (a ``.npy``/``.npz`` file at ``path``).  ``image_size`` is the
    side of the square images reconstructed (None keeps the source's size,
    which must then be the same for all); ``fit`` is ``resize`` (squash, as
    the reference did), ``center_crop`` (shorter side, then centre) or ``none``.
    """

    source: Literal["sample", "folder", "cifar10", "arrays"] = "sample"
    path: str | None = None
    split: Literal["test", "train", "all"] = "test"
    image_size: int | None = None
    fit: Literal["resize", "center_crop", "none"] = "center_crop"


@dataclass(frozen=True)
class StoreConfig:
    """The output Zarr store: its path and the dtype of ``images`` (uint8 or float32)."""

    path: str | None = None
    dtype: Literal["uint8", "float32"] = "uint8"


@dataclass(frozen=True)
class ComputeConfig:
    """Where and in what portions the solver runs; results do not depend on it.

    ``device`` is ``auto`` (a worker's GPU when it has one, else its CPU),
    ``cpu`` or ``cuda``.  ``batch_size`` is the most images one solve
    iterates together (null: 1 on a CPU, what fits in memory on a GPU);
    ``images_per_task`` the images one Dask task loads, reconstructs and
    writes (null: 8, or 256 when the workers have GPUs, fewer when a small
    data set would otherwise leave workers idle).
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int | None = None
    images_per_task: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "images_per_task"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null, got {value}")


@dataclass(frozen=True)
class ReconstructConfig:
    """Everything ``python -m pipeline.reconstruct`` needs, resolved from YAML."""

    name: str = "sample"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    basis: str = "default"
    csc: CSCOptions = field(default_factory=CSCOptions)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    export: str | None = None

    @property
    def store_path(self) -> Path:
        return Path(self.store.path or f"outputs/{self.name}.zarr").expanduser()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def find_config(name: str) -> Path:
    """Path of config ``name``: a YAML path, or ``configs/<name>.yaml`` here or in the project."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if path.is_file():
            return path
        raise ConfigError(f"{name}: config file not found")
    for folder in CONFIG_DIRS:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    known = sorted({p.stem for d in CONFIG_DIRS if d.is_dir() for p in d.glob("*.yaml")})
    hint = _suggest(name, known)
    raise ConfigError(f"no config named {name!r}{hint}; known configs: {', '.join(known)}")


def load_config(name: str, overrides: list[str] | None = None) -> ReconstructConfig:
    """Load ``configs/<name>.yaml``, apply ``key.sub=value`` overrides, validate.

    Raises
    ------
    ConfigError
        Naming the file and the key: unknown key (with the nearest known
        one), wrong type, or a value outside its range.
    """
    path = find_config(name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    for override in overrides or []:
        _apply_override(raw, override, path)
    return _build(ReconstructConfig, raw, str(path), "")


def _apply_override(raw: dict, override: str, path: Path) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like key=value, e.g. csc.lmbda=0.3")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: cannot override {key!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(text)


def _build(cls: type, raw: Any, where: str, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    unknown = set(raw) - set(hints)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{where}: unknown key {prefix}{key!r}{_suggest(key, list(hints))}")
    values = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value, where, f"{prefix}{key}.")
        else:
            values[key] = _check_value(value, hint, where, f"{prefix}{key}")
    try:
        return cls(**values)
    except ValueError as err:
        raise ConfigError(f"{where}: {prefix}{err}") from None


def _check_value(value: Any, hint: Any, where: str, key: str) -> Any:
    """Check ``value`` against a field's type (int, float, str, Literal, Optional)."""
    is_union = typing.get_origin(hint) in (typing.Union, _UnionType)
    options = typing.get_args(hint) if is_union else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if typing.get_origin(option) is Literal and value in typing.get_args(option):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    expected = " or ".join(_describe(o) for o in options)
    raise ConfigError(f"{where}: {key} must be {expected}, got {value!r}")


def _describe(option: Any) -> str:
    if typing.get_origin(option) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(option))
    return "null" if option is type(None) else getattr(option, "__name__", str(option))


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_UnionType = type(int | None)

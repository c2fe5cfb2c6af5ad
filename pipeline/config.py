"""Configs: ``configs/<name>.yaml`` -> one typed, validated :class:`Config` for every command.

A config names a data set, the basis, the solver settings and the output
store (``pipeline.reconstruct``), how a basis set is learned (its ``learn``
section, ``pipeline.learn``) and how the defense is measured (its
``evaluate`` section, ``pipeline.evaluate``).  Every default lives in the
dataclasses below and nowhere else; a YAML file sets only what differs.

Unknown keys are rejected with the nearest known key suggested, and
command-line overrides (``--set csc.lmbda=0.3``, and each command's shortcut
flags) are applied to the YAML before validation, so an override is checked
exactly like the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import UserError
from pipeline.options import CDLOptions, CSCOptions, DAEOptions
from pipeline.resources import CONFIG_FOLDER
from pipeline.storage import CREDENTIAL_KEYS, StorageOptions, is_url, location


class ConfigError(UserError, ValueError):
    """A config file or override is missing, malformed or holds a bad value."""


@dataclass(frozen=True)
class DatasetConfig:
    """Where the images are and how they are brought to one size.

    ``source`` is ``sample`` (350 tiles of the embedded photographs),
    ``photos`` (``count`` random tiles of the same photographs, drawn with
    ``seed``: the embedded data set to learn from), ``folder`` (image files
    under ``path``, class sub-folders give labels), ``cifar10`` (the python
    batches folder at ``path``; ``split`` test, train or all), ``arrays`` (a
    ``.npy``/``.npz`` file at ``path``) or ``zarr`` (a Zarr array at ``path``,
    or the ``images`` array of a Zarr group such as a reconstruction store).
    ``image_size`` is the side of the square images reconstructed (None keeps
    the source's size, which must then be the same for all); ``fit`` is
    ``resize`` (squash, as the reference did), ``center_crop`` (shorter side,
    then centre) or ``none``.
    """

    source: Literal["sample", "photos", "folder", "cifar10", "arrays", "zarr"] = "sample"
    path: str | None = None
    split: Literal["test", "train", "all"] = "test"
    image_size: int | None = None
    fit: Literal["resize", "center_crop", "none"] = "center_crop"
    count: int = 20000
    seed: int = 0

    def __post_init__(self) -> None:
        _at_least(self, 1, "count")


@dataclass(frozen=True)
class StoreConfig:
    """The output Zarr store.

    ``path`` is a folder or a URL (``s3://bucket/out/val_csc.zarr``);
    ``dtype`` of ``images`` is uint8 or float32.  ``images_per_shard``
    groups that many images into one object (Zarr v3 sharding; each image
    stays its own inner chunk, so reading one image is still one range
    request): 1 writes one object per image, as a plain Zarr array; on
    object storage or shared file systems 100 or more saves objects and
    requests.  ``guard`` keeps a second run from writing the same store:
    ``auto`` is a lock file beside a local store and a lease object beside
    an ``s3://`` store; ``none`` trusts you to run one job per store (the
    only choice for object stores without conditional writes).
    """

    path: str | None = None
    dtype: Literal["uint8", "float32"] = "uint8"
    images_per_shard: int = 1
    guard: Literal["auto", "none"] = "auto"

    def __post_init__(self) -> None:
        _at_least(self, 1, "images_per_shard")


@dataclass(frozen=True)
class ComputeConfig:
    """Where and in what portions the solver runs; results do not depend on it.

    ``device`` is ``auto`` (a worker's GPU when it has one, else its CPU),
    ``cpu`` or ``cuda``.  ``batch_size`` is the most images one solve
    iterates together (null: 1 on a CPU, what fits in memory on a GPU);
    ``images_per_task`` the images one Dask task loads, reconstructs and
    writes (null: 8, or 256 when the workers have GPUs, fewer when a small
    data set would otherwise leave workers idle); ``load_threads`` the
    threads a task decodes its images with (null: 1 when it solves on a CPU,
    where solving is the slow part; 8 on a GPU, which solves 224x224 images
    faster than one thread decodes ImageNet's JPEGs).
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int | None = None
    images_per_task: int | None = None
    load_threads: int | None = None

    def __post_init__(self) -> None:
        _at_least(self, 1, "batch_size", "images_per_task", "load_threads")


@dataclass(frozen=True)
class LearnConfig:
    """How ``python -m pipeline.learn`` learns a basis set from the config's data set.

    ``clusters`` KMeans clusters (1: one basis, no clustering), each with its
    own dictionary (``dictionary``: the learner's settings, its stopping rule
    included); the clusters are of DAE latents (``feature: dae``, the
    paper's method) or of statistics of the high-pass part that the
    dictionaries code (``feature: highpass``: its energy, scale, colour and
    orientations; :mod:`pipeline.features`).  At most ``max_images`` images
    are used (a seeded subset; null: all).  Images are held out by source
    (the photograph a tile was cut from; each file is its own source
    elsewhere): ``held_out_sources`` sources (null: as many as ``held_out``
    images need, at most a tenth of the images) are kept out of every stage,
    and ``held_out`` of their images measure the set.  ``dae_images`` of the
    rest train the DAE (``dae``), and all the rest are clustered; from each
    cluster ``validation`` images are kept out of learning, the fixed set its
    dictionary's convergence is judged on.  ``control`` also learns one
    dictionary on all of them (the same stopping rule, at most the budget of
    all the clusters together), so the report compares the stratified set
    with one basis.  ``init: control`` starts every cluster's dictionary from
    the control's, learned first, and fine-tunes it on the cluster; ``init``
    may also name a one-basis set learned before on the same data (a shipped
    set's name or a folder), which every dictionary then starts from, its
    step sizes continued.  With a start, its ``shared_filters`` most used
    filters are shared by every cluster and held fixed.  ``budget: converged``
    raises the step cap to :data:`CONVERGED_MAX_ITER`, so that every
    dictionary stops by the rule.
    ``images_per_cluster`` caps each cluster's images for the ``batch``
    learner, which holds them all at once.  ``seed`` seeds every random
    choice.  ``out`` is the basis-set folder (null:
    ``outputs/bases/<name>-k<clusters>``).
    """

    clusters: int = 10
    feature: Literal["dae", "highpass"] = "dae"
    max_images: int | None = 20000
    held_out: int = 500
    held_out_sources: int | None = None
    validation: int = 32
    dae_images: int = 2000
    control: bool = True
    init: str = "random"
    shared_filters: int = 0
    budget: Literal["default", "converged"] = "default"
    images_per_cluster: int = 64
    seed: int = 0
    out: str | None = None
    dictionary: CDLOptions = field(default_factory=CDLOptions)
    dae: DAEOptions = field(default_factory=DAEOptions)

    def __post_init__(self) -> None:
        _at_least(self, 1, "clusters", "images_per_cluster", "max_images", "dae_images",
                  "held_out_sources", "validation")
        _at_least(self, 0, "held_out", "shared_filters")
        if self.shared_filters and self.init == "random":
            raise ValueError("shared_filters needs a start (init: control, or a one-basis "
                             "set): the shared filters are its most used ones")
        if self.shared_filters >= self.dictionary.n_filters:
            raise ValueError(f"shared_filters must be below dictionary.n_filters "
                             f"({self.dictionary.n_filters}), got {self.shared_filters}")
        if self.budget == "converged" and self.dictionary.max_iter < CONVERGED_MAX_ITER:
            object.__setattr__(self, "dictionary",  # frozen
                               dataclasses.replace(self.dictionary, max_iter=CONVERGED_MAX_ITER))


CONVERGED_MAX_ITER = 2000
"""``learn.budget: converged``: the least step cap of every dictionary."""


@dataclass(frozen=True)
class EvaluateConfig:
    """How ``python -m pipeline.evaluate`` measures the defense.

    ``task`` is a built-in task (``textures``, ``digits`` or the sanity task
    ``scenes``: the command trains
    its own classifier); null evaluates the config's data set with the
    user's ``classifier`` (a ``torch.export`` .pt2 file, a TorchScript file
    or ``package.module:function``) and, with ``transfer_classifier``, the
    transfer control.  The one-basis CSC row uses ``one_basis``, the
    per-cluster row the basis set ``per_cluster`` (shipped names or
    paths).  ``test_images`` is n of every cell; ``train_images`` the
    classifier's training set; ``epochs`` its training; ``pgd_steps`` the
    oblivious PGD's iterations; ``retrain_images`` (null: all) the training images reconstructed to
    retrain on; ``out`` the output folder (null: ``outputs/evaluate/<name>``).

    The adaptive attacks (:mod:`evaluation.adaptive`) run on every row, on
    ``bpda_images`` test images (a seeded draw; null: all): BPDA-PGD with
    ``bpda_steps`` x ``bpda_restarts``, then APGD-CE and APGD-DLR with
    ``apgd_steps`` x ``apgd_restarts`` on the images it left standing, then
    the rest of standard AutoAttack on those still standing: APGD-T and FAB-T
    (``apgd_steps`` for each of ``target_classes``) and the gradient-free
    Square (``square_queries``; AutoAttack's own: 9 targets, 5,000 queries); the
    sweep over epsilon uses BPDA-PGD with ``sweep_steps`` x
    ``sweep_restarts`` on ``sweep_images`` (null: all).  On the CSC rows,
    exact-gradient PGD (back-propagated through the unrolled solver,
    :mod:`pipeline.unrolled`; several times a BPDA step's cost) runs
    ``exact_steps`` x ``exact_restarts`` on the adaptive images.  The defaults are
    below the literature's so that a run takes well under an hour on 2 cores
    (its convergence plot shows whether they suffice); ``budget: full`` raises
    every one of these to at least the literature's budget
    (:data:`FULL_BUDGET`: 100 steps x 5 restarts, AutoAttack's 9 target
    classes and 5,000 queries, every image).
    """

    task: Literal["textures", "scenes", "digits"] | None = None
    classifier: str | None = None
    transfer_classifier: str | None = None
    one_basis: str = "photos-k1"
    per_cluster: str = "photos-k10"
    test_images: int = 200
    train_images: int = 2000
    epochs: int = 10
    pgd_steps: int = 20
    bpda_steps: int = 50
    bpda_restarts: int = 2
    apgd_steps: int = 25
    apgd_restarts: int = 1
    target_classes: int = 3
    square_queries: int = 200
    sweep_steps: int = 20
    sweep_restarts: int = 1
    exact_steps: int = 20
    exact_restarts: int = 1
    bpda_images: int | None = 100
    sweep_images: int | None = 50
    budget: Literal["default", "full"] = "default"
    retrain_images: int | None = None
    seed: int = 0
    out: str | None = None

    def __post_init__(self) -> None:
        _at_least(self, 1, "test_images", "train_images", "epochs", "pgd_steps", "bpda_steps",
                  "bpda_restarts", "apgd_steps", "apgd_restarts", "target_classes",
                  "square_queries", "sweep_steps",
                  "sweep_restarts", "exact_steps", "exact_restarts", "bpda_images",
                  "sweep_images", "retrain_images")
        if self.budget == "full":
            for name, least in FULL_BUDGET.items():
                value = getattr(self, name)
                if least is None or value is None:
                    object.__setattr__(self, name, None)  # frozen; every image
                else:
                    object.__setattr__(self, name, max(value, least))


FULL_BUDGET = {"bpda_steps": 100, "bpda_restarts": 5, "apgd_steps": 100, "apgd_restarts": 5,
               "target_classes": 9, "square_queries": 5000,
               "sweep_steps": 100, "sweep_restarts": 5, "exact_steps": 100,
               "exact_restarts": 2, "bpda_images": None,
               "sweep_images": None}
"""``evaluate.budget: full``: the adaptive attacks' least budgets (None: every test image)."""


@dataclass(frozen=True)
class Config:
    """Everything the commands read from one config, resolved from YAML.

    ``basis`` is ``default`` (the shipped basis set ``photos-k1``), the
    name of a shipped set, a basis ``.npy`` file or a basis-set folder.
    """

    name: str = "sample"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    basis: str = "default"
    csc: CSCOptions = field(default_factory=CSCOptions)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    storage_options: StorageOptions = field(default_factory=StorageOptions)
    export: str | None = None
    learn: LearnConfig = field(default_factory=LearnConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def __post_init__(self) -> None:
        for key, value in (("export", self.export), ("learn.out", self.learn.out),
                           ("evaluate.out", self.evaluate.out)):
            if is_url(value):
                raise ValueError(f"{key} must be a local folder, got {value!r} (URLs are read "
                                 "for dataset.path, store.path and basis)")

    @property
    def store_path(self) -> str | Path:
        """The output store: a local :class:`Path`, or a URL string."""
        return location(self.store.path or f"outputs/{self.name}.zarr")

    @property
    def basis_set_path(self) -> Path:
        """Where ``pipeline.learn`` writes its basis set."""
        default = f"outputs/bases/{self.name}-k{self.learn.clusters}"
        return Path(self.learn.out or default).expanduser()

    @property
    def evaluate_path(self) -> Path:
        """Where ``pipeline.evaluate`` writes its table, plots and stores."""
        return Path(self.evaluate.out or f"outputs/evaluate/{self.name}").expanduser()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def shipped_configs() -> list[str]:
    """Names of the configs the project ships (``sample``, ``imagenet``, ...)."""
    return sorted(p.stem for p in CONFIG_FOLDER.glob("*.yaml"))


def find_config(name: str) -> Path:
    """Path of config ``name``: a YAML file's path, or the name of a shipped config.

    A name is looked up among the project's own configs only, never in the
    working directory; a config of your own is given by its path
    (``configs/mine.yaml``, ``./mine.yaml``).
    """
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name).expanduser()
        if path.is_file():
            return path
        raise ConfigError(f"{name}: config file not found")
    if (CONFIG_FOLDER / f"{name}.yaml").is_file():
        return CONFIG_FOLDER / f"{name}.yaml"
    known = shipped_configs()
    raise ConfigError(f"no config named {name!r}{_suggest(name, known)}; shipped configs: "
                      f"{', '.join(known)} (a config of your own: give its path, "
                      "e.g. configs/mine.yaml)")


def load_config(name: str, overrides: list[str] | None = None,
                settings: dict[str, Any] | None = None) -> Config:
    """Load config ``name`` (:func:`find_config`), apply overrides, validate.

    Parameters
    ----------
    name : str
        A shipped config's name or a YAML path.
    overrides : list of str
        ``key.sub=value`` strings (``--set``); values are read as YAML.
    settings : dict
        ``key.sub`` -> value, applied after ``overrides`` (the commands'
        shortcut flags, such as ``--out``); values are taken as they are.

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
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override {override!r} must look like key=value, e.g. csc.lmbda=0.3")
        _set(raw, key.strip(), yaml.safe_load(text), path)
    for key, value in (settings or {}).items():
        _set(raw, key, value, path)
    return _build(Config, raw, str(path), "")


def _set(raw: dict, key: str, value: Any, path: Path) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: cannot override {key!r}: {part!r} is not a section")
    node[leaf] = value


def _build(cls: type, raw: Any, where: str, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    unknown = set(raw) - set(hints)
    if cls is StorageOptions and unknown & set(CREDENTIAL_KEYS):
        key = sorted(unknown & set(CREDENTIAL_KEYS))[0]
        raise ConfigError(
            f"{where}: {prefix}{key}: credentials are never read from a config (it is recorded "
            "with every store); set them where the provider's tools look, on the client and "
            "on each worker (for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile "
            "in ~/.aws/credentials named by storage_options.profile)")
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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
        if option is float and isinstance(value, str) and _is_number(value):
            return float(value)  # YAML 1.1 reads 1e-9 (no dot) as a string
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is bool and isinstance(value, bool):
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


def _at_least(section: object, minimum: int, *names: str) -> None:
    """Raise ValueError if a field is below ``minimum`` (null, where allowed, passes)."""
    hints = typing.get_type_hints(type(section))
    for name in names:
        value = getattr(section, name)
        if value is not None and value < minimum:
            nullable = type(None) in typing.get_args(hints[name])
            raise ValueError(f"{name} must be >= {minimum}{' or null' if nullable else ''}, "
                             f"got {value}")


_UnionType = type(int | None)

"""Configs: the shipped ones load; typos and bad values are named with their file."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from pipeline.config import ComputeConfig, ConfigError, StoreConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["sample", "photos", "imagenet", "cifar10", "textures", "scenes",
                                  "digits"])
def test_shipped_configs_load(name):
    config = load_config(name)
    assert config.name == name and config.csc.lmbda == 0.2 and config.csc.max_iter == 200
    assert str(config.store_path).endswith(f"{name}.zarr")
    assert config.learn.clusters == 10 and config.learn.dictionary.method == "online"
    assert config.evaluate.task == (name if name in ("textures", "scenes", "digits") else None)


def test_learn_and_evaluate_sections_are_read_and_checked_like_the_rest(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("learn:\n  clusters: 4\n  dictionary:\n    max_iter: 7\n"
                    "evaluate:\n  pgd_steps: 3\n")
    config = load_config(str(path), ["learn.dae.max_epochs=2"], {"learn.out": "sets/x"})
    assert config.learn.clusters == 4 and config.learn.dictionary.max_iter == 7
    assert config.learn.dae.max_epochs == 2 and config.evaluate.pgd_steps == 3
    assert str(config.basis_set_path) == "sets/x"
    assert str(config.evaluate_path) == "outputs/evaluate/mine"
    assert str(load_config("sample").basis_set_path) == "outputs/bases/sample-k10"
    with pytest.raises(ConfigError, match=r"unknown key learn.dictionary.'n_filter' "
                                          r"\(did you mean 'n_filters'\?\)"):
        load_config("sample", ["learn.dictionary.n_filter=8"])
    with pytest.raises(ConfigError, match="learn.clusters must be >= 1, got 0"):
        load_config("sample", ["learn.clusters=0"])
    with pytest.raises(ConfigError, match="learn.dictionary.lmbda must be > 0, got 0"):
        load_config("sample", ["learn.dictionary.lmbda=0"])
    with pytest.raises(ConfigError, match="evaluate.task must be one of 'textures', 'scenes', "
                                          "'digits' or "
                                          "null, got 'cifar'"):
        load_config("sample", ["evaluate.task=cifar"])
    with pytest.raises(ConfigError, match="evaluate.bpda_images must be >= 1 or null, got 0"):
        load_config("sample", ["evaluate.bpda_images=0"])
    with pytest.raises(ConfigError, match="evaluate.budget must be one of 'default', 'full'"):
        load_config("sample", ["evaluate.budget=max"])


def test_the_full_budget_raises_every_adaptive_attack_to_the_literatures():
    small = ["evaluate.bpda_steps=10", "evaluate.bpda_images=50", "evaluate.apgd_steps=300"]
    settings = load_config("scenes", small).evaluate
    assert (settings.bpda_steps, settings.bpda_images, settings.apgd_steps) == (10, 50, 300)
    full = load_config("scenes", [*small, "evaluate.budget=full"]).evaluate
    assert (full.bpda_steps, full.bpda_restarts, full.apgd_steps, full.apgd_restarts) == (
        100, 5, 300, 5)  # raised to the literature's, never lowered
    assert (full.sweep_steps, full.sweep_restarts) == (100, 5)
    assert full.bpda_images is None and full.sweep_images is None  # every test image


def test_a_configs_folder_where_the_command_runs_is_used_only_when_named(tmp_path,
                                                                         monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sample.yaml").write_text("dataset:\n  source: folder\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("sample").dataset.source == "sample"  # the shipped one
    named = load_config("configs/sample.yaml")
    assert named.dataset.source == "folder" and named.name == "sample"
    with pytest.raises(ConfigError, match="nowhere/mine.yaml: config file not found"):
        load_config("nowhere/mine.yaml")


def test_basis_names_resolve_to_the_shipped_sets_from_anywhere(tmp_path, monkeypatch):
    from pipeline.basis import DEFAULT_BASIS_SET, ONE_BASIS_SET, resolve_basis_path

    monkeypatch.chdir(tmp_path)
    assert resolve_basis_path("default") == DEFAULT_BASIS_SET
    assert resolve_basis_path("photos-k1") == ONE_BASIS_SET and ONE_BASIS_SET.is_dir()
    assert (resolve_basis_path("sample-k10") / "manifest.json").is_file()
    assert resolve_basis_path("bases/mine") == Path("bases/mine")


def test_imagenet_config_reconstructs_at_224():
    config = load_config("imagenet")
    assert config.dataset.source == "folder" and config.dataset.image_size == 224


def test_overrides_apply_and_are_checked():
    config = load_config("sample", ["csc.lmbda=0.3", "store.dtype=float32", "store.path=x.zarr"])
    assert config.csc.lmbda == 0.3 and config.store.dtype == "float32"
    assert str(config.store_path) == "x.zarr"
    with pytest.raises(ConfigError, match="csc.lmbda must be > 0, got -1"):
        load_config("sample", ["csc.lmbda=-1"])
    with pytest.raises(ConfigError, match="store.dtype must be one of 'uint8', 'float32'"):
        load_config("sample", ["store.dtype=int16"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config("sample", ["csc.lmbda"])
    # YAML reads 1e-9 (no dot) as a string; a float field takes it as the number it is
    assert load_config("photos", ["learn.dictionary.stop_tol=1e-9"]).learn.dictionary.stop_tol \
        == 1e-9
    with pytest.raises(ConfigError, match="csc.lmbda must be float, got 'small'"):
        load_config("sample", ["csc.lmbda=small"])


def test_typo_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("dataset:\n  source: folder\n  pth: /data\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: unknown key dataset.'pth' "
                                          r"\(did you mean 'path'\?\)"):
        load_config(str(path))
    with pytest.raises(ConfigError, match=r"unknown key csc.'lamda' \(did you mean 'lmbda'\?\)"):
        load_config("sample", ["csc.lamda=0.1"])


def test_unknown_config_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"no config named 'imagnet' \(did you mean "
                                          r"'imagenet'\?\); shipped configs: .*sample"):
        load_config("imagnet")


def test_bad_yaml_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(str(path))


def test_compute_settings_are_checked():
    config = load_config("sample", ["compute.device=cpu", "compute.batch_size=4"])
    assert config.compute.device == "cpu" and config.compute.batch_size == 4
    with pytest.raises(ConfigError, match="compute.batch_size must be >= 1 or null, got 0"):
        load_config("sample", ["compute.batch_size=0"])
    with pytest.raises(ConfigError, match=r"compute.device must be one of 'auto', 'cpu', 'cuda'"):
        load_config("sample", ["compute.device=gpu"])


def test_the_store_and_compute_defaults_live_in_the_config_alone():
    """No function of the product restates a default of the ``store`` or ``compute``
    sections (sharding, the guard, images per task, load threads): it takes the config's
    dataclass, or the value without a default."""
    config_only = {"images_per_shard", "guard", "images_per_task", "load_threads"}
    assert config_only <= {f.name for cls in (StoreConfig, ComputeConfig)
                           for f in dataclasses.fields(cls)}
    restated = []
    for path in sorted(p for package in ("pipeline", "flows", "evaluation")
                       for p in (ROOT / package).glob("*.py") if p.name != "config.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            positional = args.posonlyargs + args.args
            with_defaults = positional[len(positional) - len(args.defaults):] + [
                arg for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                if default is not None]
            restated += [f"{path.name}:{node.lineno} {node.name}({arg.arg}=...)"
                         for arg in with_defaults if arg.arg in config_only]
    assert restated == []

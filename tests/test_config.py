"""Configs: the shipped ones load; typos and bad values are named with their file."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config


@pytest.mark.parametrize("name", ["sample", "imagenet", "cifar10"])
def test_shipped_configs_load(name):
    config = load_config(name)
    assert config.name == name and config.csc.lmbda == 0.2 and config.csc.max_iter == 200
    assert str(config.store_path).endswith(f"{name}.zarr")


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

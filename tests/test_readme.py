"""Every command the README shows is one the commands accept: each is parsed and its config
resolved (``--print-config``), in order, in an empty folder."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from pipeline import evaluate, learn, reconstruct

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"pipeline.reconstruct": reconstruct.main, "pipeline.learn": learn.main,
            "pipeline.evaluate": evaluate.main}


def readme_commands() -> list[list[str]]:
    """``python -m pipeline.X ...`` lines of the README's bash blocks, comments removed."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [shlex.split(line, comments=True)[2:] for block in blocks
            for line in block.splitlines() if line.startswith("python -m pipeline.")]


def test_every_readme_command_parses_and_resolves_its_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert {words[0] for words in commands} == set(COMMANDS)
    for module, *args in commands:
        redirect = args.index(">") if ">" in args else None
        if redirect is not None:
            args, target = args[:redirect], args[redirect + 1]
        assert COMMANDS[module]([*args, "--print-config"]) == 0, (module, args)
        printed = capsys.readouterr().out
        config = yaml.safe_load(printed)
        assert {"dataset", "csc", "store", "learn", "evaluate"} <= set(config), args
        for key, value in (arg.split("=", 1) for arg in args if "=" in arg):
            section, name = key.split(".")
            assert config[section][name] == yaml.safe_load(value), (args, key)
        if redirect is not None:
            (tmp_path / target).write_text(printed)

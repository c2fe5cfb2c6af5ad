"""The architecture is a checked contract: import-linter's contracts in pyproject.toml hold,
and they name every module, so a new one cannot slip past them."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline

tomllib = pytest.importorskip("tomllib")  # Python 3.11 and newer

ROOT = Path(__file__).resolve().parents[1]
NOT_STAGES = {"pipeline.reconstruct", "pipeline.learn", "pipeline.evaluate", "pipeline.cli",
              "pipeline.runtime", "pipeline.worker"}


def contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["name"]: c for c in config["tool"]["importlinter"]["contracts"]}


def test_import_contracts_hold():
    # In a process of its own: import-linter reconfigures logging (disabling other loggers).
    check = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 broken" in check.stdout and len(contracts()) == check.stdout.count(" KEPT")


def test_every_pipeline_module_but_the_commands_runtime_and_worker_is_a_stage():
    """The stage list of the no-Dask contract is every module of ``pipeline`` that is not a
    command, the command scaffold, the runtime or the worker settings."""
    modules = {f"pipeline.{m.name}" for m in pkgutil.iter_modules(pipeline.__path__)
               if not m.name.startswith("_")}
    stages = contracts()["Stages know nothing of Dask, the flows, the evaluation or the "
                         "commands"]["source_modules"]
    assert set(stages) == modules - NOT_STAGES
    assert NOT_STAGES <= modules

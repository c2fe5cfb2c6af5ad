"""The three commands end alike (pipeline.cli): a bug is exit 1 with its traceback under -v,
a user error is exit 2 and one sentence, Ctrl-C is exit 130 with the hint to go on."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import launch

from pipeline import evaluate, learn, reconstruct
from pipeline.cli import Job, local_workers
from pipeline.config import CONVERGED_MAX_ITER, Config, load_config

RUNTIME = ["--workers", "1", "--dashboard-address", "127.0.0.1:0"]  # one worker is enough here


def injected_bug(*args, **kwargs):
    raise RuntimeError("injected bug")


# (command, its arguments, a stage function it calls on the client, where the command or flow
# holds it, and what the failure sentence says after "failed:")
BUGS = {
    "reconstruct": (reconstruct.main, ["sample", "--set", "csc.max_iter=2"],
                    "flows.reconstruct.pending", "run", "run the same command again to resume"),
    "learn": (learn.main, ["--clusters", "2", "--max-images", "40", "--dae-epochs", "1",
                           "--iterations", "1"],
              "pipeline.learn.save_basis_set", "learning", "nothing was written to"),
    "evaluate": (evaluate.main, ["scenes", "--test-images", "10", "--train-images", "20"],
                 "evaluation.flow.train_classifier", "evaluation",
                 "finished reconstructions are kept in"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUGS))
def test_a_bug_in_a_stage_is_exit_1_and_its_traceback_under_verbose(name, monkeypatch, tmp_path,
                                                                    capsys):
    command, args, target, what, kept = BUGS[name]
    monkeypatch.chdir(tmp_path)  # outputs/ goes here
    monkeypatch.setattr(target, injected_bug)
    assert command([*args, *RUNTIME]) == 1
    err = capsys.readouterr().err
    assert f"{what} failed: RuntimeError: injected bug" in err and kept in err
    assert "(-v shows the traceback)" in err and "Traceback" not in err
    assert command([*args, *RUNTIME, "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert 'raise RuntimeError("injected bug")' in err


def test_a_bug_before_the_runtime_starts_is_exit_1_too(monkeypatch, capsys):
    monkeypatch.setattr("pipeline.reconstruct.open_bases", injected_bug)
    assert reconstruct.main(["sample", *RUNTIME]) == 1
    err = capsys.readouterr().err
    assert "preparing the run failed: RuntimeError: injected bug" in err
    assert "Dask dashboard" not in err and "Traceback" not in err


def test_a_local_cluster_has_no_more_workers_than_the_job_can_use(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)

    def job(parallel):
        return Job(run=lambda client, stop: 0, what="run", kept="", parallel=parallel)

    assert [local_workers(job(n)) for n in (None, 100, 3, 0)] == [16, 16, 3, 1]


USER_ERRORS = {
    "reconstruct": (reconstruct.main, ["sample", "--set", "csc.lamda=0.3"],
                    "unknown key csc.'lamda' (did you mean 'lmbda'?)"),
    "learn": (learn.main, ["sample", "--set", "learn.dictionary.max_itr=5"],
              "unknown key learn.dictionary.'max_itr' (did you mean 'max_iter'?)"),
    "learn, too few images": (learn.main, ["sample", "--clusters", "50"],
                              "50 clusters of at least 8 images each need 400 images, and "
                              "there are 315"),
    "evaluate": (evaluate.main, ["scenes", "--set", "evaluate.pgd_step=3"],
                 "unknown key evaluate.'pgd_step' (did you mean 'pgd_steps'?)"),
    "evaluate, your data without a classifier": (
        evaluate.main, ["imagenet"], "imagenet: evaluating your own data needs your classifier"),
    "evaluate, a classifier that is no file": (
        evaluate.main, ["imagenet", "--classifier", "nowhere.pt"],
        "nowhere.pt: no such file"),
    "evaluate, a basis that is no file": (
        evaluate.main, ["scenes", "--one-basis", "nowhere.npy"],
        "nowhere.npy: basis file not found"),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_a_user_error_is_exit_2_and_one_sentence(case, capsys):
    command, args, message = USER_ERRORS[case]
    assert command([*args, *RUNTIME]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "Dask dashboard" not in err  # found before any worker started
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [reconstruct.main, learn.main, evaluate.main])
def test_print_config_prints_the_resolved_config_and_starts_nothing(command, capsys):
    assert command(["sample", "--set", "csc.lmbda=0.3", "--print-config"]) == 0
    out, err = capsys.readouterr()
    printed = yaml.safe_load(out)
    assert printed == load_config("sample", ["csc.lmbda=0.3"]).as_dict()
    assert printed["csc"]["lmbda"] == 0.3 and set(printed) == set(Config.__dataclass_fields__)
    assert "Dask dashboard" not in err


def test_shortcut_flags_set_config_keys(capsys):
    assert learn.main(["imagenet", "--clusters", "3", "--iterations", "7", "--seed", "4",
                       "--feature", "highpass", "--init", "control", "--shared-filters", "8",
                       "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == "imagenet" and printed["dataset"]["image_size"] == 224
    assert printed["learn"]["clusters"] == 3 and printed["learn"]["seed"] == 4
    assert printed["learn"]["dictionary"]["max_iter"] == 7
    assert printed["learn"]["feature"] == "highpass" and printed["learn"]["init"] == "control"
    assert printed["learn"]["shared_filters"] == 8
    assert learn.main(["--budget", "converged", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["learn"]["budget"] == "converged"
    assert printed["learn"]["dictionary"]["max_iter"] == CONVERGED_MAX_ITER
    assert evaluate.main(["digits", "--pgd-steps", "3", "--basis-set", "sample-k1",
                          "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["evaluate"]["task"] == "digits" and printed["evaluate"]["pgd_steps"] == 3
    assert printed["evaluate"]["per_cluster"] == "sample-k1"


def start(module: str, *args: str, cwd: Path) -> tuple[subprocess.Popen, list[str]]:
    """Start a command in its own process group; its output lines are collected as they come."""
    process = launch(module, *args, *RUNTIME, cwd=cwd)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    return process, lines


def wait_for(lines: list[str], text: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not printed within {timeout} s:\n{''.join(lines)}")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize(("module", "args", "started", "kept"), [
    ("pipeline.learn", ["--clusters", "2", "--max-images", "200", "--out", "set"],
     "Dask dashboard", "interrupted: nothing was written to set; run the same command again"),
    ("pipeline.evaluate", ["scenes", "--test-images", "50", "--out", "ev"],
     "trained the classifier", "interrupted: finished reconstructions are kept in ev/stores"),
])
def test_ctrl_c_is_exit_130_with_what_is_kept(module, args, started, kept, tmp_path):
    process, lines = start(module, *args, cwd=tmp_path)
    wait_for(lines, started)
    time.sleep(1.0)  # into the DAE's training, or the attacks
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: command and workers
    assert process.wait(timeout=180) == 130, "".join(lines)
    time.sleep(0.2)
    output = "".join(lines)
    assert kept in output and "stopping after" in output and "Traceback" not in output
    assert not (tmp_path / "set" / "manifest.json").exists()

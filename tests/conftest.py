"""Shared fixtures. Tests run on the CPU, offline, on generated data only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a connection fails, as it would on CI."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)


def _compose(overrides: list[str], tmp_path: Path):
    """The train config as the CLI would build it, with outputs under ``tmp_path``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from stridelab.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    paths = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[*overrides, *paths])


def _run_cli(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m stridelab.train ARGS`` in a fresh process, as a user would run it."""
    env = {**os.environ, "STRIDELAB_ROOT": str(cwd), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "stridelab.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _start_cli(args: list[str], cwd: Path, one_core: bool = False) -> subprocess.Popen:
    """``python -m stridelab.train ARGS`` started in a fresh process (stdout and stderr together, text).
    ``one_core``: pinned to one CPU core (a run's CPU figures depend on its thread count)."""
    env = {**os.environ, "STRIDELAB_ROOT": str(cwd), "PYTHONUNBUFFERED": "1"}
    first = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    return subprocess.Popen(
        [sys.executable, "-m", "stridelab.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {first})) if one_core else None,
    )


@pytest.fixture(scope="session")
def compose():
    """``compose(overrides, tmp_path)``: the train config as the CLI would build it, outputs under tmp_path."""
    return _compose


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(args, cwd, timeout=240)``: ``python -m stridelab.train ARGS`` in a fresh process."""
    return _run_cli


@pytest.fixture(scope="session")
def start_cli():
    """``start_cli(args, cwd, one_core=False)``: ``python -m stridelab.train ARGS`` started in a fresh
    process (a Popen, stdout and stderr together): for tests that signal it or run two at once."""
    return _start_cli


@pytest.fixture
def run_main(monkeypatch, tmp_path):
    """``run_main(args)``: ``python -m stridelab.train ARGS`` in this process (as a study runs it, and
    seconds faster than a subprocess), with ``STRIDELAB_ROOT`` at tmp_path; returns the exit status."""

    def call(args: list[str]) -> int:
        from hydra.core.global_hydra import GlobalHydra

        from stridelab import train

        monkeypatch.setenv("STRIDELAB_ROOT", str(tmp_path))
        monkeypatch.setattr(sys, "argv", ["stridelab.train", *args])
        GlobalHydra.instance().clear()
        try:
            with pytest.raises(SystemExit) as stop:
                train.main()
        finally:
            GlobalHydra.instance().clear()
        return stop.value.code

    return call

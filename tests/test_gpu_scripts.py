"""scripts/gpu-wheels (issue 22): the pins it would fetch for a GPU machine without network, offline."""

from __future__ import annotations

import subprocess
from importlib.metadata import version

from conftest import ROOT


def test_gpu_wheels_lists_hydra_and_the_launchers_at_the_venvs_versions():
    if not (ROOT / ".venv" / "bin" / "python").exists():  # the script reads the versions from .venv
        import pytest

        pytest.skip("no .venv in this checkout")
    out = subprocess.run(
        [str(ROOT / "scripts" / "gpu-wheels"), "--list"], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    names = {line.split("==")[0]: line.split("==")[1] for line in out}
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime"} <= set(names)
    assert names["hydra-core"] == version("hydra-core") and names["omegaconf"] == version("omegaconf")

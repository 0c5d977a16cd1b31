"""Resuming: a run whose resolved config already finished under a folder is not trained again.

Runs are matched by ``config_hash`` (the resolved config without paths, logging and metric knobs,
see ``stridelab.config.config_hash``), never by folder name, so a renamed folder or a re-numbered
job still counts; a run that failed or never finished is redone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stridelab.training.results import METRICS_FILE


def finished_runs(root: str | os.PathLike) -> dict[str, Path]:
    """``config_hash`` -> folder of every run under ``root`` whose ``metrics.json`` says ``ok``."""
    done = {}
    root = Path(root)
    if not root.is_dir():
        return done
    for path in root.rglob(METRICS_FILE):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # unreadable: not finished
        if isinstance(data, dict) and data.get("status") == "ok" and data.get("config_hash"):
            done[data["config_hash"]] = path.parent
    return done


def find_finished(root: str | os.PathLike, config_hash: str) -> Path | None:
    return finished_runs(root).get(config_hash)

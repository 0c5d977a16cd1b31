"""Per-run results: one flat ``metrics.json`` per run, always written atomically.

Later stages (the measurement suite, aggregation) add keys; nothing else writes this file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from stridelab.errors import WriteError
from stridelab.files import atomic_write_text

log = logging.getLogger("stridelab")

METRICS_FILE = "metrics.json"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the fact visible
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class RunResults:
    """A flat dict of a run's figures that is written to ``metrics.json`` on every :meth:`write`."""

    def __init__(self, path: str | os.PathLike, write: bool = True, **fields: Any) -> None:
        self.path = Path(path)
        self.enabled = write  # False in DDP worker processes: only rank 0 writes results
        self.data: dict[str, Any] = {"status": "running"}
        self.update(**fields)

    def update(self, mapping: dict[str, Any] | None = None, **fields: Any) -> "RunResults":
        for k, v in {**(mapping or {}), **fields}.items():
            self.data[k] = _jsonable(v)
        return self

    def write(self) -> Path:
        if not self.enabled:
            return self.path
        atomic_write_text(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        return self.path

    def succeed(self) -> Path:
        self.data["status"] = "ok"
        self.data.pop("reason", None)
        return self.write()

    def fail(self, reason: str) -> Path:
        return self.record("failed", reason, quiet=False)

    def record(self, status: str, reason: str, quiet: bool = True) -> Path:
        """Set ``status`` (failed, interrupted) with its ``reason`` and write. ``quiet``: a write that
        fails (the disk that failed the run is full) is logged, not raised, so the run's own error
        is the one the user sees."""
        self.data["status"] = status
        self.data["reason"] = reason
        try:
            return self.write()
        except WriteError as err:
            if not quiet:
                raise
            log.warning("could not record the run as %s: %s", status, err)
            return self.path


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# Resuming: a run whose resolved config already finished under a folder is not trained again. Runs
# are matched by ``config_hash`` (stridelab.config.config_hash), never by folder name, so a renamed
# folder or a re-numbered job still counts; a run that failed or never finished is redone.
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

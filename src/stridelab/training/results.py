"""Per-run results: one flat ``metrics.json`` per run, always written atomically.

Later stages (the measurement suite, aggregation) add keys; nothing else writes this file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``: readers see
    the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


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
        self.data["status"] = "failed"
        self.data["reason"] = reason
        return self.write()


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())

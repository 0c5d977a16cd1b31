"""How a variant column is shown in tables and plots (shared by aggregation and its plots)."""

from __future__ import annotations

CONFIG_PREFIX = "cfg:"  # a variant column read from the config rather than from metrics.json


def label(column: str) -> str:
    return column.removeprefix(CONFIG_PREFIX)

"""Aggregate a study or multirun folder: ``python -m stridelab.aggregate DIR``.

Reads every run's ``metrics.json`` under DIR and writes ``results.csv``, ``summary.csv``,
``summary.md`` (with its Verdicts table), ``plots/*.png`` and ``_study/`` (the plots for TensorBoard)
into DIR, then prints the summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stridelab.errors import StridelabError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from stridelab.studies import aggregate

    try:
        study = aggregate(argv[0])
    except StridelabError as err:
        print(f"\nstridelab: error: {err}\n", file=sys.stderr)
        return 2
    print((Path(argv[0]) / "summary.md").read_text())
    print(f"stridelab: tables and plots in {Path(argv[0]).resolve()} ({len(study.runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Aggregate a study or multirun folder: ``python -m stridelab.aggregate DIR [--correction fdr|holm|none]``.

Reads every run's ``metrics.json`` under DIR and writes ``results.csv``, ``summary.csv``,
``summary.md`` (with its Verdicts table), ``plots/*.png`` and ``_study/`` (the plots for TensorBoard)
into DIR, then prints the summary. ``--correction``: how the verdicts' p-values are adjusted for
testing every comparison x figure at once (default fdr: Benjamini-Hochberg; holm; none).
"""

from __future__ import annotations

import sys
from pathlib import Path

from stridelab.errors import StridelabError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    correction = "fdr"
    if "--correction" in argv:
        i = argv.index("--correction")
        correction = argv[i + 1] if i + 1 < len(argv) else ""
        del argv[i : i + 2]
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from stridelab.studies import aggregate
    from stridelab.studies.stats import CORRECTIONS

    if correction not in CORRECTIONS:
        print(f"\nstridelab: error: --correction takes fdr, holm or none, got {correction!r}.\n", file=sys.stderr)
        return 2
    try:
        study = aggregate(argv[0], correction=correction)
    except StridelabError as err:
        print(f"\nstridelab: error: {err}\n", file=sys.stderr)
        return 2
    print((Path(argv[0]) / "summary.md").read_text())
    print(f"stridelab: tables and plots in {Path(argv[0]).resolve()} ({len(study.runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a study: ``python -m stridelab.study NAME [overrides ...] [--out DIR] [--dry-run]``.

NAME is a file in experiments/ (``demo``, ``padding_x_downsampling``, ``shift_invariance``,
``kayhan_redgreen``, ``allcnn_springenberg``) or a path to a study file. Overrides apply to every grid of the study
(e.g. ``trainer=gpu``, ``launcher=joblib``, ``seed=0`` to run one seed of a swept key). Finished
runs are skipped, so running a study again only does what is missing or failed; the study's tables
and plots are in logs/studies/NAME/ (or --out). ``--dry-run`` prints each grid's command and
composes and checks every run (misspelt keys, bad values), building its model on the data's input
size, without training.
"""

from __future__ import annotations

import sys

from stridelab.errors import StridelabError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        from stridelab.studies.runner import available

        print(__doc__ + "\nStudies: " + ", ".join(available()))
        return 0 if argv else 2
    dry_run = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    out = None
    if "--out" in argv:
        i = argv.index("--out")
        if i + 1 >= len(argv):
            print("stridelab: error: --out needs a folder", file=sys.stderr)
            return 2
        out = argv[i + 1]
        del argv[i : i + 2]
    from stridelab.studies.runner import run_study

    try:
        return run_study(argv[0], argv[1:], out=out, dry_run=dry_run)
    except StridelabError as err:
        print(f"\nstridelab: error: {err}\n", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nstridelab: interrupted. Finished runs are kept; run the same command again to resume.", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())

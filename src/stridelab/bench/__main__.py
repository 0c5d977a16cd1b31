"""``python -m stridelab.bench [options] [train-config overrides]``: see ``--help`` and docs/performance.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stridelab.errors import StridelabError
from stridelab.files import atomic_write_text


def parse(argv: list[str] | None = None):
    from stridelab.bench.benchmark import PRESETS, BenchOptions, default_out, quick_options

    p = argparse.ArgumentParser(
        prog="python -m stridelab.bench",
        description="Training images/s of a bare PyTorch loop, of stridelab's full path and of torchvision's "
        "CIFAR10+PIL DataLoader on the same model, batch and device (generated CIFAR-shaped data, "
        "no network); the fixed cost of a run and the measurement suite's share of a demo run. "
        "Prints a table and writes JSON. Extra arguments are train-config overrides "
        "(e.g. model.width=16 data.batch_size=128).",
    )
    p.add_argument(
        "--preset",
        default="auto",
        help=f"auto | {' | '.join(PRESETS)} (default auto: gpu when CUDA is available, else cpu)",
    )
    p.add_argument(
        "--repeats", type=int, default=10, help="repeats of the paired bare/stridelab timing (default 10; median)"
    )
    p.add_argument(
        "--baseline-repeats",
        type=int,
        default=3,
        help="the torchvision baseline is timed in the first this-many repeats (default 3)",
    )
    p.add_argument("--steps", type=int, default=30, help="timed steps per path and repeat (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them (default 5)")
    p.add_argument(
        "--block",
        type=int,
        default=5,
        help="the bare loop and stridelab alternate in blocks of this many steps within one fit (default 5)",
    )
    p.add_argument(
        "--workers",
        default=None,
        help="DataLoader workers of the torchvision path, comma-separated "
        "(default: 0 and all cores); the best is the baseline",
    )
    p.add_argument("--train-size", type=int, default=50000, help="generated training images (default 50000)")
    p.add_argument("--no-run-cost", action="store_true", help="skip the fixed cost of a run")
    p.add_argument(
        "--no-demo",
        action="store_true",
        help="skip the demo run that prices the measurement suite (about a minute on 2 CPU cores)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes in seconds: checks the machinery only")
    p.add_argument("--out", type=Path, default=None, help=f"JSON file (default {default_out()})")
    p.add_argument("overrides", nargs="*", help="train-config overrides")
    a = p.parse_args(argv)
    for name in ("repeats", "baseline_repeats", "steps", "warmup", "block"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(a, name)})")
    workers = None
    if a.workers is not None:
        try:
            workers = sorted({int(w) for w in a.workers.split(",")})
        except ValueError:
            p.error(f"--workers takes numbers separated by commas (got {a.workers!r})")
    chosen = dict(preset=a.preset, run_costs=not a.no_run_cost, demo=not a.no_demo)
    if a.quick:
        opts = quick_options(**chosen)
        opts.overrides += a.overrides
    else:
        opts = BenchOptions(
            overrides=a.overrides,
            repeats=a.repeats,
            steps=a.steps,
            warmup=a.warmup,
            block=a.block,
            baseline_repeats=a.baseline_repeats,
            workers=workers,
            train_size=a.train_size,
            **chosen,
        )
    return opts, a.out or default_out()


def main(argv: list[str] | None = None) -> int:
    from stridelab.bench.benchmark import as_json_ready, run_benchmark
    from stridelab.bench.report import table

    opts, out = parse(argv)
    try:
        result = as_json_ready(run_benchmark(opts))
    except StridelabError as err:
        print(f"\nstridelab bench: error: {err}\n", file=sys.stderr)
        return 2
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\nstridelab bench: JSON in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

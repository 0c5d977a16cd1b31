"""What a whole run costs besides its steps: the fixed cost per run in a sweep, and the suite.

A run is :func:`stridelab.train.run`, as a sweep calls it, its timing callback summing the seconds
inside batches (``TrainThroughput(batch_seconds=True)``). Its wall time splits into the time inside
training, validation and test batches (hook to hook), the measurement suite (``time/measure_s``:
metrics and their figures) and the rest: the fixed cost (building data module, model and Trainer,
moving data to the device, logger and result files, saving weights). Hydra's composition of the
job's config is timed apart and added.
"""

from __future__ import annotations

import contextlib
import io
import time

from stridelab.training.throughput import TrainThroughput


def run_cost(cfg, compose_s: float = 0.0) -> dict:
    """Run ``cfg`` once with :func:`stridelab.train.run` and split its wall time."""
    from stridelab.train import run

    clock = TrainThroughput(cfg.metrics.warmup_steps if cfg.get("metrics") else 5, batch_seconds=True)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars and warnings: kept off the table
        metrics = run(cfg, timer=clock)
    total = time.perf_counter() - t0
    steps = sum(clock.seconds.values())
    suite = float(metrics.get("time/measure_s") or 0.0)
    return {
        "total_s": total + compose_s,
        "compose_s": compose_s,
        "train_batches_s": clock.seconds["train"],
        "eval_batches_s": clock.seconds["val"] + clock.seconds["test"],
        "batches": dict(clock.batches),
        "suite_s": suite,
        "fixed_s": total + compose_s - steps - suite,
        "status": metrics.get("status"),
    }

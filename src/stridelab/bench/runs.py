"""What a whole run costs besides its steps: the fixed cost per run in a sweep, and the suite.

A run is :func:`stridelab.train.run`, as a sweep calls it, with :class:`StepClock` added. Its wall
time splits into the time inside training, validation and test batches (hook to hook), the
measurement suite (``time/measure_s``: metrics and their figures) and the rest: the fixed cost
(building data module, model and Trainer, moving data to the device, logger and result files,
saving weights). Hydra's composition of the job's config is timed apart and added.
"""

from __future__ import annotations

import contextlib
import io
import time

import lightning as L

from stridelab.training.timing import synchronize


class StepClock(L.Callback):
    """Seconds spent inside training, validation and test batches, from each batch's start hook to
    its end hook (on a GPU with a sync at both: this clock is for run costs, not throughput)."""

    def __init__(self) -> None:
        self.seconds = {"train": 0.0, "val": 0.0, "test": 0.0}
        self.batches = {"train": 0, "val": 0, "test": 0}
        self._t0 = 0.0

    def _start(self, trainer) -> None:
        synchronize(trainer.strategy.root_device)
        self._t0 = time.perf_counter()

    def _end(self, trainer, kind: str) -> None:
        synchronize(trainer.strategy.root_device)
        self.seconds[kind] += time.perf_counter() - self._t0
        self.batches[kind] += 1

    def on_train_batch_start(self, trainer, *args) -> None:
        self._start(trainer)

    def on_train_batch_end(self, trainer, *args) -> None:
        self._end(trainer, "train")

    def on_validation_batch_start(self, trainer, *args) -> None:
        self._start(trainer)

    def on_validation_batch_end(self, trainer, *args) -> None:
        self._end(trainer, "val")

    def on_test_batch_start(self, trainer, *args) -> None:
        self._start(trainer)

    def on_test_batch_end(self, trainer, *args) -> None:
        self._end(trainer, "test")


def run_cost(cfg, compose_s: float = 0.0) -> dict:
    """Run ``cfg`` once with :func:`stridelab.train.run` and split its wall time."""
    from stridelab.train import run

    clock = StepClock()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars and warnings: kept off the table
        metrics = run(cfg, callbacks=[clock])
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

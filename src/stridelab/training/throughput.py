"""The one timing callback: a run's throughput at steady state, and what the benchmark asks of a fit.

Training: a timing window opens once ``warmup_steps`` steps have ended (so it holds whole cycles of
the fit loop: fetching and augmenting the next batch, hooks, logging, progress bar) and closes after
the last batch of the epoch, before validation; the next epoch opens a new one at its first batch.
Evaluation: every validation pass but the first (its warm-up) is timed as a window of eval-mode
forward passes. The device is synchronised only when a window opens or closes, never inside a step,
so timing does not slow the run it measures. The first training step is timed alone
(``first_step_s``: with ``module.compile=true`` it holds the compile time).

Options the benchmark uses (``stridelab.bench``; a run leaves them off):

* ``block`` and ``between``: every ``block`` timed steps the window closes, ``between(n)`` runs
  (the bare loop's ``n`` steps, timed on the same stretch of the host's time) and the window
  reopens; a partial block is passed on at the end of an epoch and of training.
* ``batch_seconds``: the seconds inside training, validation and test batches, hook to hook, with a
  device sync at both ends of every batch (for a run's cost split, not for throughput).
* ``count_syncs``: on CUDA, warm-up steps after the first run under the sync debug mode and every
  wait of the host for the GPU is recorded (:class:`stridelab.training.timing.SyncWatch`).

See :mod:`stridelab.training.timing` for the windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L

from stridelab.training.timing import SyncWatch, ThroughputWindow, synchronize

STAGES = ("train", "val", "test")


class TrainThroughput(L.Callback):
    def __init__(
        self,
        warmup_steps: int = 5,
        block: int = 0,
        between: Callable[[int], None] | None = None,
        batch_seconds: bool = False,
        count_syncs: bool = False,
    ) -> None:
        self.warmup_steps = int(warmup_steps)
        self.block, self.between = int(block), between
        self.batch_seconds, self.count_syncs = batch_seconds, count_syncs
        self.window: ThroughputWindow | None = None
        self.eval_window: ThroughputWindow | None = None
        self.steps_done = 0  # ended in this fit (not the global step: a resumed fit warms up again)
        self.started_at: float | None = None  # perf_counter at the first training batch's start
        self.first_step_s: float | None = None
        self.seconds = dict.fromkeys(STAGES, 0.0)  # batch_seconds
        self.batches = dict.fromkeys(STAGES, 0)
        self.syncs = SyncWatch()
        self._val_passes = 0
        self._in_block = 0  # timed steps not yet passed to ``between``
        self._t_batch = 0.0

    # -- training ---------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        device = trainer.strategy.root_device
        self.window, self.eval_window = ThroughputWindow(device), ThroughputWindow(device)
        self.count_syncs = self.count_syncs and device.type == "cuda"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.started_at is None:
            synchronize(trainer.strategy.root_device)
            self.started_at = time.perf_counter()
        if self.window is not None and not self.window.is_open and self.steps_done >= self.warmup_steps:
            self.window.open()  # a new epoch, or training again after validation inside an epoch
        self._batch_start(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batch_end(trainer, "train")
        self.steps_done += 1
        if self.steps_done == 1:
            synchronize(trainer.strategy.root_device)
            self.first_step_s = time.perf_counter() - self.started_at
        if self.count_syncs:
            # The batch was fetched before on_train_batch_start: a watch opened at the end of step k
            # holds step k+1 whole. Step 1 (first-call costs) is left out.
            self.syncs.watch(1 <= self.steps_done < self.warmup_steps)
        if self.window is None:
            return
        if self.window.is_open:
            self.window.count(len(batch[1]))
            self._in_block += 1
            last = batch_idx + 1 >= trainer.num_training_batches  # validation comes next
            if last or (self.block and self._in_block >= self.block):
                self.window.close()
                if self.block:
                    self._pass_block()
                if not last:
                    self.window.open()
        elif self.steps_done == self.warmup_steps and batch_idx + 1 < trainer.num_training_batches:
            self.window.open()

    def _pass_block(self) -> None:
        if self.between is not None and self._in_block:
            self.between(self._in_block)
        self._in_block = 0

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.window is not None:
            self.window.close()  # validation inside an epoch (val_check_interval < 1) is not training
        if self.eval_window is not None and not trainer.sanity_checking:
            self._val_passes += 1
            if self._val_passes > 1:
                self.eval_window.open()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.eval_window is not None:
            self.eval_window.close()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.window is not None:
            self.window.close()  # a run stopped mid-epoch (max_steps)
        if self.block:
            self._pass_block()
        self.syncs.watch(False)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.syncs.watch(False)  # leave the debug mode and the warning filters as they were

    # -- batches, hook to hook (batch_seconds) ----------------------------------------------------
    def _batch_start(self, trainer) -> None:
        if self.batch_seconds:
            synchronize(trainer.strategy.root_device)
            self._t_batch = time.perf_counter()

    def _batch_end(self, trainer, stage: str) -> None:
        if self.batch_seconds:
            synchronize(trainer.strategy.root_device)
            self.seconds[stage] += time.perf_counter() - self._t_batch
            self.batches[stage] += 1

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_start(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_end(trainer, "val")
        if self.eval_window is not None and self.eval_window.is_open:
            self.eval_window.count(len(batch[1]))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_start(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch_end(trainer, "test")

"""Training and evaluation throughput of the real run, at steady state (a Lightning callback).

Training: a timing window opens at the start of a training batch once ``warmup_steps`` steps have
run, and closes after the last batch of the epoch, before validation; the next epoch opens a new
one. Evaluation: every validation pass but the first (its warm-up) is timed as a window of
eval-mode forward passes. The device is synchronised only when a window opens or closes, never
inside a step, so timing does not slow the run it measures. See :mod:`stridelab.training.timing`.
"""

from __future__ import annotations

import lightning as L

from stridelab.training.timing import ThroughputWindow


class TrainThroughput(L.Callback):
    def __init__(self, warmup_steps: int = 5) -> None:
        self.warmup_steps = int(warmup_steps)
        self.window: ThroughputWindow | None = None
        self.eval_window: ThroughputWindow | None = None
        self._val_passes = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.window = ThroughputWindow(trainer.strategy.root_device)
        self.eval_window = ThroughputWindow(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.window is not None and not self.window.is_open and trainer.global_step >= self.warmup_steps:
            self.window.open()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.window is None or not self.window.is_open:
            return
        self.window.count(len(batch[1]))
        if batch_idx + 1 >= trainer.num_training_batches:  # last batch: validation comes next
            self.window.close()

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.window is not None:
            self.window.close()  # validation inside an epoch (val_check_interval < 1) is not training
        if self.eval_window is not None and not trainer.sanity_checking:
            self._val_passes += 1
            if self._val_passes > 1:
                self.eval_window.open()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.eval_window is not None and self.eval_window.is_open:
            self.eval_window.count(len(batch[1]))

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.eval_window is not None:
            self.eval_window.close()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.window is not None:
            self.window.close()  # a run stopped mid-epoch (max_steps)

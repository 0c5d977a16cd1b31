"""One LightningModule for every model: cross-entropy classification with device-side tallies.

Accuracy and loss are summed on the device and read once per epoch, so no step waits for the host
(no ``.item()``, no per-step metric sync).

Divergence is checked where the loss is read, at the end of each training epoch: the run stops with
:class:`~stridelab.errors.RunDiverged` (recorded as ``diverged``) when the epoch's mean training loss is
not finite, or exceeds ``diverge_factor`` times ln(C), the cross-entropy of a uniform guess over the C
classes (what an untrained network scores). This is the fixed-threshold rule of Lightning's
``EarlyStopping(check_finite=True, divergence_threshold=...)``, with the threshold in units of ln(C) so
one setting fits every data set; a multiple of the first epoch's loss would miss a run that diverges
in its first epoch (``optimizer.lr=1000`` does). Default 10: 23 nats on 10 classes, far above any run
that learns and far below the 1e16 of a run that exploded without becoming NaN.
"""

from __future__ import annotations

import math
from typing import Callable

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from stridelab.errors import RunDiverged
from stridelab.layers.objective import term_layers, training_objective


class _Tally:
    """Running sums of loss and correct predictions, kept on the device; the count is a host integer
    (a device scalar made from it each step would copy host -> device, a stream sync on CUDA)."""

    def __init__(self) -> None:
        self.loss = self.correct = None
        self.count = 0
        self.classes = 0  # the logits' width: C of the uniform guess's ln(C)

    def add(self, logits: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor) -> None:
        correct = (logits.argmax(1) == y).sum()
        if self.loss is None:
            self.loss, self.correct = loss_sum.detach().float(), correct
        else:
            self.loss = self.loss + loss_sum.detach().float()
            self.correct = self.correct + correct
        self.count += y.numel()
        self.classes = logits.shape[-1]

    def compute(self, device=None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Mean loss and accuracy; under DDP summed over every process first (each saw a shard)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sums = torch.zeros(3, dtype=torch.float64, device=device)
            if self.count:
                sums = torch.stack([self.loss.double(), self.correct.double(), sums[2] + self.count])
            dist.all_reduce(sums)  # every rank calls this, also with an empty shard
            if sums[2] == 0:
                return None
            return (sums[0] / sums[2]).float(), (sums[1] / sums[2]).float()
        if not self.count:
            return None
        return self.loss / self.count, self.correct.float() / self.count


class Classifier(L.LightningModule):
    """Trains ``model`` with ``optimizer`` (a partial taking params) and ``scheduler`` (a partial
    taking the optimizer and ``total_steps``). ``diverge_factor``: the run diverged when an epoch's mean
    training loss exceeds this many times ln(num_classes) (None: only a non-finite loss counts)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        compile: bool = False,
        channels_last: bool = True,
        eval_names: list[str] | None = None,
        diverge_factor: float | None = 10.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing = float(label_smoothing)
        self.compile_model, self.channels_last = compile, channels_last
        self.eval_names = list(eval_names or ["test"])
        self.diverge_factor = None if diverge_factor is None else float(diverge_factor)
        self._train, self._val, self._test = _Tally(), _Tally(), {}
        self._resumed_tally: _Tally | None = None
        self._annealed, self._epoched, self._termed, self._total_steps, self._epochs = [], [], [], 1, None
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._forward = self.model

    def configure_model(self) -> None:
        if self.compile_model and self._forward is self.model:
            self._forward = torch.compile(self.model)

    def forward(self, x):
        return self._forward(x)

    def _loss(self, logits, y, reduction="mean"):
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing, reduction=reduction)

    # training ----------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # Layers that follow the training progress (LPS's Gumbel-softmax temperature) or its epoch
        # (TIPS's wake-up epoch).
        self._annealed = [m for m in self.model.modules() if hasattr(m, "set_training_progress")]
        self._epoched = [m for m in self.model.modules() if hasattr(m, "set_training_epoch")]
        self._termed = term_layers(self.model)  # layers that add loss terms (TIPS)
        self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        self._epochs = epochs = self.trainer.max_epochs if (self.trainer.max_epochs or 0) > 0 else None
        late = {m.wake_up_epoch for m in self._epoched if (getattr(m, "wake_up_epoch", None) or 0) > (epochs or 1e9)}
        if late:
            rank_zero_warn(
                f"downsample.wake_up_epoch={min(late)} is after the run's last epoch ({epochs}): TIPS's shift term "
                "will never count. Set downsample.wake_up_epoch to an epoch of this run, or null for the reference's "
                "share of the run."
            )

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._resumed_tally = None
        for m in self._annealed:  # a host float into a device buffer: no sync
            m.set_training_progress(self.trainer.global_step / self._total_steps)
        for m in self._epoched:
            m.set_training_epoch(self.current_epoch, self._epochs)

    def on_train_epoch_start(self) -> None:
        self._train, self._resumed_tally = self._resumed_tally or _Tally(), None

    def epoch_state(self) -> dict:
        """The training epoch's running sums (a checkpoint taken mid-epoch saves them)."""
        t = self._train
        return {"loss": t.loss, "correct": t.correct, "count": t.count, "classes": t.classes}

    def resume_epoch(self, state: dict) -> None:
        """Continue the sums of an epoch a checkpoint stopped in (the next epoch start takes them)."""
        t = _Tally()
        t.loss, t.correct, t.count = state["loss"], state["correct"], int(state["count"])
        t.classes = int(state.get("classes") or 0)
        if t.loss is not None:
            t.loss, t.correct = t.loss.to(self.device), t.correct.to(self.device)
        # Lightning may or may not call on_train_epoch_start for the restarted epoch: hold the sums
        # both ways until its first step (on_train_batch_start drops the spare).
        self._train = self._resumed_tally = t

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y)
        self._train.add(logits.detach(), y, loss.detach() * y.numel())  # train/loss stays the cross-entropy
        ce_weight, terms = training_objective(self._termed) if self._termed else (1.0, {})
        objective = loss if not terms else ce_weight * loss + sum(w * value for value, w in terms.values())
        if self._logging_step():
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
            if terms:  # a method's own terms (TIPS): each value, and what is minimised
                self.log_dict({f"train/{name}_step": value.detach() for name, (value, _) in terms.items()})
                self.log("train/objective_step", objective.detach(), on_step=True, on_epoch=False)
        return objective

    def _logging_step(self) -> bool:
        """Whether Lightning writes step metrics after this step (every ``trainer.log_every_n_steps``,
        and when the run is stopping). ``self.log`` costs about 1 ms of host time a call (Lightning
        moves its record to the device every time), which a GPU step of a small model cannot hide;
        the loss is only read at these steps anyway."""
        n, trainer = self.trainer.log_every_n_steps, self.trainer
        return n > 0 and ((trainer.global_step + 1) % n == 0 or trainer.should_stop)

    def on_train_epoch_end(self) -> None:
        result = self._train.compute(self.device)
        if result is None:
            return
        loss, acc = result
        self._check_divergence(float(loss), self._train.classes)
        self.log_dict({"train/loss": loss, "train/acc": acc})

    def _check_divergence(self, loss: float, classes: int) -> None:
        chance = math.log(classes) if classes > 1 else 1.0
        limit = None if self.diverge_factor is None else self.diverge_factor * chance
        if math.isfinite(loss) and (limit is None or loss <= limit):
            return
        if math.isfinite(loss):
            what = (
                f"training loss reached {loss:.4g} in epoch {self.current_epoch}, more than module.diverge_factor="
                f"{self.diverge_factor:g} times the {chance:.3g} of a uniform guess over {classes} classes"
            )
        else:
            what = f"training loss became {loss} in epoch {self.current_epoch}"
        precision = str(self.trainer.precision)
        full = precision.startswith(("32", "64"))  # already full precision: no use suggesting it
        raise RunDiverged(
            f"{what}: the run diverged. Lower the learning rate (optimizer.lr) or add warm-up"
            + ("" if full else f", or train in full precision (trainer.precision=32-true; this run: {precision})")
            + ". In a sweep or study the other runs go on, and this one is listed apart, out of the tables' means."
        )

    # evaluation --------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = _Tally()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self._val.add(logits, y, self._loss(logits, y, "sum"))

    def on_validation_epoch_end(self) -> None:
        result = self._val.compute(self.device)
        if result is not None:
            self.log_dict({"val/loss": result[0], "val/acc": result[1]}, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._test = {}

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y = batch
        logits = self(x)
        self._test.setdefault(dataloader_idx, _Tally()).add(logits, y, self._loss(logits, y, "sum"))

    def on_test_epoch_end(self) -> None:
        for idx, name in enumerate(self.eval_names):  # every set, so DDP ranks make the same collectives
            result = self._test.get(idx, _Tally()).compute(self.device)
            if result is None:
                continue
            loss, acc = result
            self.log_dict({f"{name}/loss": loss, f"{name}/acc": acc}, add_dataloader_idx=False)

    # optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

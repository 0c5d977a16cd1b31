"""The three training paths the benchmark compares, on the same model, batch and device.

* ``bare``: a plain PyTorch loop on one fixed batch already on the device; the model-only ceiling.
  Its steps run inside the stridelab fit, alternating in blocks with the fit's own steps
  (:class:`_PairedWindows`), so both are timed on the same stretch of the host's time.
* ``stridelab``: the real thing: :func:`stridelab.build.build_run` builds data module, model,
  LightningModule, callbacks, logger and Trainer from the run's config, and ``trainer.fit`` trains.
* ``torchvision``: the common baseline: torchvision's ``CIFAR10`` dataset class (its PIL-image
  ``__getitem__``) with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor`` and
  ``Normalize`` in a ``DataLoader``.

Each path runs ``warmup`` untimed steps, then ``steps`` timed ones; the device is synchronised at
the ends of the timed window only (:class:`stridelab.training.timing.ThroughputWindow`). The first
step is timed on its own: with ``module.compile=true`` it is the compile time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
import warnings
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
import torch.nn as nn

from stridelab.metrics.cost import training_step
from stridelab.training.timing import ThroughputWindow, synchronize, time_steps


@dataclass
class Timing:
    """One timed window of a path: ``images`` trained in ``seconds``, after warm-up."""

    images: int
    seconds: float
    steps: int
    first_step_s: float
    setup_s: float = 0.0  # building the path before its first step (stridelab: data, model, Trainer)
    extra: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def _time_steps(step, images_per_step: int, device: torch.device, steps: int, warmup: int) -> Timing:
    """A path's steps through the one timing loop (the first step always timed alone)."""
    window, first = time_steps(step, images_per_step, device, steps, max(warmup, 1))
    return Timing(window.images, window.seconds, window.steps, first)  # seconds 0 when steps is 0


def _prepared(model: nn.Module, device: torch.device, channels_last: bool, compile: bool) -> nn.Module:
    net = copy.deepcopy(model).to(device).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return torch.compile(net) if compile else net


def bare_step(
    model: nn.Module,
    optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    amp_dtype=None,
    channels_last: bool = True,
    compile: bool = False,
):
    """The model-only ceiling: :func:`stridelab.metrics.cost.training_step` on one fixed, normalised
    batch on the device, on a fresh copy of ``model`` (``optimizer``: a factory). Returns the step
    closure and the seconds its set-up took."""
    t0 = time.perf_counter()
    net = _prepared(model, images.device, channels_last, compile)
    step = training_step(net, images, labels, optimizer(net.parameters()), amp_dtype)
    return step, time.perf_counter() - t0


class _PairedWindows(L.Callback):
    """Times stridelab's fit and the bare loop on one timeline, in alternating blocks.

    After ``warmup`` fit steps (and ``warmup`` bare steps), the fit runs ``block`` steps in a window,
    then the bare loop runs ``block`` steps in its own window, and so on, until both have timed
    ``steps``. A stridelab window runs from the end of the previous block to the end of its last
    step, so it holds whole cycles of the fit loop: fetching and augmenting the batch, hooks,
    logging, progress bar. The host's speed drifts by 10-20% over seconds; blocks a second or so
    apart see the same machine. Synchronises at window ends only, so it also holds on a GPU.

    On CUDA, the warm-up steps after the first run under ``torch.cuda.set_sync_debug_mode("warn")``:
    every operation inside them that makes the host wait for the GPU (``.item()``, a copy to the
    host, a blocking host-to-device copy) is counted, in ``syncs`` (untimed steps, so counting
    costs the timing nothing).
    """

    def __init__(self, bare, warmup: int, steps: int, block: int) -> None:
        self.bare, self.warmup, self.steps, self.block = bare, warmup, steps, max(1, block)
        self.done = 0
        self.first_step_s = self.bare_first_step_s = 0.0
        self.t_first: float | None = None
        self.fit = self.ref = None
        self.syncs: list[str] = []  # file:line of each wait for the GPU in the counted steps (CUDA only)
        self.sync_steps = 0
        self._watch, self._seen = None, []

    def _watch_syncs(self, on: bool) -> None:
        if on and self._watch is None:
            self._watch = warnings.catch_warnings(record=True)
            self._seen = self._watch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        elif not on and self._watch is not None:
            torch.cuda.set_sync_debug_mode("default")
            self.syncs += [f"{w.filename}:{w.lineno}" for w in self._seen if "synchroniz" in str(w.message)]
            self._watch.__exit__(None, None, None)
            self._watch = None

    def on_train_start(self, trainer, pl_module) -> None:
        device = trainer.strategy.root_device
        self.fit, self.ref = ThroughputWindow(device), ThroughputWindow(device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.done == 0:
            synchronize(trainer.strategy.root_device)
            self.t_first = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # The batch was fetched and augmented before on_train_batch_start: the watch opened at the
        # end of step k counts step k+1 whole.
        device = trainer.strategy.root_device
        self.done += 1
        if self.done == 1:
            synchronize(device)
            self.first_step_s = time.perf_counter() - self.t_first
        if self._watch is not None:
            self.sync_steps += 1
        if device.type == "cuda":
            self._watch_syncs(self.done < self.warmup)
        if self.fit.is_open:
            self.fit.count(len(batch[1]))
        if self.done == self.warmup:
            self.bare_first_step_s = _time_steps(self.bare, 0, device, 0, self.warmup).first_step_s
            self.fit.open()
        elif self.done > self.warmup and (
            (self.done - self.warmup) % self.block == 0 or self.done == self.warmup + self.steps
        ):
            self.fit.close()
            n = min(self.block, self.steps - self.ref.steps)
            self.ref.open()
            for _ in range(n):
                self.bare()
                self.ref.count(len(batch[1]))
            self.ref.close()
            if self.fit.steps < self.steps:
                self.fit.open()

    def on_train_end(self, trainer, pl_module) -> None:
        self._watch_syncs(False)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._watch_syncs(False)  # leave the debug mode and the warning filters as they were


def stridelab_path(cfg, steps: int, warmup: int, bare=None, block: int = 5) -> tuple[Timing, Timing | None]:
    """``trainer.fit`` of the run ``cfg`` describes, stopped after ``warmup + steps`` steps; with
    ``bare`` (a step closure, :func:`bare_step`), the bare loop's steps alternate with the fit's in
    blocks of ``block`` (:class:`_PairedWindows`). Returns the fit's timing and the bare loop's.

    Everything a study's run has takes part: the device-resident data module and its batch
    augmentation, the LightningModule, the configured callbacks (progress bar), the logger and
    the fit-throughput callback. Validation is off: it is not training. The progress bar writes
    into a buffer instead of the console.
    """
    from omegaconf import open_dict

    from stridelab.build import build_run

    if warmup < 1:
        raise ValueError("the paired timing needs at least one warm-up step")
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.max_steps = warmup + steps
        cfg.trainer.max_epochs = -1
        cfg.trainer.limit_val_batches = 0
    t0 = time.perf_counter()
    clock = _PairedWindows(bare or (lambda: None), warmup, steps, block if bare else steps)
    parts = build_run(cfg, callbacks=[clock])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    if clock.fit is None or clock.fit.steps < steps:
        raise RuntimeError(
            f"the stridelab path ran {clock.done} steps, not {warmup + steps}: the training "
            "set is too small for the benchmark's steps (use more data or fewer --steps)."
        )
    fit = Timing(clock.fit.images, clock.fit.seconds, clock.fit.steps, clock.first_step_s, setup_s=clock.t_first - t0)
    if clock.sync_steps:
        fit.extra.update(syncs_per_step=len(clock.syncs) / clock.sync_steps, sync_sites=sorted(set(clock.syncs)))
    ref = (
        Timing(clock.ref.images, clock.ref.seconds, clock.ref.steps, clock.bare_first_step_s)
        if bare is not None
        else None
    )
    return fit, ref


def torchvision_dataset(images: np.ndarray, labels: np.ndarray, mean, std):
    """torchvision's ``CIFAR10`` class over images we hold (N x 3 x 32 x 32 uint8): its own
    ``__getitem__`` (``Image.fromarray``, then the transforms) with the usual CIFAR recipe. The
    file loading and checksum of its constructor are skipped: the data are generated."""
    import torchvision
    from torchvision import transforms as T

    class GeneratedCIFAR10(torchvision.datasets.CIFAR10):
        def __init__(self, data, targets, transform) -> None:  # noqa: D401  (no files to read)
            self.root, self.train = "", True
            self.data, self.targets = data, targets
            self.transform, self.target_transform = transform, None

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    return GeneratedCIFAR10(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels.tolist(), transform)


def torchvision_loader(
    model: nn.Module,
    optimizer,
    dataset,
    batch_size: int,
    workers: int,
    device: torch.device,
    steps: int,
    warmup: int,
    amp_dtype=None,
    channels_last: bool = True,
    compile: bool = False,
) -> Timing:
    """The usual training loop over a ``DataLoader`` (shuffle, ``workers`` worker processes kept
    alive, pinned memory on a GPU); each step copies its batch to the device."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from stridelab.metrics.inference import autocast

    t0 = time.perf_counter()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    if len(loader) < warmup + steps:
        raise RuntimeError(
            f"the torchvision path has {len(loader)} batches, fewer than the {warmup + steps} "
            "steps asked for: use more data or fewer --steps."
        )
    net = _prepared(model, device, channels_last, compile)
    opt = optimizer(net.parameters())
    batches = iter(loader)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def step():
        x, y = next(batches)
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    setup = time.perf_counter() - t0
    timing = _time_steps(step, batch_size, device, steps, warmup)
    timing.setup_s = setup
    batches = loader = None  # drops the iterator and loader: stops the workers
    return timing

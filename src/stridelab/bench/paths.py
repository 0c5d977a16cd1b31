"""The three training paths the benchmark compares, on the same model, batch and device.

* ``bare``: a plain PyTorch loop on one fixed batch already on the device; the model-only ceiling.
  Its steps run inside the stridelab fit, alternating in blocks with the fit's own steps (the fit's
  timing callback calls :class:`BareBlocks` between its blocks), so both are timed on the same
  stretch of the host's time.
* ``stridelab``: the real thing: :func:`stridelab.build.build_run` builds data module, model,
  LightningModule, callbacks, logger and Trainer from the run's config, and ``trainer.fit`` trains.
* ``torchvision``: the common baseline: torchvision's ``CIFAR10`` dataset class (its PIL-image
  ``__getitem__``) with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor`` and
  ``Normalize`` in a ``DataLoader``.

Each path runs ``warmup`` untimed steps, then ``steps`` timed ones, through the one timing loop
(:func:`stridelab.training.timing.time_steps`) or the one timing callback
(:class:`stridelab.training.throughput.TrainThroughput`); the device is synchronised at the ends of
a timed window only. The first step is timed on its own: with ``module.compile=true`` it is the
compile time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from stridelab.metrics.cost import training_step
from stridelab.training.timing import time_steps


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


class BareBlocks:
    """The bare loop's side of the paired timing: ``between`` of the fit's timing callback. Its first
    call warms the bare step up (the first step timed alone); every call times ``n`` bare steps."""

    def __init__(self, step, images_per_step: int, device: torch.device, warmup: int) -> None:
        self.step, self.images_per_step, self.device, self.warmup = step, images_per_step, device, warmup
        self.timing = Timing(0, 0.0, 0, 0.0)
        self._warm = False

    def __call__(self, n: int) -> None:
        if not self._warm:
            self.timing.first_step_s = time_steps(self.step, 0, self.device, 0, max(self.warmup, 1))[1]
            self._warm = True
        window, _ = time_steps(self.step, self.images_per_step, self.device, n)
        self.timing.images += window.images
        self.timing.seconds += window.seconds
        self.timing.steps += window.steps


def stridelab_path(cfg, steps: int, warmup: int, bare: BareBlocks | None = None, block: int = 5) -> Timing:
    """``trainer.fit`` of the run ``cfg`` describes, stopped after ``warmup + steps`` steps, timed by
    the run's own timing callback; with ``bare``, the bare loop's steps alternate with the fit's in
    blocks of ``block`` (``bare.timing`` holds theirs). Returns the fit's timing.

    Everything a study's run has takes part: the device-resident data module and its batch
    augmentation, the LightningModule, the configured callbacks (progress bar), the logger and
    the timing callback. Validation is off: it is not training. The progress bar writes into a
    buffer instead of the console. On CUDA the warm-up steps after the first count the host's
    waits for the GPU (``extra``: ``syncs_per_step``, ``sync_sites``).
    """
    from omegaconf import open_dict

    from stridelab.build import build_run
    from stridelab.training.throughput import TrainThroughput

    if warmup < 1:
        raise ValueError("the paired timing needs at least one warm-up step")
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.max_steps = warmup + steps
        cfg.trainer.max_epochs = -1
        cfg.trainer.limit_val_batches = 0
    t0 = time.perf_counter()
    clock = TrainThroughput(warmup, block=block if bare else 0, between=bare, count_syncs=True)
    parts = build_run(cfg, timer=clock)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    if clock.window is None or clock.window.steps < steps:
        raise RuntimeError(
            f"the stridelab path ran {clock.steps_done} steps, not {warmup + steps}: the training "
            "set is too small for the benchmark's steps (use more data or fewer --steps)."
        )
    w = clock.window
    fit = Timing(w.images, w.seconds, w.steps, clock.first_step_s, setup_s=clock.started_at - t0)
    if clock.syncs.steps:
        fit.extra.update(
            syncs_per_step=len(clock.syncs.sites) / clock.syncs.steps, sync_sites=sorted(set(clock.syncs.sites))
        )
    return fit


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

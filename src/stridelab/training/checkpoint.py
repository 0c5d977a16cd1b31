"""A run's mid-run checkpoints and its stop signals (issue 13).

A checkpoint is Lightning's own (weights, optimizer, scheduler, loops: epoch and step, callbacks'
states) plus what an exact continuation also needs and Lightning leaves out: the random number
generators' states (torch CPU and CUDA, numpy, Python, the augmentation's own) and the data order
and position of the epoch in progress. It is written atomically to ``<run>/checkpoints/last.ckpt`` at the end of every
``checkpoint.every_n_epochs``-th epoch and when a stop signal arrives; the one it replaces stays as ``previous.ckpt``
(``checkpoint.keep_previous``), what a resume falls back to when ``last.ckpt`` was damaged by something else
(:mod:`stridelab.training.resume`). On the CPU a run stopped and
resumed from it ends with the same figures as a run that never stopped (tests/test_resume.py).

Signals: SIGTERM (``kill``, ``timeout``, SLURM's preemption and time limit), SIGINT (Ctrl-C) and
SIGUSR1 (SLURM's warning before a time limit, ``--signal``) make the run save a checkpoint at the end
of the training step in progress and stop with :class:`~stridelab.errors.RunInterrupted`. Outside
the training steps (validation, test, the measurement suite) the run stops at once and a resume
continues from the last epoch's checkpoint. A second signal stops at once.
"""

from __future__ import annotations

import inspect
import os
import random
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from stridelab.errors import RunInterrupted
from stridelab.files import atomic_path

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
PREVIOUS = "previous.ckpt"
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST


def checkpoint_progress(checkpoint: dict) -> tuple[int, int, bool]:
    """(whole epochs done, optimiser steps, saved mid-epoch) of a loaded checkpoint. Lightning's
    ``epoch`` is the epoch it was saved in; one saved at an epoch's end has finished that epoch."""
    saved = checkpoint.get("stridelab") or {}
    mid_epoch = saved.get("data") is not None
    epochs_done = int(checkpoint.get("epoch", 0)) + (0 if mid_epoch else 1)
    return epochs_done, int(checkpoint.get("global_step", 0)), mid_epoch


def rng_state() -> dict:
    """Every generator a training step may draw from, in types ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunCheckpoint(Checkpoint):
    """Saves ``last.ckpt`` every ``every_n_epochs`` epochs (0: only on a stop signal) and on a stop
    signal, the one it replaces kept as ``previous.ckpt`` with ``keep_previous``; restores the RNG
    states and the data position when Lightning resumes from one.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning calls its epoch-end hook after
    the LightningModule's: a diverged epoch (the module raises) is never saved."""

    def __init__(self, path: str | os.PathLike, every_n_epochs: int = 1, keep_previous: bool = False) -> None:
        self.path = Path(path)
        self.previous = self.path.with_name(PREVIOUS) if keep_previous else None
        self.every_n_epochs = every_n_epochs  # checked with the config (stridelab.validation), before fit
        self.stop_signal: str | None = None  # set by StopSignals: stop at the end of this training step
        self.fitting = False
        self.saved = False  # whether this fit wrote a checkpoint
        self.resumed_from: tuple[int, int] | None = None  # (whole epochs, steps) done in the checkpoint resumed
        self._position = 0  # batches of the current epoch consumed; None: the epoch is complete

    def save(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                trainer.save_checkpoint(tmp, weights_only=False)  # the full state
                if self.previous is not None and self.path.is_file():
                    os.replace(self.path, self.previous)  # a rename: no copy, no second write
        else:
            trainer.save_checkpoint(self.path, weights_only=False)  # a collective call; only rank 0 writes
        self.saved = True

    # Lightning hooks --------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self.fitting = True

    def on_train_end(self, trainer, pl_module) -> None:
        self.fitting = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.fitting = False

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._position = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._position = batch_idx + 1
        if self.stop_signal is not None:
            self.save(trainer)
            raise RunInterrupted(self.stop_signal, str(self.path))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._position = None
        done = trainer.current_epoch + 1
        last = (trainer.max_epochs or -1) > 0 and done >= trainer.max_epochs
        if self.every_n_epochs > 0 and (done % self.every_n_epochs == 0 or last):
            self.save(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        data = None
        loader = getattr(trainer.datamodule, "train_batches", None)
        if self._position is not None and loader is not None:  # mid-epoch: where the epoch is, and its sums
            data = {
                "order": None if loader.order is None else loader.order.cpu(),
                "position": self._position,
                "sums": pl_module.epoch_state() if hasattr(pl_module, "epoch_state") else None,
            }
        augment = getattr(trainer.datamodule, "augment_state", None)
        checkpoint["stridelab"] = {"rng": rng_state(), "data": data, "augment": augment() if augment else None}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        saved = checkpoint.get("stridelab") or {}
        self.resumed_from = checkpoint_progress(checkpoint)[:2]
        if not saved:
            return
        set_rng_state(saved["rng"])
        if saved.get("augment") is not None and hasattr(trainer.datamodule, "set_augment_state"):
            trainer.datamodule.set_augment_state(saved["augment"])
        data = saved["data"]
        if data is not None:
            trainer.datamodule.resume_train(data["order"], data["position"])
            if data.get("sums") is not None and hasattr(pl_module, "resume_epoch"):
                pl_module.resume_epoch(data["sums"])


def existing(checkpoint: RunCheckpoint | None) -> str | None:
    """The path of ``checkpoint``'s file if there is one (from this fit or an earlier one)."""
    return str(checkpoint.path) if checkpoint is not None and checkpoint.path.is_file() else None


def as_interruption(err: BaseException, checkpoint: RunCheckpoint | None) -> BaseException:
    """A stop by signal as :class:`RunInterrupted` (Lightning's own SIGTERM exception, or a Ctrl-C
    that came before our handlers); anything else unchanged."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(err, RunInterrupted):
        err.checkpoint = err.checkpoint or existing(checkpoint)
        return err
    if isinstance(err, SIGTERMException):
        return RunInterrupted("SIGTERM", existing(checkpoint))
    if isinstance(err, KeyboardInterrupt):
        return RunInterrupted("SIGINT", existing(checkpoint))
    return err


def remove_checkpoints(run_dir: str | os.PathLike) -> None:
    """A finished run's checkpoints (``model.pt`` stays): a 120-run study must not fill a disk."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if folder.is_dir():
        for f in folder.iterdir():
            f.unlink(missing_ok=True)
        folder.rmdir()


@contextmanager
def resume_warnings(datamodule, resume) -> Iterator[None]:
    """Two of Lightning's warnings are false on a resume of ours, and silenced for this fit only:
    "your dataloader is not resumable" on a mid-epoch resume, where a data module with ``resume_train``
    gets its order and position back from the checkpoint (:class:`RunCheckpoint`), so the figures
    equal an unbroken run's; and the CSV logger's "previous log files will be deleted", whose rows
    :func:`stridelab.training.lifecycle.keep_csv_log` kept. A data module without ``resume_train``
    (one of a user's own) keeps the first warning, where it is true."""
    with warnings.catch_warnings():
        if resume is not None:
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
            if resume.mid_epoch and hasattr(datamodule, "resume_train"):
                warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        yield


def fit_kwargs(trainer: L.Trainer, ckpt: str | os.PathLike | None) -> dict:
    """``trainer.fit`` arguments that resume from ``ckpt`` with ``weights_only=True`` where this
    Lightning can (2.5+); older ones load with PyTorch's default."""
    if ckpt is None:
        return {}
    kwargs = {"ckpt_path": str(ckpt)}
    if "weights_only" in inspect.signature(trainer.fit).parameters:
        kwargs["weights_only"] = True
    return kwargs


class StopSignals:
    """Installs handlers for SIGTERM, SIGINT and SIGUSR1 for the duration of a ``with`` block (main
    thread only; elsewhere it does nothing). The first signal: while ``checkpoint`` is fitting, it
    asks it to stop after the current step; otherwise ``on_first(name)`` is called if given (a sweep
    between its runs: finish the current job, start no other). Otherwise, and on a second signal,
    :class:`RunInterrupted` is raised at once. ``received``: the first signal's name."""

    def __init__(self, checkpoint: RunCheckpoint | None, on_first=None) -> None:
        self.checkpoint, self.on_first = checkpoint, on_first
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        first = self.received is None
        self.received = self.received or name
        if first and self.checkpoint is not None and self.checkpoint.fitting:
            self.checkpoint.stop_signal = name
            return
        if first and self.on_first is not None:
            self.on_first(name)
            return
        raise RunInterrupted(name, existing(self.checkpoint))

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}


def forward_to_children(name: str) -> None:
    """Send signal ``name`` to this process's children (Linux: read from /proc): the worker processes
    of ``launcher=joblib``, whose runs then checkpoint and stop as a run in this process would."""
    me, sig = os.getpid(), getattr(signal, name)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:  # fields: state, ppid, ...
                os.kill(int(stat.parent.name), sig)
        except (OSError, IndexError, ValueError):
            continue

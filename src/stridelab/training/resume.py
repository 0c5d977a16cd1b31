"""Where an unfinished run resumes from: its checkpoint, checked before it is trusted (issues 13 and 19).

stridelab writes every checkpoint whole (a temporary file renamed into place), so a damaged one was
cut short or changed by something else: a copy interrupted, a node lost while another tool wrote
the file, a disk error. Before Lightning reads it, :func:`read_resume_point` checks its zip structure,
the CRC-32 of every member (PyTorch records them; a flipped byte in the weights is caught here,
``torch.load`` alone would not notice) and that ``torch.load(weights_only=True)`` reads it as a
training state. :func:`find_resume_point` moves a damaged one aside (``last.ckpt.damaged``), says so
in one paragraph, and resumes from ``previous.ckpt`` (the checkpoint before it, kept while the run
is unfinished: ``checkpoint.keep_previous``) or, without one, starts the run afresh.
"""

from __future__ import annotations

import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from stridelab.errors import ConfigError
from stridelab.training.checkpoint import PREVIOUS, checkpoint_path, checkpoint_progress
from stridelab.training.results import METRICS_FILE, read_metrics

DAMAGED_SUFFIX = ".damaged"


class DamagedCheckpoint(Exception):
    """A checkpoint file that cannot be resumed from; the message says what is wrong with it."""


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint that was read and checked: its file and how far its run had got."""

    path: Path
    epochs: int  # whole epochs done
    step: int  # optimiser steps done
    mid_epoch: bool  # saved inside an epoch (a stop signal): the epoch continues at its next batch

    def describe(self) -> str:
        where = ", mid-epoch: the epoch continues at its next batch" if self.mid_epoch else ""
        return f"epoch {self.epochs}, step {self.step} of {self.path}{where}"


def read_resume_point(path: str | os.PathLike) -> ResumePoint:
    """Check ``path`` as a whole, safely loadable training state; raise :class:`DamagedCheckpoint` if not."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise DamagedCheckpoint(f"it is not a whole zip archive, as PyTorch writes them ({err})") from None
    if bad is not None:
        raise DamagedCheckpoint(f"its member {bad} fails its CRC-32 check (its bytes were changed)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a pickle that needs more than weights_only allows, or unreadable records
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DamagedCheckpoint(f"torch.load(weights_only=True) cannot read it ({first})") from None
    if not isinstance(state, dict) or not {"epoch", "global_step", "state_dict"} <= set(state):
        raise DamagedCheckpoint("it holds no Lightning training state (epoch, global_step, state_dict)")
    epochs, step, mid_epoch = checkpoint_progress(state)
    return ResumePoint(path, epochs, step, mid_epoch)


def find_resume_point(run_dir: str | os.PathLike, config_hash: str) -> tuple[ResumePoint | None, int]:
    """The checkpoint an unfinished run in ``run_dir`` left (``last.ckpt``, else ``previous.ckpt``)
    and how often the run was resumed before. A damaged checkpoint is moved aside with a message on
    stderr; a checkpoint of another config (a folder reused for a different run) is refused."""
    last = checkpoint_path(run_dir)
    candidates = [p for p in (last, last.with_name(PREVIOUS)) if p.is_file()]
    if not candidates:
        return None, 0
    try:
        before = read_metrics(Path(run_dir) / METRICS_FILE)
    except (OSError, ValueError):
        before = {}
    if before.get("config_hash") not in (None, config_hash):
        raise ConfigError(
            f"{run_dir} holds a checkpoint of another configuration (config_hash {before['config_hash']}, "
            f"this run's is {config_hash}): it cannot be resumed with these settings. Use another folder, or "
            f"delete {last.parent} to start this run afresh there."
        )
    resumes = int(before.get("resume/count") or 0)
    damaged = []
    for path in candidates:
        try:
            point = read_resume_point(path)
        except DamagedCheckpoint as err:
            aside = path.with_name(path.name + DAMAGED_SUFFIX)
            os.replace(path, aside)  # out of the way, kept for a look; the next damaged one replaces it
            damaged.append(f"{path} is damaged: {err}; it was moved aside to {aside}")
            continue
        if damaged:
            _warn(damaged, f"The run resumes from the previous checkpoint instead: {point.describe()}.")
        return point, resumes
    _warn(damaged, "No earlier checkpoint is kept, so the run starts afresh from epoch 0.")
    return None, resumes


def _warn(damaged: list[str], outcome: str) -> None:
    print(
        f"stridelab: warning: the checkpoint {'; and '.join(damaged)}. stridelab writes checkpoints whole, so "
        "something else cut it short or changed it (a copy interrupted, a node lost mid-write, a disk error). "
        + outcome,
        file=sys.stderr,
    )

"""Everything around one run's work (issue 13): its lock, its resume point, its ``metrics.json`` from
the first second, its stop signals, and how it ends (ok, failed, interrupted).

:class:`RunGuard` is a ``with`` block: on entry it takes the run folder's lock (or raises
:class:`~stridelab.training.lock.RunLocked` before writing anything), finds the checkpoint an
unfinished run left there, writes ``config.yaml`` and a ``running`` ``metrics.json``, and installs the
stop-signal handlers. On exit it records a failure or an interruption (a signal, Lightning's SIGTERM
exception, Ctrl-C) with its one-paragraph reason, and releases the lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from stridelab.config import config_hash
from stridelab.errors import RunInterrupted
from stridelab.files import atomic_write_text
from stridelab.training.checkpoint import (
    RunCheckpoint,
    StopSignals,
    as_interruption,
    checkpoint_path,
    find_resume_point,
)
from stridelab.training.ddp import ddp_environment, end_distributed, is_rank_zero
from stridelab.training.lock import RunLock
from stridelab.training.results import METRICS_FILE, RunResults


class RunGuard:
    def __init__(self, cfg: DictConfig, out: str | os.PathLike, fields: dict, unwrap=lambda e: e) -> None:
        self.cfg, self.out, self.fields, self.unwrap = cfg, Path(out), fields, unwrap
        self.rank_zero = is_rank_zero()
        self.lock = RunLock(self.out) if self.rank_zero else None
        every = (cfg.get("checkpoint") or {}).get("every_n_epochs", 1)
        self.checkpoint = RunCheckpoint(checkpoint_path(self.out), every) if every is not None else None
        self.resume_from: Path | None = None
        self.results: RunResults | None = None
        self._signals = StopSignals(self.checkpoint)

    def __enter__(self) -> RunGuard:
        self.out.mkdir(parents=True, exist_ok=True)
        self._env_before = ddp_environment()
        run_hash = config_hash(self.cfg)
        if self.lock is not None:
            self.lock.acquire()  # before anything is written: the holder's metrics.json is left alone
        try:
            resumes = 0
            if self.cfg.get("resume", True):
                self.resume_from, resumes = find_resume_point(self.out, run_hash)
            self.results = RunResults(
                self.out / METRICS_FILE,
                write=self.rank_zero,
                **self.fields,
                config_hash=run_hash,
                run_dir=str(self.out),
            )
            if self.resume_from is not None:
                self.results.update({"resume/count": resumes + 1})
            if self.rank_zero:
                atomic_write_text(self.out / "config.yaml", OmegaConf.to_yaml(self.cfg, resolve=True))
            self.results.write()
            self._signals.__enter__()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, kind, err, tb) -> bool:
        self._signals.__exit__(kind, err, tb)
        try:
            if err is None:
                return False
            ended = as_interruption(self.unwrap(err), self.checkpoint)
            if isinstance(ended, RunInterrupted):
                self.results.record("interrupted", ended.reason())
            else:
                self.results.record("failed", f"{type(ended).__name__}: {ended}")
        finally:
            self._release()
        if ended is err:
            return False
        raise ended from None  # the user's error, not Hydra's wrapper; a signal as RunInterrupted

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
        if self.rank_zero:
            end_distributed(self._env_before)


class SweepOutcome:
    """What the jobs of one invocation ended with, for the exit status: 0 every run finished (or was
    skipped as finished); 1 a multirun had failed runs; 2 a single run failed; 128 + N a signal N
    stopped it."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.interrupted: RunInterrupted | None = None
        self.status = 0

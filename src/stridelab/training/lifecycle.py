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
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from stridelab.config import config_hash
from stridelab.errors import RunDiverged, RunInterrupted
from stridelab.files import as_write_error, atomic_write_text
from stridelab.training.checkpoint import (
    RunCheckpoint,
    StopSignals,
    as_interruption,
    checkpoint_path,
    forward_to_children,
)
from stridelab.training.ddp import ddp_environment, end_distributed, is_rank_zero
from stridelab.training.lock import RunLock
from stridelab.training.results import METRICS_FILE, RunResults, read_metrics
from stridelab.training.resume import ResumePoint, find_resume_point


class RunFinished(Exception):
    """The run folder already holds this config's finished run (another sweep finished it meanwhile)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        super().__init__(f"this config already finished in {run_dir} (resume=false trains it again)")


class RunGuard:
    def __init__(self, cfg: DictConfig, out: str | os.PathLike, fields: dict, unwrap=lambda e: e) -> None:
        self.cfg, self.out, self.fields, self.unwrap = cfg, Path(out), fields, unwrap
        self.rank_zero = is_rank_zero()
        self.lock = RunLock(self.out) if self.rank_zero else None
        settings = cfg.get("checkpoint") or {}
        every, previous = settings.get("every_n_epochs", 1), settings.get("keep_previous", True)
        self.checkpoint = RunCheckpoint(checkpoint_path(self.out), every, previous) if every is not None else None
        self.resume_from: ResumePoint | None = None
        self.results: RunResults | None = None
        self._signals = StopSignals(self.checkpoint)

    def __enter__(self) -> RunGuard:
        self.out.mkdir(parents=True, exist_ok=True)
        self._env_before = ddp_environment()
        run_hash = config_hash(self.cfg)
        if self.lock is not None:
            self.lock.acquire()  # before anything is written: the holder's metrics.json is left alone
            if self.lock.taken_over:
                print(f"stridelab: {self.lock.taken_over}", file=sys.stderr)
        try:
            resumes = 0
            if self.cfg.get("resume", True):
                if finished_here(self.out, run_hash):  # e.g. by another sweep since this one looked
                    raise RunFinished(self.out)
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
                keep_csv_log(self.out, resumes + 1)
                if self.rank_zero:
                    print(f"stridelab: resuming from {self.resume_from.describe()}", file=sys.stderr)
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
            ended = as_write_error(as_interruption(self.unwrap(err), self.checkpoint))
            if isinstance(ended, RunInterrupted):
                # A signal after the run recorded ok (while its checkpoints go) stops the sweep, but the
                # run is finished: it stays ok, so a resumed sweep skips it instead of training it again.
                if self.results.data.get("status") != "ok":
                    self.results.record("interrupted", ended.reason())
            else:
                status = RunDiverged.status if isinstance(ended, RunDiverged) else "failed"
                self.results.record(status, f"{type(ended).__name__}: {ended}")
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


def keep_csv_log(run_dir: Path, resume: int) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts: a resumed run keeps the
    rows logged before it under another name (csv/metrics.before_resume_<n>.csv)."""
    log_file = run_dir / "csv" / "metrics.csv"
    if log_file.is_file():
        os.replace(log_file, log_file.with_name(f"metrics.before_resume_{resume}.csv"))


def finished_here(run_dir: Path, config_hash: str) -> bool:
    try:
        before = read_metrics(run_dir / METRICS_FILE)
    except (OSError, ValueError):
        return False
    return before.get("status") == "ok" and before.get("config_hash") == config_hash


class SweepOutcome:
    """What the jobs of one invocation ended with, for the exit status: 0 every run finished (or was
    skipped as finished); 1 a multirun had failed runs; 2 a single run failed; 128 + N a signal N
    stopped it. A diverged run counts as a failed one."""

    current: SweepOutcome | None = None  # this invocation's (begin()): the one a launcher in it reports to

    @classmethod
    def begin(cls) -> SweepOutcome:
        """A new outcome for this invocation of ``stridelab.train``, registered as :attr:`current`. Set
        here, not on every construction: a second copy of the module imported later (``python -m``
        runs it as ``__main__``) must not take over the sweep a launcher reports to."""
        cls.current = cls()
        return cls.current

    def __init__(self) -> None:
        self.finished: list[str] = []  # trained here, or found finished
        self.failed: list[str] = []
        self.diverged: list[str] = []  # failed with a diverged loss (their own list: a learning rate to lower)
        self.skipped: list[str] = []  # another process holds them
        self.not_started: list[str] = []  # after a stop signal
        self.interrupted: RunInterrupted | None = None
        self.interrupted_runs: list[str] = []  # runs (not the gap between runs) a signal stopped
        self.status = 0
        self.multirun = False

    def fail(self, run_dir: str, diverged: bool = False) -> None:
        (self.diverged if diverged else self.failed).append(run_dir)
        self.status = max(self.status, 1 if self.multirun else 2)

    def interrupt(self, err: RunInterrupted, run_dir: str = "") -> None:
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            # A SLURM job of launcher=slurm ends without a result, so the launcher keeps waiting for it:
            # SLURM starts a preempted or requeued job again and its run resumes (a cancelled one is failed).
            sys.exit(err.exit_status)
        self.interrupted = self.interrupted or err
        self.interrupted_runs.append(run_dir)

    def stop_later(self, name: str) -> None:
        """A signal outside a run: the sweep starts no other run; its worker processes are told."""
        self.interrupted = self.interrupted or RunInterrupted(name, None)
        forward_to_children(name)

    def end(self) -> int:
        """The exit status; a multirun's last lines say what to do about runs that did not finish."""
        if self.multirun:
            for line in self.report():
                print(line, file=sys.stderr)
        return self.interrupted.exit_status if self.interrupted is not None else self.status

    def report(self) -> list[str]:
        """What a stopped or partly failed sweep tells the user at its end."""
        lines = []
        if self.interrupted is not None:
            counts = [f"{len(self.finished)} finished"]
            n = len(self.interrupted_runs)
            counts += [f"{n} interrupted (they resume from their checkpoints)"] if n > 1 else []
            counts += ["1 interrupted (it resumes from its checkpoint)"] if n == 1 else []
            counts += [f"{len(self.not_started)} not started"] if self.not_started else []
            lines.append(
                f"stridelab: stopped by {self.interrupted.signame}: {', '.join(counts)}. Run the same command "
                "again to finish: finished runs are skipped, interrupted ones resume."
            )
        if self.failed:
            lines.append(f"stridelab: {len(self.failed)} run(s) failed (their metrics.json says why):")
            lines += [f"  {path}" for path in self.failed]
        if self.diverged:
            lines.append(
                f"stridelab: {len(self.diverged)} run(s) diverged (their loss exploded: lower optimizer.lr or add "
                "warm-up; they are left out of the tables' means and listed there):"
            )
            lines += [f"  {path}" for path in self.diverged]
        if self.skipped:
            lines.append(f"stridelab: {len(self.skipped)} run(s) skipped, another process is training them:")
            lines += [f"  {path}" for path in self.skipped]
        return lines

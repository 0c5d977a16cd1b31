"""Stopped runs resume from their checkpoint and end with the same figures (issue 13).

A run stopped by a signal mid-epoch, or crashed after an epoch, and started again in its folder
ends with the same test accuracy, test loss and suite figures, to the last bit on the CPU, as the
run that never stopped.
"""

from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from stridelab.errors import RunInterrupted
from stridelab.train import run
from stridelab.training.checkpoint import checkpoint_path

# Small but real: 2 epochs of 8 steps on shapes10, a simple_cnn, the quick suite.
RUN = [
    "experiment=smoke",
    "data=shapes10",
    "logger=csv",
    "trainer.max_epochs=2",
    "data.limit_train=512",
    "seed=3",
]


def _figures(metrics: dict) -> dict:
    """What must not change: test and suite figures (not timings, not bookkeeping)."""
    skip = ("time/", "cost/", "resume/", "run_dir", "status", "reason", "trainer/")
    return {k: v for k, v in metrics.items() if not k.startswith(skip) and isinstance(v, (int, float, str))}


class SignalAt(L.Callback):
    """Sends this process ``sig`` at the start of training step ``step`` (counted from 0)."""

    def __init__(self, step: int, sig=signal.SIGTERM) -> None:
        self.step, self.sig = step, sig

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


class CrashAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("the node went away")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, compose):
    tmp = tmp_path_factory.mktemp("whole")
    return run(compose(RUN, tmp))


def test_a_signal_mid_epoch_checkpoints_and_the_resumed_run_equals_the_whole_one(
    tmp_path, compose, uninterrupted, capsys
):
    cfg = compose(RUN, tmp_path)
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted) as stopped:
        run(cfg, callbacks=[SignalAt(11)])  # epoch 2, its fourth step
    assert stopped.value.signame == "SIGTERM" and stopped.value.exit_status == 143
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "interrupted" and "SIGTERM" in record["reason"] and "resume" in record["reason"]
    ckpt = torch.load(checkpoint_path(out), weights_only=True)  # a plain checkpoint, safe to load
    assert ckpt["global_step"] == 12 and ckpt["stridelab"]["data"]["position"] == 4
    assert not (out / ".lock").exists()
    capsys.readouterr()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run(cfg)
    # Lightning's "your dataloader is not resumable" was false here: the data module restores its position;
    # and so was the CSV logger's "previous log files will be deleted" (csv/metrics.before_resume_1.csv).
    false = [str(w.message) for w in caught if "not resumable" in str(w.message) or "will be deleted" in str(w.message)]
    assert not false, false
    said = capsys.readouterr().err
    assert f"stridelab: resuming from epoch 1, step 12 of {checkpoint_path(out)}, mid-epoch" in said
    assert resumed["status"] == "ok" and resumed["resume/count"] == 1 and resumed["resume/step"] == 12
    assert resumed["resume/epoch"] == 1  # whole epochs done; it resumed inside the second
    assert _figures(resumed) == _figures(uninterrupted)
    assert not checkpoint_path(out).exists()  # a finished run's checkpoints are removed
    assert (out / "csv" / "metrics.before_resume_1.csv").is_file()  # the rows logged before the stop


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR1])
def test_ctrl_c_and_slurms_warning_also_checkpoint_and_stop(sig, tmp_path, compose):
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted) as stopped:
        run(compose([*RUN, "trainer.max_epochs=1"], tmp_path), callbacks=[SignalAt(2, sig)])
    name = signal.Signals(sig).name
    assert stopped.value.signame == name and stopped.value.exit_status == 128 + sig
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "interrupted" and name in record["reason"]
    assert torch.load(checkpoint_path(out), weights_only=True)["global_step"] == 3


def test_a_crash_after_an_epoch_resumes_from_that_epoch(tmp_path, compose, uninterrupted):
    cfg = compose(RUN, tmp_path)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="node went away"):
        run(cfg, callbacks=[CrashAt(8)])  # the first step of epoch 2
    assert json.loads((out / "metrics.json").read_text())["status"] == "failed"
    resumed = run(cfg)
    assert resumed["resume/epoch"] == 1 and resumed["resume/step"] == 8
    assert _figures(resumed) == _figures(uninterrupted)


def test_kept_checkpoint_and_a_changed_config_is_refused(tmp_path, compose):
    out = tmp_path / "run"
    run(compose([*RUN, "trainer.max_epochs=1", "checkpoint.keep=true"], tmp_path))
    assert checkpoint_path(out).is_file()
    with pytest.raises(Exception, match="checkpoint of another configuration"):
        run(compose([*RUN, "trainer.max_epochs=1", "optimizer.lr=0.5"], tmp_path))
    # resume=false starts afresh instead
    again = run(compose([*RUN, "trainer.max_epochs=1", "optimizer.lr=0.5", "resume=false"], tmp_path))
    assert again["status"] == "ok" and "resume/count" not in again


def test_tensorboard_curves_of_a_resumed_run_have_each_step_once(tmp_path, compose):
    """The steps between the checkpoint and the crash are trained and logged again: the resumed writer
    purges the earlier ones (TensorBoard reads each step once). The final figures (HPARAMS) sit at the
    run's last step, not at step 0 of every curve."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose([*RUN, "logger=tensorboard", "trainer.log_every_n_steps=1"], tmp_path)
    with pytest.raises(RuntimeError, match="node went away"):
        run(cfg, callbacks=[CrashAt(12)])  # mid epoch 2: steps 8-11 were logged after the checkpoint
    run(cfg)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss_step")] == list(range(16))
    assert [e.step for e in events.Scalars("val/loss")] == [7, 15, 16]


def test_a_damaged_last_checkpoint_resumes_from_the_previous_one_to_the_same_figures(
    tmp_path, compose, uninterrupted, capsys
):
    """The checkpoint before last.ckpt is kept while the run is unfinished (checkpoint.keep_previous)."""
    cfg = compose(RUN, tmp_path)
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run(cfg, callbacks=[SignalAt(11)])  # saves step 12; the end of epoch 1 (step 8) becomes previous.ckpt
    last = checkpoint_path(out)
    assert torch.load(last.with_name("previous.ckpt"), weights_only=True)["global_step"] == 8
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    capsys.readouterr()
    resumed = run(cfg)
    said = capsys.readouterr().err
    assert "is damaged" in said and "resumes from the previous checkpoint instead: epoch 1, step 8" in said
    assert resumed["status"] == "ok" and resumed["resume/step"] == 8
    assert _figures(resumed) == _figures(uninterrupted)


def test_a_mid_epoch_resume_keeps_lightnings_warning_for_a_data_module_that_cannot_resume():
    from stridelab.training.checkpoint import resume_warnings
    from stridelab.training.resume import ResumePoint

    point = ResumePoint(Path("last.ckpt"), 1, 12, mid_epoch=True)
    message = "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not"
    for module, shown in ((SimpleNamespace(resume_train=print), False), (SimpleNamespace(), True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with resume_warnings(module, point):
                warnings.warn(message + " resumable.", stacklevel=1)
        assert bool(caught) == shown


def test_a_signal_after_the_run_recorded_ok_stops_it_but_leaves_it_finished(tmp_path, compose, monkeypatch):
    """SIGTERM while a finished run removes its checkpoints: the process stops as interrupted (a sweep
    ends there), but metrics.json keeps status ok, so a resumed sweep skips the run instead of training
    it again (it used to be rewritten as interrupted; a flaky Ctrl-C test in test_studies.py showed it)."""
    import stridelab.train as train_module

    def signalled(out):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train_module, "remove_checkpoints", signalled)
    with pytest.raises(RunInterrupted):
        run(compose([*RUN, "trainer.max_epochs=1"], tmp_path))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "ok"

"""What clusters and users do to runs (issue 13): stop signals on a sweep, two sweeps into one
folder, a disk that fills up. Each test reproduces the fault, then checks the good outcome."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stridelab.errors import WriteError
from stridelab.files import atomic_path, atomic_write_text
from stridelab.train import run
from stridelab.training.checkpoint import checkpoint_path
from stridelab.training.lock import LOCK_FILE, RunLock, RunLocked

SWEEP = [
    "-m",
    "experiment=smoke",
    "data=shapes10",
    "logger=csv",
    "trainer.max_epochs=2",
    "data.limit_train=256",
    "data.limit_test=128",
    "data.val_size=64",
    "metrics.subset_size=64",
    "seed=0,1",
]


def _statuses(sweep: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")}


_SKIP = ("time/", "cost/", "resume/", "run_dir", "reason")


def _figures(sweep: Path) -> dict[str, dict]:
    out = {}
    for p in sweep.glob("*/metrics.json"):
        m = json.loads(p.read_text())
        out[p.parent.name] = {k: v for k, v in m.items() if not k.startswith(_SKIP)}
    return out


# -- signals ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.sweeps
def test_sigterm_stops_a_multirun_which_resumes_to_the_uninterrupted_figures(tmp_path, run_cli, compose, start_cli):
    sweep = tmp_path / "stopped"
    proc = start_cli([*SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path)
    limit = time.monotonic() + 1800  # waits for the event, not a time (a loaded machine is slow)
    while not list(sweep.glob("*/checkpoints/last.ckpt")):
        assert proc.poll() is None and time.monotonic() < limit, "the sweep saved no checkpoint"
        time.sleep(0.1)  # the first run's first epoch is saved: stop it mid-run
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, out  # not 0: the sweep did not finish
    assert "stopped by SIGTERM" in out and "1 not started" in out and "Run the same command again" in out
    assert list(_statuses(sweep).values()) == ["interrupted"]
    assert (sweep / "summary.md").is_file()  # the summary of what finished (nothing yet) is written

    again = run_cli([*SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(_statuses(sweep).values()) == {"ok"}
    figures = _figures(sweep)
    resumed = {k: v for k, v in figures.items() if v.get("seed") == 0}
    assert json.loads((sweep / next(iter(resumed)) / "metrics.json").read_text())["resume/count"] == 1
    # The run that never stopped (same config; deterministic on the CPU): the same figures.
    whole = run(compose([a for a in SWEEP[1:] if not a.startswith("seed=")] + ["seed=0"], tmp_path / "whole"))
    label = ("experiment",)  # the preset's name is read from the CLI's Hydra choices, absent in-process
    assert {k: v for k, v in next(iter(resumed.values())).items() if k not in label} == {
        k: v for k, v in whole.items() if not k.startswith(_SKIP) and k not in label
    }
    assert not list(sweep.glob("*/checkpoints"))


# -- one writer per run ---------------------------------------------------------------------------------
def test_run_lock_is_exclusive_and_a_dead_holders_lock_is_taken_over(tmp_path):
    first = RunLock(tmp_path)
    first.acquire()
    with pytest.raises(RunLocked, match=f"pid {os.getpid()} on {socket.gethostname()}"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    with RunLock(tmp_path) as taken:  # its process is gone: the lock is stale
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid() and taken.held

    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "node-17", "pid": 1}))
    with pytest.raises(RunLocked, match="node-17"):
        RunLock(tmp_path).acquire()  # another host, touched recently: alive as far as we can tell
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_FILE, (old, old))
    with RunLock(tmp_path, stale_after_s=600):
        pass  # untouched for an hour: its job died


def test_a_run_held_by_another_process_is_left_alone(tmp_path, compose):
    cfg = compose(["experiment=smoke", "data=shapes10", "logger=csv"], tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    atomic_write_text(out / "metrics.json", '{"status": "running", "note": "the other sweep"}\n')
    with RunLock(out):  # the other sweep's process
        with pytest.raises(RunLocked):
            run(cfg)
    assert json.loads((out / "metrics.json").read_text())["note"] == "the other sweep"  # untouched


@pytest.mark.slow
@pytest.mark.sweeps
def test_two_sweeps_into_one_folder_never_train_a_run_twice(tmp_path, start_cli):
    sweep = tmp_path / "shared"
    args = [*SWEEP, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    a, b = start_cli(args, tmp_path), start_cli(args, tmp_path)
    out_a, _ = a.communicate(timeout=300)
    out_b, _ = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    assert set(_statuses(sweep).values()) == {"ok"} and len(_statuses(sweep)) == 2
    both = out_a + out_b
    trained = both.count("stridelab: results in")
    passed_over = both.count("stridelab: skipped")
    assert trained == 2 and passed_over == 2, both  # each run trained once; the other sweep skipped it
    for run_dir in sweep.glob("seed=*"):
        assert len(list(run_dir.rglob("metrics.csv"))) == 1  # one training's logs, not two


# -- a full disk ----------------------------------------------------------------------------------------
def test_a_failed_write_names_the_path_and_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"the previous version")
    with pytest.raises(WriteError) as err, atomic_path(target) as tmp:
        tmp.write_bytes(b"half of it")
        raise OSError(28, "No space left on device")
    assert str(target) in str(err.value) and "No space left on device" in str(err.value)
    assert "Nothing was left half-written" in str(err.value)
    assert target.read_bytes() == b"the previous version" and list(tmp_path.iterdir()) == [target]


@pytest.mark.slow
def test_a_full_disk_fails_the_run_with_one_paragraph_and_no_truncated_file(tmp_path):
    """RLIMIT_FSIZE makes every write past 64 kB fail (EFBIG), as a full disk would: the epoch's
    checkpoint (about 300 kB) cannot be written."""
    script = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000)); "
        "from stridelab.train import main; sys.argv = ['stridelab.train'] + sys.argv[1:]; main()"
    )
    out = tmp_path / "run"
    args = ["experiment=smoke", "data=shapes10", "logger=csv", "model.width=32", f"hydra.run.dir={out}"]
    env = {**os.environ, "STRIDELAB_ROOT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "stridelab: error: could not write" in proc.stderr and str(checkpoint_path(out)) in proc.stderr
    assert "Traceback" not in proc.stderr
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "failed" and "could not write" in record["reason"]
    assert not list(out.rglob("*.tmp")) and not checkpoint_path(out).exists()


# -- issue 19: faults that used to block a run, lose work or leave unreadable results --------------------
def _checkpoint(path: Path, step: int) -> None:
    """A checkpoint as Lightning writes one (the keys a resume reads), saved at the end of an epoch."""
    import torch

    torch.save({"epoch": step // 8 - 1, "global_step": step, "state_dict": {"w": torch.ones(64, 64)}}, path)


def test_a_damaged_checkpoint_is_moved_aside_and_the_previous_one_resumed(tmp_path, capsys):
    """A last.ckpt cut to half (a copy interrupted) ended every rerun in a 44-line traceback, for good."""
    from stridelab.training.resume import find_resume_point

    last = checkpoint_path(tmp_path)
    last.parent.mkdir()
    _checkpoint(last, 16)
    _checkpoint(last.with_name("previous.ckpt"), 8)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    point, _ = find_resume_point(tmp_path, "abc")
    assert point.path.name == "previous.ckpt" and (point.epochs, point.step) == (1, 8)
    assert not last.exists() and last.with_name("last.ckpt.damaged").is_file()
    err = capsys.readouterr().err
    assert f"stridelab: warning: the checkpoint {last} is damaged: it is not a whole zip archive" in err
    assert "The run resumes from the previous checkpoint instead: epoch 1, step 8 of" in err


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_checkpoint_without_a_previous_one_starts_the_run_afresh(damage, tmp_path, capsys):
    from stridelab.training.resume import find_resume_point

    last = checkpoint_path(tmp_path)
    last.parent.mkdir()
    _checkpoint(last, 16)
    data = bytearray(last.read_bytes())
    if damage == "flip":  # one byte of the weights: torch.load alone does not notice, the CRC-32 does
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    last.write_bytes(bytes(data))
    assert find_resume_point(tmp_path, "abc") == (None, 0)
    err = capsys.readouterr().err
    assert ("fails its CRC-32 check" in err) == (damage == "flip")
    assert "No earlier checkpoint is kept, so the run starts afresh from epoch 0." in err
    assert find_resume_point(tmp_path, "abc") == (None, 0) and not capsys.readouterr().err  # said once


def test_an_unreadable_lock_counts_as_held_until_the_heartbeat_timeout_then_is_taken_over(tmp_path):
    """A .lock holding garbage was read as "another process (pid None on None) is training"."""
    lock = tmp_path / LOCK_FILE
    lock.write_text("garbage{")
    with pytest.raises(RunLocked) as held:
        RunLock(tmp_path).acquire()
    message = str(held.value)
    assert "has a lock file that cannot be read" in message and "pid None" not in message
    assert f"delete {lock}" in message and "10 minutes" in message
    old = time.time() - 3600
    os.utime(lock, (old, old))
    taken = RunLock(tmp_path)
    taken.acquire()
    assert taken.held and "could not be read and was untouched for over 10 minutes" in taken.taken_over
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    taken.release()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_results_get_the_mode_the_umask_gives_a_new_file(umask, tmp_path):
    """Atomic writes left every result at 0600 (the temporary file's mode): unreadable to collaborators."""
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}")
        with atomic_path(tmp_path / "model.pt") as tmp:
            tmp.write_bytes(b"weights")
    finally:
        os.umask(old)
    for name in ("metrics.json", "model.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_torch_save_stopped_by_the_disk_is_a_write_error(tmp_path):
    """torch.save raises RuntimeError ("unexpected pos"), not OSError, when the disk or the file-size
    limit stops it: model.pt ended in a traceback, bypassing the WriteError paragraph."""
    script = (
        "import resource, signal, torch; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))\n"
        "from stridelab.files import atomic_path\n"
        "try:\n"
        f"    with atomic_path({str(tmp_path / 'model.pt')!r}) as tmp: torch.save(torch.ones(100_000), tmp)\n"
        "except Exception as err: print(type(err).__name__, err)\n"
        "try:\n"
        f"    with atomic_path({str(tmp_path / 'other.pt')!r}) as tmp: raise RuntimeError('not a write')\n"
        "except Exception as err: print(type(err).__name__, err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"WriteError could not write {tmp_path / 'model.pt'}: File too large"), proc.stdout
    assert lines[1] == "RuntimeError not a write"  # a writer's own error stays what it is
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary left


def test_a_disk_that_refuses_tensorboard_leaves_a_resumable_run_with_its_figures(tmp_path, compose, monkeypatch):
    """TensorBoard's event writer (not ours; it appends in place) hit a full disk after the run was
    recorded ok and its checkpoints removed: a traceback, and a finished run marked failed with nothing
    to resume from. Now the event files are written (and flushed) before the run is ok."""
    import errno

    from torch.utils.tensorboard import SummaryWriter

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    small = [
        "data.limit_train=128",
        "data.val_size=64",
        "metrics.skip=[probe,cost,position,coverage,audit,worstshift,subpixel,corruption,aliasing]",
    ]
    cfg = compose(["experiment=smoke", "logger=tensorboard", *small], tmp_path)
    out = tmp_path / "run"
    monkeypatch.setattr(SummaryWriter, "add_image", full)  # the suite's figures, written after the test
    with pytest.raises(WriteError, match="could not write a log file of the run .*: No space left on device"):
        run(cfg)
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "failed" and "Its end may be cut short" in record["reason"]
    assert "test/acc" in record and "shift/circular_consistency" in record  # what was computed is kept
    assert checkpoint_path(out).is_file()  # resumable
    monkeypatch.undo()
    again = run(cfg)  # space freed: the same command finishes it from its last checkpoint
    assert again["status"] == "ok" and again["resume/count"] == 1 and again["test/acc"] == record["test/acc"]

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


def _train(args, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "STRIDELAB_ROOT": str(cwd), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "stridelab.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# -- signals ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_stops_a_multirun_which_resumes_to_the_uninterrupted_figures(tmp_path, run_cli, compose):
    sweep = tmp_path / "stopped"
    proc = _train([*SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path)
    deadline = time.monotonic() + 120
    while not list(sweep.glob("*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.1)  # the first run's first epoch is saved: stop it mid-run
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
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
def test_two_sweeps_into_one_folder_never_train_a_run_twice(tmp_path):
    sweep = tmp_path / "shared"
    args = [*SWEEP, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    a, b = _train(args, tmp_path), _train(args, tmp_path)
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

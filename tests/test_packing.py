"""launcher=packed (issue 22): K runs at a time per GPU (on the CPU here), one process per run.

The plan, MPS and the classification of a run's end are checked here in-process; whole packed sweeps
(figures equal to the runs alone, a SIGTERM and its resume, a failing neighbour) run as ``launchers``
tests in .ci/run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stridelab.config import job_dirname
from stridelab.errors import ConfigError
from stridelab.studies import packing
from stridelab.studies.packing import Job, Slot, console_lines, plan
from stridelab.training import sharing
from stridelab.training.sharing import Mps, mps_mode


# -- the plan ---------------------------------------------------------------------------------------------
def test_two_runs_per_gpu_on_two_gpus_split_the_cores_and_alternate_gpus():
    p = plan(2, n_gpus=2, cores=list(range(16)), visible="3,5", memory_fraction="auto")
    assert [s.gpu for s in p.slots] == [0, 1, 0, 1]
    assert [s.cores for s in p.slots] == [tuple(range(i * 4, i * 4 + 4)) for i in range(4)]
    assert p.gpu_ids == {0: "3", 1: "5"}  # the runs get the GPUs this process was given
    assert p.memory_fraction == pytest.approx(0.95 / 2)
    assert "2 at a time on each of 2 GPU(s): 4 at once, 4 CPU core(s) each" in p.describe(8)


def test_without_a_gpu_the_runs_share_the_cpu_and_more_runs_than_cores_share_cores():
    p = plan(4, cores=[0, 1])
    assert [s.gpu for s in p.slots] == [None] * 4 and p.gpu_ids == {} and p.memory_fraction is None
    assert [s.cores for s in p.slots] == [(0,), (1,), (0,), (1,)]
    assert plan(1, cores=[0, 1], cpus_per_run=2).slots[0].cores == (0, 1)


def test_one_run_per_gpu_is_not_bounded_and_a_set_fraction_is_kept():
    assert plan(1, n_gpus=1, cores=[0]).memory_fraction is None
    assert plan(3, n_gpus=1, cores=[0], memory_fraction=0.2).memory_fraction == 0.2
    assert plan(3, n_gpus=1, cores=[0], memory_fraction=None).memory_fraction is None
    assert [s.gpu for s in plan(2, devices=[1], n_gpus=2, cores=[0, 1]).slots] == [1, 1]


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"runs_per_device": 0}, "runs_per_device must be a whole number >= 1"),
        ({"runs_per_device": "four"}, "runs_per_device must be a whole number >= 1"),
        ({"runs_per_device": 2, "devices": [0]}, "torch sees none on this machine"),
        ({"runs_per_device": 2, "devices": [2], "n_gpus": 2}, "distinct GPU indices below 2"),
        ({"runs_per_device": 2, "devices": [0, 0], "n_gpus": 2}, "distinct GPU indices below 2"),
        ({"runs_per_device": 2, "n_gpus": 1, "memory_fraction": 1.5}, r"a number in \(0, 1\]"),
        ({"runs_per_device": 2, "cpus_per_run": 0}, "cpus_per_run must be a whole number >= 1"),
    ],
)
def test_impossible_settings_are_refused_in_one_paragraph(kwargs, says):
    with pytest.raises(ConfigError, match=says):
        plan(cores=[0, 1], **kwargs)


def test_mps_modes_read_yaml_booleans_and_refuse_anything_else():
    assert [mps_mode(v) for v in ("auto", True, False, "on", "off")] == ["auto", "on", "off", "on", "off"]
    with pytest.raises(ConfigError, match="hydra.launcher.mps must be auto"):
        mps_mode("sometimes")


def test_mps_is_skipped_with_a_note_where_it_cannot_be_used(monkeypatch):
    monkeypatch.setattr(sharing.shutil, "which", lambda name: None)
    with Mps("auto", gpus=True, runs_per_device=4) as mps:
        assert mps.env == {} and "not on PATH" in mps.note and "time slicing" in mps.note
    with Mps("auto", gpus=False, runs_per_device=4) as mps:
        assert mps.env == {} and mps.note == "MPS: not used (no GPU)"
    with Mps("auto", gpus=True, runs_per_device=1) as mps:
        assert mps.note == "MPS: not used (one run per GPU)"
    with pytest.raises(ConfigError, match="hydra.launcher.mps=on, but CUDA MPS cannot be used here"):
        with Mps("on", gpus=True, runs_per_device=4):
            pass


def test_mps_starts_a_private_daemon_probes_it_and_stops_it(monkeypatch, tmp_path):
    """A stand-in for nvidia-cuda-mps-control records how it is called: started with -d in a private
    pipe folder, told "quit" at the end; a failing probe stops it again and leaves a note."""
    calls = tmp_path / "calls"
    control = tmp_path / "nvidia-cuda-mps-control"
    control.write_text(f'#!/bin/sh\necho "$@ $(cat -) $CUDA_MPS_PIPE_DIRECTORY" >> {calls}\n')
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    monkeypatch.setattr(Mps, "_probe", lambda self, env: None)
    monkeypatch.setattr(sharing, "MPS_DEFAULT_PIPE", str(tmp_path / "no-daemon"))
    with Mps("auto", gpus=True, runs_per_device=2) as mps:
        pipe = mps.env["CUDA_MPS_PIPE_DIRECTORY"]
        assert "started" in mps.note and Path(pipe).is_dir()
    assert not Path(pipe).exists()  # its private folder goes with it
    started, stopped = calls.read_text().splitlines()
    assert started.startswith("-d") and pipe in started and stopped.strip() == f"quit {pipe}"

    calls.unlink()
    monkeypatch.setattr(Mps, "_probe", lambda self, env: "a CUDA context through MPS failed (no GPU)")
    with Mps("auto", gpus=True, runs_per_device=2) as mps:
        assert mps.env == {} and "failed (no GPU)" in mps.note and "time slicing" in mps.note
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["-d", "quit"]


# -- how a run's process ended -------------------------------------------------------------------------------
def _end_of(tmp_path: Path, code: str, status: str | None, stopping: bool = False, console: str = ""):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    if status is not None:
        (run_dir / "metrics.json").write_text(json.dumps({"status": status, "test/acc": 0.5}))
    (run_dir / "console.log").write_text(console)
    read_end, write_end = os.pipe()
    env = {**os.environ, "FD": str(write_end)}
    proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(write_end,), env=env)
    os.close(write_end)
    proc.wait()
    running = packing.Running(Job(0, [], None, run_dir), Slot(0, None, (0,)), proc, read_end)
    return packing.classify_end(running, stopping)


REPORT = "import os, json; os.write(int(os.environ['FD']), json.dumps({'return_value': 0.5}).encode())"


def test_a_run_is_classified_by_what_it_recorded(tmp_path):
    done = _end_of(tmp_path, REPORT, "ok", console="noise\nstridelab: test/acc=0.5\n")
    assert (done.kind, done.return_value, done.lines) == ("finished", 0.5, ["stridelab: test/acc=0.5"])
    assert _end_of(tmp_path, "import sys; sys.exit(0)", "failed").kind == "failed"
    assert _end_of(tmp_path, "import sys; sys.exit(0)", "diverged").kind == "diverged"
    assert _end_of(tmp_path, "import sys; sys.exit(143)", "interrupted").kind == "interrupted"


def test_a_process_killed_before_its_run_recorded_anything_fails_with_the_reason(tmp_path):
    killed = _end_of(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "running")
    assert killed.kind == "failed"
    assert "stopped by SIGKILL before the run recorded an outcome" in killed.detail
    assert "out of memory?" in killed.detail
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert recorded["status"] == "failed" and recorded["reason"] == killed.detail and recorded["test/acc"] == 0.5
    assert _end_of(tmp_path, "import sys; sys.exit(1)", None).kind == "failed"
    # a SIGTERM to the run's process alone: interrupted, resumable
    alone = _end_of(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)", "running")
    assert alone.kind == "interrupted" and "resumes from its last checkpoint" in alone.detail


def test_a_stopped_sweep_tells_unstarted_runs_from_interrupted_ones(tmp_path):
    assert _end_of(tmp_path, "import sys; sys.exit(0)", "running", stopping=True).kind == "interrupted"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "interrupted"
    (tmp_path / "run" / "metrics.json").unlink()
    assert _end_of(tmp_path, "import sys; sys.exit(143)", None, stopping=True).kind == "not started"


def test_a_job_that_found_its_run_finished_or_held_elsewhere_is_not_a_failure(tmp_path):
    found = _end_of(tmp_path, "import sys; sys.exit(0)", None, console="stridelab: skipped, this config already")
    assert found.kind == "finished"
    held = _end_of(tmp_path, "import sys; sys.exit(0)", None, console="stridelab: skipped, another process holds")
    assert held.kind == "skipped"


def test_console_lines_are_the_runs_own_result_lines(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("Epoch 0: 100%\nstridelab: a\n  stridelab: b\nother\n")
    assert console_lines(log) == ["stridelab: a", "stridelab: b"]
    assert console_lines(tmp_path / "missing.log") == []


def test_the_launcher_is_not_part_of_a_job_folders_name(monkeypatch):
    monkeypatch.setenv("STRIDELAB_SWEPT", "seed")
    assert job_dirname("launcher=packed,seed=0") == "seed=0"
    assert job_dirname("experiment=smoke,launcher=packed,seed=0") == job_dirname("experiment=smoke,seed=0")


# -- whole packed sweeps (.ci/run) -------------------------------------------------------------------------
GRID = [
    "-m",
    "experiment=smoke",
    "logger=csv",
    "trainer.max_epochs=2",
    "data.limit_train=256",
    "data.limit_test=128",
    "data.val_size=64",
    "metrics.subset_size=64",
    "downsample=conv,maxpool",
    "seed=0,1",
    "hydra.callbacks.aggregate.enabled=false",
]
PACKED = ["launcher=packed", "hydra.launcher.runs_per_device=2", "hydra.launcher.cpus_per_run=1"]
TIMINGS = ("time/", "cost/", "resume/", "run_dir", "reason")


def _figures(sweep: Path) -> dict[str, dict]:
    return {
        p.parent.name: {k: v for k, v in json.loads(p.read_text()).items() if not k.startswith(TIMINGS)}
        for p in sweep.glob("*/metrics.json")
    }


@pytest.mark.slow
@pytest.mark.launchers
def test_a_packed_sweep_gives_each_run_its_figures_alone_and_a_sigterm_leaves_every_run_resumable(tmp_path, start_cli):
    alone = start_cli([*GRID, f"hydra.sweep.dir={tmp_path / 'alone'}"], tmp_path, one_core=True)
    out, _ = alone.communicate(timeout=900)
    assert alone.returncode == 0, out[-3000:]

    packed = tmp_path / "packed"
    proc = start_cli([*GRID, *PACKED, f"hydra.sweep.dir={packed}"], tmp_path)
    limit = time.monotonic() + 1800  # waits for the event, not a time (a loaded machine is slow)
    while len(list(packed.glob("*/checkpoints/last.ckpt"))) < 2:
        assert proc.poll() is None and time.monotonic() < limit, "the two first runs saved no checkpoint"
        time.sleep(0.1)  # both runs of the first pair are past their first epoch: stop them mid-run
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "stopped by SIGTERM" in out and "2 interrupted" in out and "2 not started" in out, out[-3000:]
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in packed.glob("*/metrics.json")}
    assert sorted(statuses.values()) == ["interrupted", "interrupted"], statuses
    assert len(list(packed.glob("*/checkpoints/last.ckpt"))) == 2

    again = start_cli([*GRID, *PACKED, f"hydra.sweep.dir={packed}"], tmp_path)
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out[-3000:]
    assert "4 run(s), 2 at a time on the CPU" in out
    resumed = [json.loads((packed / name / "metrics.json").read_text()) for name in statuses]
    assert all(m["status"] == "ok" and m["resume/count"] == 1 for m in resumed)
    # Each run's figures, packed and stopped and resumed, are those it has alone.
    assert _figures(packed) == _figures(tmp_path / "alone")
    assert all((packed / name / "console.log").is_file() for name in _figures(packed))
    # A third time: every config finished, so no run's process is started at all.
    third = start_cli([*GRID, *PACKED, f"hydra.sweep.dir={packed}"], tmp_path)
    out, _ = third.communicate(timeout=600)
    assert third.returncode == 0 and out.count("skipped, this config already finished") == 4, out[-3000:]
    assert "0 run(s), 2 at a time on the CPU (no GPU): 2 at once, 1 CPU core(s) each (4 more already finished)" in out


@pytest.mark.slow
@pytest.mark.launchers
def test_a_failing_run_does_not_stop_its_packed_neighbours(tmp_path, start_cli):
    """data=cifar10 is not on disk here: that run fails at once, the shapes10 run beside it finishes."""
    sweep = tmp_path / "sweep"
    proc = start_cli(
        ["-m", "experiment=smoke", "logger=csv", "data=shapes10,cifar10", "metrics=quick", *PACKED,
         f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-3000:]  # a multirun with a failed run
    assert "1 run(s) failed" in out and "#1 failed" in out
    statuses = {m["data"]: m["status"] for m in (json.loads(p.read_text()) for p in sweep.glob("*/metrics.json"))}
    assert statuses == {"shapes10": "ok", "cifar10": "failed"}


def test_only_the_invocation_registers_the_sweep_a_launcher_reports_to():
    from stridelab.training.lifecycle import SweepOutcome

    before = SweepOutcome.current
    try:
        mine = SweepOutcome.begin()
        SweepOutcome()  # e.g. the module-level SWEEP of a second copy of stridelab.train, imported later
        assert SweepOutcome.current is mine
    finally:
        SweepOutcome.current = before

"""``launcher=slurm`` against a real SLURM cluster: the single-node one ``scripts/slurm-cluster`` starts.

Not part of ``make test`` (marker ``slurm``; about two minutes together). ``.ci/run`` starts the
cluster and runs them after ``make test``. Locally, as root (or with passwordless sudo):

    scripts/slurm-cluster && .venv/bin/python -m pytest -q -m slurm tests/test_slurm.py

Without a running cluster every test here is skipped, and the skip says why.
STRIDELAB_SLURM_PARTITION names another partition than the script's ``debug``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-cluster"
PARTITION = os.environ.get("STRIDELAB_SLURM_PARTITION", "debug")
UP_STATES = {"idle", "mix", "mixed", "alloc", "allocated", "comp", "completing"}

TINY = ["experiment=smoke", "data.limit_train=128", "data.val_size=64", "data.limit_test=64", "logger=csv"]
NO_SUITE = "metrics.skip=[shift,crop,pairshift,worstshift,subpixel,corruption,border,coverage,aliasing,cost]"
STATUS = "squeue, sinfo -R and scripts/slurm-cluster status tell more"
SACCT_NOISE = ("Bypassing sacct error", "accounting storage is disabled")


def _launcher() -> list[str]:
    """launcher=slurm, sized for the test cluster (2 CPUs, no GPU). The job's shell activates this
    Python's virtual environment first, as the README tells users to (SLURM also passes on the
    submitting shell's environment, PYTHONPATH included)."""
    args = [
        "launcher=slurm",
        f"hydra.launcher.partition={PARTITION}",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
    ]
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix != sys.base_prefix and activate.is_file():
        args.append(f"hydra.launcher.setup=['source {activate}']")
    return args


def _cluster_problem() -> str | None:
    """Why no SLURM job can run here, or None when the partition has a node that is up."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed (no sinfo/sbatch on PATH)"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%t"], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s (is slurmctld running?)"
    if proc.returncode != 0:
        return f"sinfo failed: {(proc.stderr or proc.stdout).strip()}"
    states = proc.stdout.split()
    if not states:
        return f"there is no partition '{PARTITION}'"
    if not any(s.rstrip("*~#!%$@^-") in UP_STATES for s in states):
        return f"no node of partition '{PARTITION}' is up (sinfo: {', '.join(states)})"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    problem = _cluster_problem()
    if problem is not None:
        pytest.skip(
            f"no SLURM cluster to test launcher=slurm against: {problem}. Start the single-node test cluster "
            f"with `{SCRIPT.relative_to(ROOT)}` (as root; installs SLURM with apt when missing), then run again."
        )
    # A cluster that looks up may still run nothing (slurmd died: the node shows idle for a while).
    name = "stridelab-test-preflight"
    probe = ["srun", "-p", PARTITION, "-N1", "-n1", "-t", "1", "-J", name, "true"]
    try:
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", "-n", name], capture_output=True, check=False)
        pytest.fail(f"the SLURM cluster is up but did not run `{' '.join(probe)}` within 90 s ({STATUS})")
    if proc.returncode != 0:
        pytest.fail(f"the SLURM cluster is up but `{' '.join(probe)}` failed: {proc.stderr.strip()} ({STATUS})")


def _metrics(root: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in root.rglob("metrics.json")}


def _jobs(sweep: Path) -> list[str]:
    """The SLURM ids of a sweep's jobs, from submitit's folders: ``<job>`` for a sweep of one run,
    ``<array>_<task>`` for the tasks of a job array (whose own folder ``<array>`` is left out)."""
    folder = sweep / ".submitit"
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    ids = {n for n in names if re.fullmatch(r"\d+(_\d+)?", n)}
    arrays = {n.split("_")[0] for n in ids if "_" in n}
    return sorted(ids - arrays)


def _job_state(job: str) -> str:
    proc = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def _start_now(job: str) -> bool:
    """Let a pending job start at once; False while it is not pending (yet)."""
    if _job_state(job) != "PENDING":
        return False
    update = ["scontrol", "update", f"JobId={job}", "StartTime=now"]
    return subprocess.run(update, capture_output=True, check=False).returncode == 0


def _diagnose(sweep: Path, log: Path | None = None) -> str:
    """What to read when a test fails: the launcher's output, the jobs' logs and states."""
    parts = []
    if log is not None and log.is_file():
        # Without SLURM accounting (the test cluster has none) submitit warns at every status poll.
        lines = [line for line in log.read_text().splitlines() if not any(n in line for n in SACCT_NOISE)]
        parts.append(f"--- launcher output ({log}), end:\n" + "\n".join(lines)[-3000:])
    for job in _jobs(sweep):
        parts.append(f"--- job {job}: squeue state '{_job_state(job) or 'gone'}'")
        for f in sorted((sweep / ".submitit" / job).glob("*_log.*")):
            parts.append(f"--- {f.name}, end:\n{f.read_text(errors='replace')[-2000:]}")
    return "\n".join(parts)


def _cancel(sweep: Path) -> None:
    jobs = _jobs(sweep)
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, check=False)


def _start(module: str, args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "STRIDELAB_ROOT": str(cwd), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _wait(proc: subprocess.Popen, timeout: float, sweep: Path, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        diagnosis = _diagnose(sweep, log)
        _cancel(sweep)
        pytest.fail(f"the launcher did not finish within {timeout:.0f} s\n{diagnosis}")


def test_a_two_run_study_runs_as_slurm_jobs_and_aggregates(slurm_cluster, tmp_path):
    study = tmp_path / "tiny.yaml"
    study.write_text(
        "question: Does a study run through launcher=slurm?\n"
        "grids:\n"
        "  tiny:\n"
        f"    overrides: [{', '.join(TINY)}, '{NO_SUITE}']\n"
        "    params:\n"
        "      downsample: conv,maxpool\n"
    )
    out, log = tmp_path / "study", tmp_path / "launcher.log"
    t0 = time.monotonic()
    proc = _start("stridelab.study", [str(study), "--out", str(out), *_launcher()], tmp_path, log)
    rc = _wait(proc, 600, out / "tiny", log)
    elapsed = time.monotonic() - t0
    assert rc == 0, _diagnose(out / "tiny", log)

    runs = _metrics(out / "tiny")
    assert sorted(m["downsample"] for m in runs.values()) == ["conv", "maxpool"], _diagnose(out / "tiny", log)
    assert all(m["status"] == "ok" for m in runs.values()), _diagnose(out / "tiny", log)
    # Each run was a task of one SLURM job array, run by submitit on the node.
    jobs = _jobs(out / "tiny")
    assert len(jobs) == 2 and len({j.split("_")[0] for j in jobs}) == 1, jobs
    for job in jobs:
        started = (out / "tiny" / ".submitit" / job / f"{job}_0_log.out").read_text()
        assert f"Starting with JobEnvironment(job_id={job}," in started
    # The grid's and the study's aggregates.
    for folder in (out / "tiny", out):
        assert (folder / "results.csv").is_file() and (folder / "summary.md").is_file(), sorted(folder.iterdir())
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + 2
    print(f"2-run study through SLURM: {elapsed:.0f} s")


# Two ways SLURM stops a job mid-run and starts it again:
# - "requeue": `scontrol requeue`, what preemption in REQUEUE mode does. SLURM sends the job SIGTERM
#   (SIGKILL after KillWait): the run saves a checkpoint and stops, and SLURM requeues the job.
# - "time-limit": the warning that `#SBATCH --signal=USR2@<signal_delay_s>` asks for before the time
#   limit, sent now as SLURM would send it (a real time limit takes minutes to reach). submitit's handler
#   requeues the job itself (`scontrol requeue`, at most max_num_timeout times) and exits.
STOPS = {
    "requeue": ["scontrol", "requeue"],
    "time-limit": ["scancel", "--signal=USR2"],
}


@pytest.mark.parametrize("stop", sorted(STOPS))
def test_a_job_stopped_mid_run_is_requeued_and_resumes_from_its_checkpoint(slurm_cluster, tmp_path, stop):
    """The run continues from its last checkpoint, not from epoch 0, and the launcher waits for the
    job's second start."""
    epochs = 5
    sweep, log = tmp_path / "sweep", tmp_path / "launcher.log"
    args = [
        "-m",
        *_launcher(),
        *TINY,
        "data.limit_train=256",
        NO_SUITE,
        f"trainer.max_epochs={epochs}",
        "downsample=conv",
        f"hydra.sweep.dir={sweep}",
    ]
    t0 = time.monotonic()
    proc = _start("stridelab.train", args, tmp_path, log)
    try:
        deadline = time.monotonic() + 300
        ckpt = None
        while ckpt is None:  # the first checkpoint: the end of epoch 1
            ckpt = next(sweep.glob("*/checkpoints/last.ckpt"), None)
            runs = _metrics(sweep)
            if ckpt is None and (proc.poll() is not None or any(m["status"] != "running" for m in runs.values())):
                pytest.fail(
                    "the run ended without writing <run>/checkpoints/last.ckpt: mid-run checkpoints (issue 13) "
                    f"are missing or broken\n{_diagnose(sweep, log)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint after 300 s\n{_diagnose(sweep, log)}")
            time.sleep(0.2)
        (job,) = _jobs(sweep)
        run_dir = ckpt.parent.parent
        sent = subprocess.run([*STOPS[stop], job], capture_output=True, text=True, check=False)
        assert sent.returncode == 0, f"{' '.join(STOPS[stop])} {job}: {sent.stderr}"
        assert json.loads((run_dir / "metrics.json").read_text())["status"] != "ok", (
            f"the run finished before it could be stopped; make it longer\n{_diagnose(sweep, log)}"
        )
        # SLURM holds a requeued job back for two minutes (its BeginTime); the test lets it start now.
        deadline = time.monotonic() + 120
        while not _start_now(job):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"job {job} was not pending again after the {stop}\n{_diagnose(sweep, log)}")
            time.sleep(0.5)
        rc = _wait(proc, 600, sweep, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            _cancel(sweep)
    elapsed = time.monotonic() - t0
    assert rc == 0, _diagnose(sweep, log)

    # SLURM started the job twice (submitit's log is appended to), and the second start resumed.
    started = (sweep / ".submitit" / job / f"{job}_0_log.out").read_text()
    assert started.count(f"Starting with JobEnvironment(job_id={job},") == 2, _diagnose(sweep, log)
    if stop == "time-limit":  # the job asked SLURM for the warning, and submitit requeued it
        assert "#SBATCH --signal=USR2@120" in (sweep / ".submitit" / job / f"{job}_submission.sh").read_text()
        assert f"Requeued job {job}" in started, _diagnose(sweep, log)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok", _diagnose(sweep, log)
    assert metrics["resume/count"] == 1 and 1 <= metrics["resume/epoch"] < epochs, metrics
    assert metrics["train/epochs"] == epochs
    assert not ckpt.exists(), "a finished run's checkpoint is removed (checkpoint.keep=false)"
    assert (sweep / "results.csv").is_file() and (sweep / "summary.md").is_file()
    print(f"{stop}: a run stopped and resumed through SLURM in {elapsed:.0f} s, after epoch {metrics['resume/epoch']}")

"""Runs packed onto GPUs (``launcher=packed``, issue 22): a sweep's or study's runs go K at a time onto
each visible GPU, one process per run.

One ResNet-20 run on CIFAR-10 leaves most of a large GPU idle; K runs side by side fill it. Each run is
its own process (a crash or an out-of-memory error ends that run only), started by
:class:`hydra_plugins.stridelab_packed_launcher.PackedLauncher`, which hands the work to
:func:`launch`. A run's process gets

- its GPU alone (``CUDA_VISIBLE_DEVICES``: the run sees one GPU, ``cuda:0``),
- its share of the CPU cores, pinned (its CPU affinity: torch's threads, ``OMP_NUM_THREADS`` and a data
  loader's workers follow it, see :mod:`stridelab.training.sharing`),
- a bound on its GPU memory (``torch.cuda.set_per_process_memory_fraction``, 0.95 / K by default), so that
  one run that grows cannot starve its neighbours into out-of-memory errors,
- CUDA MPS where the machine has it (:class:`stridelab.training.sharing.Mps`): the runs' kernels then
  share the GPU's SMs at once instead of taking turns; where it is missing or does not work, runs
  share the GPU by time slicing and the launcher says so.

Everything a run guarantees alone holds packed (issue 13): it takes its folder's lock, writes its
``metrics.json`` atomically, checkpoints and records ``interrupted`` on a stop signal, and resumes.
A signal to the sweep (Ctrl-C, SIGTERM) reaches every running run once (the runs' processes live in
their own sessions, so a terminal's Ctrl-C is not delivered twice), no further run starts, and the
sweep waits for its runs to checkpoint before it exits with 128 + the signal. If the launcher itself
is killed, its runs get SIGTERM (Linux's parent-death signal) and checkpoint. A run that fails or
crashes is recorded and its neighbours go on.

What a run printed is in ``console.log`` in its folder; the sweep's console shows one line per start
and the run's own ``stridelab:`` result lines at its end.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from stridelab.config import config_hash
from stridelab.errors import ConfigError, RunInterrupted
from stridelab.files import atomic_write_text
from stridelab.studies.packed_run import RESULT_FD_ENV
from stridelab.training.lifecycle import SweepOutcome
from stridelab.training.results import METRICS_FILE, RunResults, finished_runs, read_metrics
from stridelab.training.sharing import MEMORY_FRACTION_ENV, Mps, available_cores, mps_mode

log = logging.getLogger(__name__)

CONSOLE_LOG = "console.log"
DEFAULT_MEMORY_SHARE = 0.95  # of a GPU's memory, split between its K runs (the rest: CUDA contexts, MPS)


@dataclass(frozen=True)
class Slot:
    """A place for one run at a time: a GPU (index among the visible ones; None: the CPU) and CPU cores."""

    index: int
    gpu: int | None
    cores: tuple[int, ...]

    def where(self) -> str:
        return f"GPU {self.gpu}" if self.gpu is not None else "CPU"


@dataclass
class Plan:
    """The slots of a packed launch and what every run gets."""

    runs_per_device: int
    slots: list[Slot]
    gpu_ids: dict[int, str]  # each used GPU (its index among the visible ones): its CUDA_VISIBLE_DEVICES entry
    memory_fraction: float | None

    def describe(self, n_jobs: int) -> str:
        where = f"each of {len(self.gpu_ids)} GPU(s)" if self.gpu_ids else "the CPU (no GPU)"
        cores = len(self.slots[0].cores)
        memory = f", GPU memory <= {100 * self.memory_fraction:.0f}% each" if self.memory_fraction else ""
        return (
            f"{n_jobs} run(s), {self.runs_per_device} at a time on {where}: {len(self.slots)} at once, "
            f"{cores} CPU core(s) each{memory}"
        )


def _whole(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"hydra.launcher.{name} must be a whole number >= {minimum}, got {value!r}. For example "
            f"hydra.launcher.{name}=2."
        )
    return value


def plan(
    runs_per_device,
    devices=None,
    memory_fraction="auto",
    cpus_per_run=None,
    n_gpus: int = 0,
    cores: list[int] | None = None,
    visible: str | None = None,
) -> Plan:
    """The slots for ``runs_per_device`` runs on each of ``devices`` (indices among the ``n_gpus``
    visible GPUs; None: all of them, or the CPU when there are none), with ``cores`` split between
    all slots (``cpus_per_run`` each, default an even share). ``visible``: this process's
    ``CUDA_VISIBLE_DEVICES``, whose entries name the GPUs the runs get."""
    k = _whole("runs_per_device", runs_per_device)
    cores = sorted(cores if cores is not None else _affinity())
    if devices is None:
        gpus = list(range(n_gpus))
    else:
        if not n_gpus:
            raise ConfigError(
                f"hydra.launcher.devices={list(devices)} names GPUs, but torch sees none on this machine. Leave "
                "hydra.launcher.devices=null to pack the runs onto the CPU, or run where there is a GPU."
            )
        gpus = [_whole("devices entry", d, 0) for d in devices]
        wrong = [d for d in gpus if d >= n_gpus]
        if wrong or len(set(gpus)) != len(gpus) or not gpus:
            raise ConfigError(
                f"hydra.launcher.devices={list(devices)} must list distinct GPU indices below {n_gpus} (this machine "
                f"shows {n_gpus} GPU(s) to torch: 0..{n_gpus - 1}). Leave it null to use all of them."
            )
    n_slots = k * max(1, len(gpus))
    per_run = max(1, len(cores) // n_slots) if cpus_per_run is None else _whole("cpus_per_run", cpus_per_run)
    slots = []
    for i in range(n_slots):
        first = (i * per_run) % len(cores)
        mine = tuple(cores[(first + j) % len(cores)] for j in range(min(per_run, len(cores))))
        slots.append(Slot(i, gpus[i % len(gpus)] if gpus else None, mine))
    entries = [e.strip() for e in visible.split(",")] if visible else [str(i) for i in range(n_gpus)]
    gpu_ids = {g: entries[g] if g < len(entries) else str(g) for g in gpus}
    return Plan(k, slots, gpu_ids, _memory_fraction(memory_fraction, k, bool(gpus)))


def _memory_fraction(value, k: int, gpu: bool) -> float | None:
    if value is None or not gpu:
        return None
    if value == "auto":
        return DEFAULT_MEMORY_SHARE / k if k > 1 else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(
            f"hydra.launcher.memory_fraction must be 'auto' (0.95 / runs_per_device), null (no bound) or a number "
            f"in (0, 1] (each run's share of its GPU's memory), got {value!r}."
        )
    return float(value)


def _affinity() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))[: available_cores()]
    return list(range(available_cores()))


@dataclass
class Job:
    """One run of the launch: its number, overrides, composed config and folder."""

    num: int
    overrides: list[str]
    config: object  # the job's DictConfig (hydra node included)
    run_dir: Path
    payload: bytes = b""


@dataclass
class Ended:
    """How a job ended, as the sweep counts it."""

    kind: str  # finished | failed | diverged | interrupted | not started | skipped
    return_value: object = None
    lines: list[str] = field(default_factory=list)  # the run's own "stridelab:" lines
    detail: str = ""
    seconds: float | None = None  # its process's wall-clock time


class Running:
    def __init__(self, job: Job, slot: Slot, proc: subprocess.Popen, result_fd: int) -> None:
        self.job, self.slot, self.proc, self.result_fd, self.t0 = job, slot, proc, result_fd, time.monotonic()


def launch(jobs: list[Job], plan_: Plan, mps_env: dict[str, str], stop_requested, on_end=None) -> list[Ended]:
    """Run ``jobs`` in ``plan_``'s slots, each in its own process, in order as slots free up; return how
    each ended (in the order of ``jobs``). ``stop_requested()``: true once the sweep was told to stop
    (no job starts after that). ``on_end(job, ended)``: called as each job ends.

    A second signal while the launch waits for its runs (raised here by the sweep's handler) is passed
    on to every running run, which then stops at once; the launch waits for them, then re-raises."""
    pending = deque(jobs)
    free = deque(plan_.slots)
    running: list[Running] = []
    ended: dict[int, Ended] = {}
    started = 0
    try:
        while pending or running:
            while pending and free and not stop_requested():
                job, slot = pending.popleft(), free.popleft()
                running.append(_start(job, slot, plan_, mps_env))
                started += 1
                log.info("#%d started on %s (slot %d), %d/%d: %s", job.num, slot.where(), slot.index, started,
                         len(jobs), " ".join(job.overrides) or "(no overrides)")  # fmt: skip
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                free.append(r.slot)
                ended[r.job.num] = result = classify_end(r, stop_requested())
                result.seconds = time.monotonic() - r.t0
                if on_end is not None:
                    on_end(r.job, result)
            if pending and stop_requested() and not running:
                break
            time.sleep(0.1)
    except BaseException as err:  # a second signal (or Ctrl-C outside stridelab's handlers): stop at once
        name = err.signame if isinstance(err, RunInterrupted) else "SIGINT"
        for r in running:
            _signal(r.proc, name)
        for r in running:
            try:
                r.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                r.proc.kill()
        raise
    for job in pending:
        ended[job.num] = Ended("not started")
        if on_end is not None:
            on_end(job, ended[job.num])
    return [ended[job.num] for job in jobs]


def _signal(proc: subprocess.Popen, name: str) -> None:
    try:
        proc.send_signal(getattr(signal, name))
    except (OSError, ValueError):
        pass


def _start(job: Job, slot: Slot, plan_: Plan, mps_env: dict[str, str]) -> Running:
    env = {**os.environ, **mps_env, "OMP_NUM_THREADS": str(len(slot.cores)), "MKL_NUM_THREADS": str(len(slot.cores))}
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = plan_.gpu_ids[slot.gpu]
    if plan_.memory_fraction is not None:
        env[MEMORY_FRACTION_ENV] = f"{plan_.memory_fraction:.4f}"
    job.run_dir.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    env[RESULT_FD_ENV] = str(write_end)
    with open(job.run_dir / CONSOLE_LOG, "ab") as console:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stridelab.studies.packed_run"],
            stdin=subprocess.PIPE,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=(write_end,),
            start_new_session=True,  # a terminal's Ctrl-C reaches the sweep, which passes it on once
            preexec_fn=_child_setup(slot.cores),
        )
    os.close(write_end)
    fcntl.fcntl(read_end, fcntl.F_SETFL, fcntl.fcntl(read_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    threading.Thread(target=_feed, args=(proc.stdin, job.payload), daemon=True).start()
    return Running(job, slot, proc, read_end)


def _child_setup(cores: tuple[int, ...]):
    def setup() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
        try:  # Linux: SIGTERM when the launcher dies, so that an orphaned run checkpoints and stops
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    return setup


def _feed(stdin, payload: bytes) -> None:
    try:
        stdin.write(payload)
        stdin.close()
    except OSError:  # the run's process ended before it read its job (it is reported as such)
        pass


def _read_result(fd: int) -> dict:
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    try:
        return json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}


def classify_end(r: Running, stopping: bool) -> Ended:
    """Classify a finished process by what its run recorded (``metrics.json`` is the run's own word). A
    run whose process died before it recorded an outcome (killed by the kernel for memory, or a signal
    sent to it alone) still says ``running``: the launcher records it as failed or interrupted."""
    result = _read_result(r.result_fd)
    lines = console_lines(r.job.run_dir / CONSOLE_LOG)
    path = r.job.run_dir / METRICS_FILE
    try:
        recorded = read_metrics(path)
    except (OSError, ValueError):
        recorded = {}
    status, code, value = recorded.get("status"), r.proc.returncode, result.get("return_value")
    if status == "ok":
        return Ended("finished", value, lines)
    if status in ("failed", "diverged", "interrupted"):
        return Ended(status, None, lines)
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    name = signal.Signals(sig).name if sig in set(signal.Signals) else None
    if status is None:
        if stopping or result.get("interrupted"):
            return Ended("not started", None, lines)
        if code == 0:  # the job found its config finished elsewhere, or another process holds it
            return Ended("skipped" if any("another process" in line for line in lines) else "finished", value, lines)
    how = f"was stopped by {name}" if name else f"exited with status {code}"
    console = r.job.run_dir / CONSOLE_LOG
    if stopping or name in ("SIGTERM", "SIGINT", "SIGUSR1"):
        kind, then = "interrupted", "it resumes from its last checkpoint when the same command runs again"
    else:
        likely = " (out of memory?)" if name == "SIGKILL" else ""
        kind, then = "failed", f"see {console}{likely}; the same command run again retries it from its last checkpoint"
    detail = f"its process {how} before the run recorded an outcome; {then}"
    if status == "running":  # metrics.json says what happened, as the run would have
        RunResults(path).update(recorded).record(kind, detail)
    return Ended(kind, None, lines, detail)


def console_lines(path: Path, limit: int = 6) -> list[str]:
    """The last ``limit`` lines a run wrote that start with ``stridelab:`` (its result or its error)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip().startswith("stridelab:")][-limit:]


def run_packed(launcher, job_overrides, initial_job_idx: int) -> list:
    """:meth:`PackedLauncher.launch`: compose each job's config as Hydra's launchers do, run the jobs
    packed (:func:`launch`) and record how each ended in the sweep's outcome (``stridelab.train``'s
    exit status and end-of-sweep report); returns Hydra's ``JobReturn`` per job."""
    import cloudpickle
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log, filter_overrides, setup_globals
    from omegaconf import OmegaConf, open_dict

    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    settings = launcher.settings
    plan_ = plan(
        settings.get("runs_per_device", 2),
        settings.get("devices"),
        settings.get("memory_fraction", "auto"),
        settings.get("cpus_per_run"),
        n_gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
        visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    mode = mps_mode(settings.get("mps", "auto"))
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(config))
    singleton = Singleton.get_state()
    sweep = SweepOutcome.current or SweepOutcome()  # stridelab.train's (its exit status and end report)
    sweep.multirun = True
    jobs, finished, returns = [], {}, {}
    for i, overrides in enumerate(job_overrides):
        num = initial_job_idx + i
        cfg = context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id, cfg.hydra.job.num = f"{cfg.hydra.job.name}_{num}", num
        run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        job = Job(num, list(filter_overrides(overrides)), cfg, run_dir)
        done = _finished_before(cfg, run_dir, finished)
        if done is not None:  # a resumed study: no process started for a run that already finished
            log.info("#%d skipped, this config already finished in %s", num, done)
            sweep.finished.append(str(run_dir))
            returns[num] = _job_return(job, None)
            continue
        payload = {"hydra_context": context, "task_function": launcher.task_function, "config": cfg}
        payload["singleton"] = singleton
        job.payload = cloudpickle.dumps(payload)
        jobs.append(job)
    HydraConfig.instance().set_config(config)

    def on_end(job: Job, how: Ended) -> None:
        out = str(job.run_dir)
        if how.kind == "finished":
            sweep.finished.append(out)
        elif how.kind in ("failed", "diverged"):
            sweep.fail(out, diverged=how.kind == "diverged")
        elif how.kind == "interrupted":
            sweep.interrupted_runs.append(out)
            sweep.status = max(sweep.status, 1)  # also when only this run's process was signalled
        elif how.kind == "skipped":
            sweep.skipped.append(out)
        elif how.kind == "not started":
            sweep.not_started.append(out)
        took = f" after {how.seconds:.0f} s" if how.seconds is not None else ""
        said = f": {how.detail}" if how.detail else ""
        log.info("#%d %s%s%s", job.num, how.kind, took, said)
        for line in how.lines[-3:]:
            print(f"  #{job.num} {line}", flush=True)

    before = f" ({len(returns)} more already finished)" if returns else ""
    with Mps(mode if jobs else "off", bool(plan_.gpu_ids), plan_.runs_per_device) as mps:
        log.info("launcher=packed: %s%s; %s. Sweep folder: %s", plan_.describe(len(jobs)), before, mps.note, sweep_dir)
        ended = launch(jobs, plan_, mps.env, lambda: sweep.interrupted is not None, on_end)
    for job, how in zip(jobs, ended):
        returns[job.num] = _job_return(job, how.return_value)
    return [returns[initial_job_idx + i] for i in range(len(job_overrides))]


def _job_return(job: Job, value):
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn(overrides=job.overrides, cfg=job.config, hydra_cfg=None, working_dir=str(job.run_dir))
    ret.task_name, ret.status, ret.return_value = job.config.hydra.job.name, JobStatus.COMPLETED, value
    return ret


def _finished_before(cfg, run_dir: Path, cache: dict) -> Path | None:
    """Where this job's config already finished (``resume``: the sweep folder or ``resume_dir``), as the
    run itself would find it (:func:`stridelab.train.task`), or None. ``cache``: folder -> its finished runs."""
    import copy

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    if not cfg.get("resume", True):
        return None
    probe = copy.deepcopy(cfg)
    with open_dict(probe):
        probe.hydra.runtime.output_dir = str(run_dir)  # what run_job sets: paths resolve through it
    HydraConfig.instance().set_config(probe)
    task = copy.deepcopy(probe)
    with open_dict(task):
        del task["hydra"]
    root = str(task.get("resume_dir") or probe.hydra.sweep.dir)
    if root not in cache:
        cache[root] = finished_runs(root)
    try:
        return cache[root].get(config_hash(task))
    except Exception:  # a config that does not resolve here: its own process says why
        return None

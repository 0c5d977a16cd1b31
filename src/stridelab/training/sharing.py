"""CPU threads and GPUs per run: never more threads than cores; several runs at once (``launcher=joblib``,
``launcher=packed``) each take their share.

A run uses at most the cores this process may actually run on (its CPU affinity and its cgroup
CPU quota: torch's default counts the host's cores, which oversubscribes a container). A run
started by the joblib launcher with ``n_jobs`` workers uses ``cores // n_jobs`` threads and, when
the machine has GPUs, GPU ``job number mod #GPUs``, so concurrent runs do not pile onto GPU 0. A run
of ``launcher=packed`` (:mod:`stridelab.studies.packing`) is started with its CPU affinity, its GPU
(``CUDA_VISIBLE_DEVICES``) and its share of the GPU's memory (``STRIDELAB_GPU_MEMORY_FRACTION``) set;
:class:`Mps` lets the runs on one GPU execute their kernels at the same time (CUDA MPS).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from stridelab.errors import ConfigError

log = logging.getLogger(__name__)

MEMORY_FRACTION_ENV = "STRIDELAB_GPU_MEMORY_FRACTION"  # a packed run's bound on its GPU's memory (0..1]
MPS_CONTROL = "nvidia-cuda-mps-control"
MPS_MODES = ("auto", "on", "off")
MPS_DEFAULT_PIPE = "/tmp/nvidia-mps"  # where a daemon started without CUDA_MPS_PIPE_DIRECTORY listens


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may use: its affinity mask, capped by the cgroup quota (rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def joblib_share() -> tuple[int, int] | None:
    """``(n_jobs, job number)`` when this run was started by Hydra's joblib launcher, else None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if "joblib" not in str(hc.launcher.get("_target_", "")).lower():
        return None
    n_jobs = int(hc.launcher.get("n_jobs") or 1)
    if n_jobs < 1:  # joblib's -1: one per core
        n_jobs = available_cores()
    return n_jobs, int(hc.job.num)


def take_share(accelerator: str) -> dict:
    """Set this process's thread count; return Trainer arguments that pick this run's GPU."""
    import torch

    fraction = os.environ.get(MEMORY_FRACTION_ENV)
    if fraction and accelerator != "cpu" and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(float(fraction))
    share = joblib_share()
    if share is None:
        if torch.get_num_threads() > available_cores():
            torch.set_num_threads(available_cores())
        return {}
    n_jobs, job_num = share
    torch.set_num_threads(max(1, available_cores() // n_jobs))
    if accelerator != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return {"devices": [job_num % torch.cuda.device_count()]}
    return {}


def mps_mode(value) -> str:
    """``hydra.launcher.mps`` as one of auto/on/off (YAML reads a bare on/off as true/false)."""
    mode = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    if mode not in MPS_MODES:
        raise ConfigError(
            f"hydra.launcher.mps must be auto (use CUDA MPS where it works), on (fail without it) or off, got "
            f"{value!r}."
        )
    return mode


class Mps:
    """CUDA MPS for the runs of one launch, as a ``with`` block. ``env``: what the runs' processes need
    in their environment; ``note``: one line saying whether MPS is used and why (not).

    ``auto`` uses a daemon already running (``CUDA_MPS_PIPE_DIRECTORY`` or the default pipe folder) or
    starts one in a private folder, checks that a CUDA context can be made through it, and stops it at
    the end; where there is no ``nvidia-cuda-mps-control`` or the check fails, the runs share the GPU
    by time slicing. ``on`` turns those cases into an error; ``off`` never uses MPS."""

    def __init__(self, mode: str, gpus: bool, runs_per_device: int, probe_timeout_s: float = 60) -> None:
        self.mode, self.gpus, self.k, self.probe_timeout_s = mode, gpus, runs_per_device, probe_timeout_s
        self.env: dict[str, str] = {}
        self.note = ""
        self._started: dict[str, str] | None = None
        self._folder: str | None = None

    def __enter__(self) -> Mps:
        if self.mode == "off" or not self.gpus or self.k == 1:
            why = "off" if self.mode == "off" else "no GPU" if not self.gpus else "one run per GPU"
            self.note = f"MPS: not used ({why})"
            return self
        control = shutil.which(MPS_CONTROL)
        if control is None:
            return self._without(f"{MPS_CONTROL} is not on PATH")
        pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or MPS_DEFAULT_PIPE
        if Path(pipe, "control").exists():
            self.env = {"CUDA_MPS_PIPE_DIRECTORY": pipe}
            self.note = f"MPS: using the daemon already running ({pipe})"
            return self
        self._folder = tempfile.mkdtemp(prefix="stridelab-mps-")
        env = {"CUDA_MPS_PIPE_DIRECTORY": f"{self._folder}/pipe", "CUDA_MPS_LOG_DIRECTORY": f"{self._folder}/log"}
        for folder in env.values():
            os.makedirs(folder, exist_ok=True)
        try:
            started = subprocess.run([control, "-d"], env={**os.environ, **env}, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            return self._without(f"{MPS_CONTROL} -d did not start ({err})")
        if started.returncode != 0:
            return self._without(f"{MPS_CONTROL} -d exited with {started.returncode}")
        self._started = env
        problem = self._probe(env)
        if problem:
            self._stop()
            return self._without(problem)
        self.env = env
        self.note = f"MPS: started for this launch ({self._folder})"
        return self

    def _probe(self, env: dict[str, str]) -> str | None:
        code = "import torch; torch.zeros(8, device='cuda').sum().item()"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=self.probe_timeout_s,
            )
        except subprocess.TimeoutExpired:
            return f"a CUDA context through MPS was not made within {self.probe_timeout_s:.0f} s"
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return f"a CUDA context through MPS failed ({last})"
        return None

    def _without(self, why: str) -> Mps:
        if self.mode == "on":
            self.__exit__()
            raise ConfigError(
                f"hydra.launcher.mps=on, but CUDA MPS cannot be used here: {why}. Use hydra.launcher.mps=auto to "
                "go on without it (runs then share each GPU by time slicing), or start the MPS daemon first."
            )
        self.note = f"MPS: not used ({why}); the runs share each GPU by time slicing"
        return self

    def _stop(self) -> None:
        if self._started is not None:
            control = shutil.which(MPS_CONTROL) or MPS_CONTROL
            try:
                subprocess.run([control], input=b"quit\n", env={**os.environ, **self._started}, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as err:
                log.warning("could not stop the MPS daemon this launch started (%s)", err)
            self._started = None

    def __exit__(self, *exc) -> None:
        self._stop()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

"""CPU threads and GPUs per run: never more threads than cores; several runs at once (``launcher=joblib``,
``launcher=packed``) each take their share.

A run uses at most the cores this process may actually run on (its CPU affinity and its cgroup
CPU quota: torch's default counts the host's cores, which oversubscribes a container). A run
started by the joblib launcher with ``n_jobs`` workers uses ``cores // n_jobs`` threads and, when
the machine has GPUs, GPU ``job number mod #GPUs``, so concurrent runs do not pile onto GPU 0. A run
of ``launcher=packed`` (:mod:`stridelab.studies.packing`) is started with its CPU affinity, its GPU
(``CUDA_VISIBLE_DEVICES``) and its share of the GPU's memory (``STRIDELAB_GPU_MEMORY_FRACTION``) set.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

MEMORY_FRACTION_ENV = "STRIDELAB_GPU_MEMORY_FRACTION"  # a packed run's bound on its GPU's memory (0..1]


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

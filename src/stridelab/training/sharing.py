"""Several runs at once on one machine (``launcher=joblib``): each takes its share.

A run started by the joblib launcher with ``n_jobs`` workers uses ``cores // n_jobs`` CPU threads
(never more threads than cores in total) and, when the machine has GPUs, GPU ``job number mod
#GPUs``, so concurrent runs do not pile onto GPU 0.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
    share = joblib_share()
    if share is None:
        return {}
    import torch

    n_jobs, job_num = share
    torch.set_num_threads(max(1, available_cores() // n_jobs))
    if accelerator != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return {"devices": [job_num % torch.cuda.device_count()]}
    return {}

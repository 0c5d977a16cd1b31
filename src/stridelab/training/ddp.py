"""Lightning's DDP inside one process that runs many jobs (a Hydra multirun, a study).

Lightning's DDP launcher starts its worker processes with this process's command line and leaves
its variables in the environment. In a multirun both are wrong for the next job: the workers would
re-run the whole sweep (the known Hydra-multirun pitfall), and the next run would take itself for a
worker. These helpers scope both to the job.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import read_write

# What Lightning's DDP launcher puts into this process's environment.
DDP_ENV = (
    "LOCAL_RANK",
    "NODE_RANK",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
)


def is_rank_zero() -> bool:
    """False in the worker processes of a multi-process (DDP) run; they train but write nothing."""
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def ddp_environment() -> dict:
    """The DDP variables as they are now, for :func:`end_distributed` to restore."""
    return {k: os.environ.get(k) for k in DDP_ENV}


def end_distributed(env_before: dict) -> None:
    """After a DDP run: close its process group and restore the environment for the next run."""
    if "torch" not in sys.modules:  # failed before torch was imported (missing data): nothing to close
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in env_before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class workers_join_this_job:
    """While the trainer launches inside a Hydra multirun, the command line is this job's own
    overrides and ``hydra.run.dir`` this job's folder, so DDP workers join this run instead of
    starting the sweep again."""

    def __init__(self, out: Path) -> None:
        self.out, self.saved = out, None

    def __enter__(self):
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return self
        hc = HydraConfig.get()
        self.saved = (list(sys.argv), hc.run.dir)
        sys.argv = [sys.argv[0], *hc.overrides.task]
        with read_write(hc):
            hc.run.dir = str(self.out)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            from hydra.core.hydra_config import HydraConfig

            sys.argv = self.saved[0]
            with read_write(HydraConfig.get()):
                HydraConfig.get().run.dir = self.saved[1]
        return False

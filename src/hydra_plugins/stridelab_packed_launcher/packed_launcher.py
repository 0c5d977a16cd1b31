"""``hydra/launcher=packed``: a sweep's runs K at a time on each visible GPU, one process per run.

Hydra finds launchers only in the ``hydra_plugins`` namespace package, so this thin class lives here;
the work is :mod:`stridelab.studies.packing`. Options (``hydra.launcher.<name>``) are those of
:class:`PackedLauncherConf`; ``configs/launcher/packed.yaml`` selects it.
"""

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.stridelab_packed_launcher.packed_launcher.PackedLauncher"
    runs_per_device: int = 2  # runs at once on each GPU (on the CPU, without one)
    devices: Optional[List[int]] = None  # GPU indices to use; null: every visible GPU, or the CPU
    mps: Any = "auto"  # auto | on | off: CUDA MPS (kernels of the runs on one GPU at once)
    memory_fraction: Any = "auto"  # each run's bound on its GPU's memory: auto (0.95 / K), null, or (0, 1]
    cpus_per_run: Optional[int] = None  # CPU cores pinned to each run; null: an even share


ConfigStore.instance().store(group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="stridelab")


class PackedLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config = self.task_function = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        from stridelab.studies.packing import run_packed

        return run_packed(self, job_overrides, initial_job_idx)

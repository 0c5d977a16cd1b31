"""Hydra callback: aggregate a multirun's folder when the sweep ends (configs/hydra/default.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger("stridelab")


class AggregateSweep(Callback):
    """After the last job of a multirun: ``results.csv``, ``summary.*`` and plots in the sweep folder,
    and the summary table on the console. A failure here never fails the sweep: the runs are safe,
    and ``python -m stridelab.aggregate DIR`` redoes it."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_end(self, config, **kwargs) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            from stridelab.studies.aggregate import aggregate, summary_for_console

            aggregate(sweep_dir)
            print("\n" + summary_for_console(sweep_dir))
            print(f"\nstridelab: study tables and plots in {sweep_dir}")
        except Exception as err:  # noqa: BLE001 - the sweep's own results must survive
            log.error(
                "aggregating %s failed (%s: %s); run python -m stridelab.aggregate %s to retry",
                sweep_dir,
                type(err).__name__,
                err,
                sweep_dir,
            )

"""A finished run in TensorBoard: the suite's scalars and figures, and the HPARAMS entry."""

from __future__ import annotations

import inspect

from stridelab.config import VARIANT_FIELDS
from stridelab.metrics.suite import HEADLINE, METRIC_GROUPS


def log_tensorboard(loggers, metrics: dict, measurement, step: int) -> None:
    """The measurement suite's scalars, figures and audit table, and the HPARAMS entry: the variant
    with its real final figures."""
    from lightning.pytorch.loggers import TensorBoardLogger

    final_groups = ("test", "test_dissimilar", "val", "train", *METRIC_GROUPS)
    hparams = {k: "-" if metrics[k] is None else metrics[k] for k in (*VARIANT_FIELDS, "seed")}
    # Per-layer and per-shift figures stay scalars: they differ between models and would crowd the table.
    finals = {
        k: v
        for k, v in metrics.items()
        if "/" in k
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and k.split("/")[0] in final_groups
        and not k.startswith(("border/layer_", "probe/layer_", "crop/acc_at_"))
    }
    # The HPARAMS tab's columns follow this order: the headline figures first, bookkeeping last.
    first = [k for k, _ in HEADLINE if k in finals]
    last = [k for k in finals if k.startswith(("train/steps", "train/epochs"))]
    finals = {k: finals[k] for k in [*first, *(k for k in finals if k not in first and k not in last), *last]}
    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            if measurement is not None:
                measurement.log_tensorboard(lg.experiment, step)
            # At the run's last step: a Lightning without the step argument writes them at step 0,
            # a point at the start of every curve (val/loss, train/acc, ...) that the run never had.
            if "step" in inspect.signature(lg.log_hyperparams).parameters:
                lg.log_hyperparams(hparams, metrics=finals, step=step)
            else:
                lg.log_hyperparams(hparams, metrics=finals)
            lg.experiment.flush()  # the event writer's thread reports a full disk here, not at exit
            lg.finalize("success")

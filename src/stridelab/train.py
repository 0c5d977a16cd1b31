"""Train one variant: ``python -m stridelab.train [hydra overrides]`` (console script ``stridelab-train``).

config -> data + model -> trainer -> metrics -> results. Every run's folder (Hydra's output dir) ends
up with ``config.yaml`` (resolved), ``metrics.json`` (flat; ``status`` ok/failed with a ``reason``),
TensorBoard event files and, with ``save_weights``, ``model.pt``. Building the parts is
:mod:`stridelab.build`; DDP inside a multirun is :mod:`stridelab.training.ddp`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from stridelab.build import build_run, check_data_on_disk, unwrap_error, variant_fields
from stridelab.config import CONFIG_DIR, VARIANT_FIELDS, config_hash, register_resolvers
from stridelab.errors import StridelabError
from stridelab.files import atomic_write_text
from stridelab.training.ddp import ddp_environment, end_distributed, is_rank_zero, workers_join_this_job
from stridelab.training.results import RunResults, find_finished
from stridelab.validation import hydra_cli, validate_config

register_resolvers()
log = logging.getLogger("stridelab")

# The suite's headline figures, printed after a run (all of them: metrics.json, docs/metrics.md).
SUMMARY_KEYS = (
    "shift/circular_consistency",
    "crop/consistency",
    "border/deviation",
    "position/gap",
    "probe/spc",
    "cost/train_images_per_s",
)


def run(cfg: DictConfig, output_dir: str | os.PathLike | None = None, callbacks=(), timer=None) -> dict:
    """Train, test and record one run; returns the metrics written to ``metrics.json``.
    ``callbacks`` and ``timer``: as :func:`stridelab.build.build_run` takes them.

    Raises :class:`StridelabError` for user-fixable problems (after recording them as failed).
    """
    out = Path(output_dir or cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank_zero = is_rank_zero()
    env_before = ddp_environment()
    results = RunResults(
        out / "metrics.json", write=rank_zero, **variant_fields(cfg), config_hash=config_hash(cfg), run_dir=str(out)
    )
    t0 = time.perf_counter()
    try:
        if rank_zero:
            atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        results.write()
        validate_config(cfg)  # a bad value ends here, recorded as failed, before any work
        check_data_on_disk(cfg.data)  # before torch and Lightning are imported: missing data fails at once
        import torch

        parts = build_run(cfg, callbacks, timer)
        datamodule, model, trainer, suite = parts.datamodule, parts.model, parts.trainer, parts.suite
        results.update({f"data/{k}": v for k, v in datamodule.load().info.items() if k.endswith("_size")})
        results.update(
            {
                "model/params": sum(p.numel() for p in model.parameters()),
                "model/feature_shape": "x".join(map(str, parts.feature_shape)),
            }
        )
        results.update(
            {"trainer/precision": str(trainer.precision), "trainer/device": str(trainer.strategy.root_device)}
        )
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

        t_fit = time.perf_counter()
        with workers_join_this_job(out):
            trainer.fit(parts.module, datamodule=datamodule)
        if trainer.interrupted:
            raise KeyboardInterrupt
        results.update(
            {
                "time/fit_s": time.perf_counter() - t_fit,
                "train/steps": trainer.global_step,
                "train/epochs": trainer.current_epoch,
                "trainer/world_size": trainer.world_size,
            }
        )
        results.update({k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_step")})
        trainer.test(parts.module, datamodule=datamodule, verbose=False)
        results.update({k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_step")})
        if not rank_zero:  # DDP workers: rank 0 measures and writes everything
            return results.data
        results.write()

        measurement = None
        if suite is not None:
            log.info("measuring (shift, crop, border, padding audit, coverage, position, probe, cost) ...")
            t_measure = time.perf_counter()
            measurement = suite.measure(
                model,
                datamodule,
                device=trainer.strategy.root_device,
                precision=str(trainer.precision),
                fit_window=parts.timer.window,
                eval_window=parts.timer.eval_window,
            )
            measurement.save(out)  # its figures are part of what the suite costs
            results.update(measurement.metrics)
            results.update({"time/measure_s": time.perf_counter() - t_measure})
        if cfg.get("save_weights"):
            torch.save(model.state_dict(), out / "model.pt")
        results.update({"time/total_s": time.perf_counter() - t0})
        results.succeed()
        log_tensorboard(parts.loggers, results.data, measurement, trainer.global_step)
        return results.data
    except KeyboardInterrupt:
        results.fail("interrupted (Ctrl-C or the process was stopped) before the run finished")
        raise
    except BaseException as err:
        err = unwrap_error(err)
        results.fail(f"{type(err).__name__}: {err}")
        raise err from None
    finally:
        if rank_zero:
            end_distributed(env_before)


def log_tensorboard(loggers, metrics: dict, measurement, step: int) -> None:
    """The measurement suite's scalars, figures and audit table, and the HPARAMS entry: the variant
    with its real final figures."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from stridelab.metrics.suite import METRIC_GROUPS

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
    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            if measurement is not None:
                measurement.log_tensorboard(lg.experiment, step)
            lg.log_hyperparams(hparams, metrics=finals)
            lg.finalize("success")


@hydra_cli  # Hydra's refusal of a misspelt key or an unwritable run folder, as stridelab: error:
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun and cfg.get("resume", True):
        done = find_finished(cfg.get("resume_dir") or HydraConfig.get().sweep.dir, config_hash(cfg))
        if done is not None:
            print(f"stridelab: skipped, this config already finished in {done}")
            return None
    try:
        metrics = run(cfg)
    except StridelabError as err:
        print(f"\nstridelab: error: {err}\n", file=sys.stderr)
        if multirun:  # record, then let the sweep go on
            return None
        if os.environ.get("STRIDELAB_TRACEBACK"):
            traceback.print_exc()
        sys.exit(2)
    except Exception:
        if multirun:
            log.error("run failed; recorded in metrics.json, the sweep goes on:\n%s", traceback.format_exc())
            return None
        raise
    shown = {k: v for k, v in metrics.items() if k.endswith("/acc") or k == "test/loss"}
    print("stridelab: " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
    measured = [k for k in SUMMARY_KEYS if isinstance(metrics.get(k), (int, float))]
    if measured:
        print("stridelab: " + "  ".join(f"{k}={metrics[k]:.4g}" for k in measured))
    print(f"stridelab: results in {metrics['run_dir']}/metrics.json")
    return metrics.get("test/acc")


if __name__ == "__main__":
    main()

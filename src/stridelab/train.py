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
from omegaconf import DictConfig

from stridelab.build import build_run, check_data_on_disk, unwrap_error, variant_fields
from stridelab.config import CONFIG_DIR, SWEPT_ENV, config_hash, register_resolvers, swept_keys
from stridelab.errors import RunDiverged, RunInterrupted, StridelabError
from stridelab.files import atomic_path, disk_errors_said_once
from stridelab.metrics.suite import METRIC_GROUPS
from stridelab.metrics.tensorboard import log_tensorboard
from stridelab.training.checkpoint import StopSignals, fit_kwargs, remove_checkpoints, resume_warnings
from stridelab.training.ddp import is_rank_zero, workers_join_this_job
from stridelab.training.lifecycle import RunFinished, RunGuard, SweepOutcome
from stridelab.training.lock import RunLocked
from stridelab.training.results import find_finished
from stridelab.validation import check_added_keys, hydra_cli, validate_config

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


def hydra_overrides() -> list[str]:
    """The running Hydra job's command-line overrides (none outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run(cfg: DictConfig, output_dir: str | os.PathLike | None = None, callbacks=(), timer=None) -> dict:
    """Train, test and record one run; returns the metrics written to ``metrics.json``.
    ``callbacks`` and ``timer``: as :func:`stridelab.build.build_run` takes them. An unfinished run in
    the same folder (its checkpoint) is resumed; a run another process holds raises RunLocked.

    Raises :class:`StridelabError` for user-fixable problems (after recording them as failed) and
    :class:`RunInterrupted` for a stop signal (after a checkpoint; recorded as interrupted).
    """
    out = Path(output_dir or cfg.paths.output_dir)
    t0 = time.perf_counter()
    with RunGuard(cfg, out, variant_fields(cfg), unwrap=unwrap_error) as guard, disk_errors_said_once():
        validate_config(cfg)  # a bad value ends here, recorded as failed, before any work
        check_added_keys(cfg, hydra_overrides())  # a +key that nothing reads (a typo) too
        check_data_on_disk(cfg.data)  # before torch and Lightning are imported: missing data fails at once
        return _train_and_measure(cfg, out, guard, callbacks, timer, t0)


def _train_and_measure(cfg, out: Path, guard: RunGuard, callbacks, timer, t0) -> dict:
    import torch

    results, ckpt, resume = guard.results, guard.checkpoint, guard.resume_from
    parts = build_run(cfg, [*callbacks, *([ckpt] if ckpt else [])], timer, resume.step if resume else None)
    datamodule, model, trainer, suite = parts.datamodule, parts.model, parts.trainer, parts.suite
    results.update({f"data/{k}": v for k, v in datamodule.load().info.items() if k.endswith("_size")})
    results.update(
        {
            "model/params": sum(p.numel() for p in model.parameters()),
            "model/feature_shape": "x".join(map(str, parts.feature_shape)),
            "trainer/precision": str(trainer.precision),
            "trainer/device": str(trainer.strategy.root_device),
        }
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    t_fit = time.perf_counter()
    with workers_join_this_job(out), resume_warnings(datamodule, resume):
        trainer.fit(parts.module, datamodule=datamodule, **fit_kwargs(trainer, resume.path if resume else None))
    if trainer.interrupted:
        raise KeyboardInterrupt
    if ckpt is not None and ckpt.resumed_from is not None:
        results.update({"resume/epoch": ckpt.resumed_from[0], "resume/step": ckpt.resumed_from[1]})
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
    if not is_rank_zero():  # DDP workers: rank 0 measures and writes everything
        return results.data
    results.write()

    measurement = None
    if suite is not None:
        log.info("measuring (%s) ...", ", ".join(g for g in METRIC_GROUPS if g not in suite.skip))
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
        with atomic_path(out / "model.pt") as tmp:
            torch.save(model.state_dict(), tmp)
    results.update({"time/total_s": time.perf_counter() - t0})
    # Before the run is ok and its checkpoints go: a disk that refuses the event files leaves a run
    # that resumes from its last checkpoint, not a finished run marked failed with nothing to resume.
    log_tensorboard(parts.loggers, results.data, measurement, trainer.global_step)
    results.succeed()
    if not cfg.get("checkpoint", {}).get("keep", False):
        remove_checkpoints(out)
    return results.data


SWEEP = SweepOutcome()  # this invocation's outcome (main() resets it: a study runs several)


@hydra_cli  # Hydra's refusal of a misspelt key or an unwritable run folder, as stridelab: error:
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def task(cfg: DictConfig):
    """One Hydra job: one run, or a job of a multirun (which records its outcome in SWEEP)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = SWEEP.multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    out = str(cfg.paths.output_dir)
    if SWEEP.interrupted is not None:  # a signal came before this job (or stopped an earlier one)
        print(f"stridelab: not started ({SWEEP.interrupted.signame} came first): {out}", file=sys.stderr)
        SWEEP.not_started.append(out)
        return None
    if multirun and cfg.get("resume", True):
        done = find_finished(cfg.get("resume_dir") or HydraConfig.get().sweep.dir, config_hash(cfg))
        if done is not None:
            print(f"stridelab: skipped, this config already finished in {done}")
            SWEEP.finished.append(out)
            return None
    try:
        metrics = run(cfg)
    except RunFinished as err:
        print(f"stridelab: skipped, {err}")
        SWEEP.finished.append(out)
        return None
    except RunLocked as err:
        print(f"stridelab: skipped, {err}", file=sys.stderr)
        SWEEP.skipped.append(out)
        SWEEP.status = max(SWEEP.status, 0 if multirun else 2)
        return None
    except RunInterrupted as err:
        print(f"\nstridelab: {err.reason()}", file=sys.stderr)
        return SWEEP.interrupt(err, out)  # under launcher=slurm: exits, so that SLURM's requeued job resumes
    except StridelabError as err:
        kind = "diverged" if isinstance(err, RunDiverged) else "error"
        print(f"\nstridelab: {kind}: {err}\n", file=sys.stderr)
        if os.environ.get("STRIDELAB_TRACEBACK"):
            traceback.print_exc()
        return SWEEP.fail(out, diverged=isinstance(err, RunDiverged))
    except Exception:
        if not multirun:
            raise
        log.error("run failed; recorded in metrics.json, the sweep goes on:\n%s", traceback.format_exc())
        return SWEEP.fail(out)
    SWEEP.finished.append(out)
    shown = {k: v for k, v in metrics.items() if k.endswith("/acc") or k == "test/loss"}
    print("stridelab: " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
    measured = [k for k in SUMMARY_KEYS if isinstance(metrics.get(k), (int, float))]
    if measured:
        print("stridelab: " + "  ".join(f"{k}={metrics[k]:.4g}" for k in measured))
    print(f"stridelab: results in {metrics['run_dir']}/metrics.json")
    return metrics.get(cfg.get("optimized_metric") or "test/acc")  # what a tuning sweeper maximises


def main() -> None:
    """``python -m stridelab.train``: the Hydra app, then the exit status of what its runs did."""
    global SWEEP
    SWEEP = SweepOutcome.begin()
    os.environ[SWEPT_ENV] = ",".join(swept_keys(sys.argv[1:]))  # job folders: named by these
    try:  # a signal between runs: the job in progress ends, no other starts (and joblib's workers stop)
        with StopSignals(None, on_first=SWEEP.stop_later):
            task()
    except RunInterrupted as err:  # a second signal
        SWEEP.interrupted = err
    sys.exit(SWEEP.end())


if __name__ == "__main__":
    main()

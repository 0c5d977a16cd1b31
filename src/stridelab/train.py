"""Train one variant: ``python -m stridelab.train [hydra overrides]`` (console script ``stridelab-train``).

config -> data + model -> trainer -> results. Every run's folder (Hydra's output dir) ends up with
``config.yaml`` (resolved), ``metrics.json`` (flat; ``status`` ok/failed with a ``reason``),
TensorBoard event files and, with ``save_weights``, ``model.pt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from stridelab.config import CONFIG_DIR, NON_IDENTITY_KEYS, register_resolvers, resolve_precision
from stridelab.errors import StridelabError

register_resolvers()
log = logging.getLogger("stridelab")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def _quiet_lightning() -> None:
    """Lightning adds its own console handler; Hydra's already prints (and files) its messages."""
    import lightning.pytorch  # noqa: F401  (its handlers are added on import)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            lg.removeHandler(handler)
        lg.propagate = True
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropTips())


def config_hash(cfg: DictConfig) -> str:
    """A stable id of what a run trains (resolved config minus paths/logging): equal configs, equal hash."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in NON_IDENTITY_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = plain.get(parent, {}) if parent else plain
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _registry_name(target: str, module: str, registry: str) -> str:
    """The registry key of a ``_target_`` (so names match configs even outside a Hydra run)."""
    import importlib

    from hydra.utils import get_object

    names = getattr(importlib.import_module(module), registry)
    obj = get_object(target)
    return next((k for k, v in names.items() if v is obj), target.rsplit(".", 1)[-1])


def variant_fields(cfg: DictConfig, choices: dict | None = None) -> dict:
    """What identifies a variant in tables: names, not _target_ paths."""
    choices = choices if choices is not None else _choices()
    return {
        "model": choices.get("model") or _registry_name(cfg.model._target_, "stridelab.models", "MODEL_REGISTRY"),
        "downsample": cfg.downsample.name,
        "padding": cfg.padding.mode,
        "padding_amount": cfg.padding.amount,
        "data": choices.get("data") or _registry_name(cfg.data._target_, "stridelab.data", "DATA_REGISTRY"),
        "seed": int(cfg.seed),
        "experiment": choices.get("experiment"),
    }


def _unwrap(err: BaseException) -> BaseException:
    """Hydra wraps errors from constructors in InstantiationException; show the user's error."""
    from hydra.errors import InstantiationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def run(cfg: DictConfig, output_dir: str | os.PathLike | None = None, callbacks=()) -> dict:
    """Train, test and record one run; returns the metrics written to ``metrics.json``.
    ``callbacks``: Lightning callbacks added to the configured ones (the benchmark's clock).

    Raises :class:`StridelabError` for user-fixable problems (after recording them as failed).
    """
    from stridelab.training.results import RunResults, atomic_write_text

    out = Path(output_dir or cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank_zero = is_rank_zero()
    env_before = {k: os.environ.get(k) for k in _DDP_ENV}
    results = RunResults(out / "metrics.json", write=rank_zero, **variant_fields(cfg),
                         config_hash=config_hash(cfg), run_dir=str(out))
    t0 = time.perf_counter()
    try:
        if rank_zero:
            atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        results.write()
        _check_data_on_disk(cfg.data)  # before torch and Lightning are imported: missing data fails at once
        import torch

        parts = build_run(cfg, callbacks)
        datamodule, model, trainer, suite = parts.datamodule, parts.model, parts.trainer, parts.suite
        results.update({f"data/{k}": v for k, v in datamodule.load().info.items() if k.endswith("_size")})
        results.update({"model/params": sum(p.numel() for p in model.parameters()),
                        "model/feature_shape": "x".join(map(str, parts.feature_shape))})
        results.update({"trainer/precision": str(trainer.precision),
                        "trainer/device": str(trainer.strategy.root_device)})
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t_fit = time.perf_counter()
        with _ddp_children_run_this_job(out):
            trainer.fit(parts.module, datamodule=datamodule)
        if trainer.interrupted:
            raise KeyboardInterrupt
        results.update({"time/fit_s": time.perf_counter() - t_fit, "train/steps": trainer.global_step,
                        "train/epochs": trainer.current_epoch, "trainer/world_size": trainer.world_size})
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
            measurement = suite.measure(model, datamodule, device=trainer.strategy.root_device,
                                        precision=str(trainer.precision), fit_window=parts.timer.window,
                                        eval_window=parts.timer.eval_window)
            measurement.save(out)  # its figures are part of what the suite costs
            results.update(measurement.metrics)
            results.update({"time/measure_s": time.perf_counter() - t_measure})
        if cfg.get("save_weights"):
            torch.save(model.state_dict(), out / "model.pt")
        results.update({"time/total_s": time.perf_counter() - t0})
        results.succeed()
        _log_tensorboard(parts.loggers, results.data, measurement, trainer.global_step)
        return results.data
    except KeyboardInterrupt:
        results.fail("interrupted (Ctrl-C or the process was stopped) before the run finished")
        raise
    except BaseException as err:
        err = _unwrap(err)
        results.fail(f"{type(err).__name__}: {err}")
        raise err from None
    finally:
        if rank_zero:
            _end_distributed(env_before)


# What Lightning's DDP launcher puts into this process's environment; left there, the next run of a
# multirun would take itself for a worker of the finished one.
_DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK", "GROUP_RANK",
            "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


def _end_distributed(env_before: dict) -> None:
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


def is_rank_zero() -> bool:
    """False in the worker processes of a multi-process (DDP) run; they train but write nothing."""
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


class _ddp_children_run_this_job:
    """Lightning's DDP launcher starts its worker processes with this process's command line plus
    ``hydra.run.dir``. In a Hydra multirun that command line is the whole sweep (``-m`` and every
    value list), so each worker would start the sweep again, in the wrong folder: the known
    Hydra-multirun pitfall. While the trainer launches, the command line is this job's own
    overrides and ``hydra.run.dir`` is this job's folder, so the workers join this run."""

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
        with open_dict_unlocked(hc):
            hc.run.dir = str(self.out)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            from hydra.core.hydra_config import HydraConfig

            sys.argv = self.saved[0]
            with open_dict_unlocked(HydraConfig.get()):
                HydraConfig.get().run.dir = self.saved[1]
        return False


class open_dict_unlocked:
    """Temporarily writable (Hydra's runtime config is read-only)."""

    def __init__(self, node) -> None:
        self.node = node

    def __enter__(self):
        self.flag = OmegaConf.is_readonly(self.node)
        OmegaConf.set_readonly(self.node, False)
        return self.node

    def __exit__(self, *exc):
        OmegaConf.set_readonly(self.node, self.flag)
        return False


@dataclass
class RunParts:
    """What a run trains and measures with, built from its config (see :func:`build_run`)."""

    datamodule: Any
    model: Any
    module: Any
    trainer: Any
    timer: Any
    suite: Any
    loggers: list
    feature_shape: tuple


def build_run(cfg: DictConfig, callbacks=()) -> RunParts:
    """Seed, then build data (loaded), model (geometry checked), LightningModule, suite and Trainer
    exactly as a run does; the benchmark times this same path."""
    import lightning as L
    from hydra.utils import instantiate

    _quiet_lightning()

    from stridelab.models import check_geometry
    from stridelab.training.sharing import take_share
    from stridelab.training.throughput import TrainThroughput

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule, model = build_data_and_model(cfg)
    feature_shape = check_geometry(model, datamodule.input_shape)
    suite = _build(instantiate, cfg.metrics) if cfg.get("metrics") else None
    module = _build(instantiate, cfg.module, model=model, optimizer=instantiate(cfg.optimizer),
                    scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
                    eval_names=datamodule.test_names)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    timer = TrainThroughput(suite.warmup_steps if suite else 5)
    all_callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    all_callbacks += [timer, *callbacks]
    share = take_share(str(cfg.trainer.get("accelerator", "auto")))
    trainer = _build(instantiate, cfg.trainer, logger=loggers or False, callbacks=all_callbacks,
                     precision=resolve_precision(cfg.trainer.get("precision", "fast")), **share)
    return RunParts(datamodule, model, module, trainer, timer, suite, loggers, tuple(feature_shape))


def build_data_and_model(cfg: DictConfig):
    """The data module (data loaded, so missing data fails here) and the model of a run's config."""
    from hydra.utils import instantiate

    datamodule = _build(instantiate, cfg.data)
    datamodule.load()  # fail fast on missing data, before anything else is built
    downsample = _build(instantiate, cfg.downsample)
    padding = _build(instantiate, cfg.padding)
    model = _build(instantiate, cfg.model, num_classes=datamodule.num_classes,
                   in_chans=datamodule.in_chans, downsample=downsample, padding=padding)
    return datamodule, model


def _check_data_on_disk(data_cfg: DictConfig) -> None:
    """Data sets read from disk are looked for (and fetched) with numpy-only code, first."""
    from stridelab.data import cifar10

    on_disk = {"stridelab.data.Cifar10DataModule": cifar10.ensure_available,
               "stridelab.data.datamodule.Cifar10DataModule": cifar10.ensure_available}
    check = on_disk.get(data_cfg.get("_target_"))
    if check is not None:
        check(data_cfg.root, data_cfg.download)


def _build(instantiate, node, **kwargs):
    """instantiate() that lets our own one-paragraph errors through unwrapped."""
    try:
        # Objects go in through a partial: passed to instantiate(), dataclasses would become configs.
        return instantiate(node, _partial_=True)(**kwargs) if kwargs else instantiate(node)
    except Exception as err:
        inner = _unwrap(err)
        if isinstance(inner, StridelabError):
            raise inner from None
        raise


# The suite's headline figures, printed after a run (all of them: metrics.json, docs/metrics.md).
SUMMARY_KEYS = ("shift/circular_consistency", "crop/consistency", "border/deviation", "position/gap",
                "probe/spc", "cost/train_images_per_s")

# Metric groups that go into TensorBoard's HPARAMS tab as final figures.
HPARAM_METRIC_GROUPS = ("test", "test_dissimilar", "val", "train", "shift", "crop", "border", "audit",
                        "coverage", "position", "probe", "cost")


def _log_tensorboard(loggers, metrics: dict, measurement, step: int) -> None:
    """The measurement suite's scalars, figures and audit table, and the HPARAMS entry: the variant
    with its real final figures."""
    from lightning.pytorch.loggers import TensorBoardLogger

    hparams = {k: metrics[k] for k in ("model", "downsample", "padding", "padding_amount", "data", "seed")}
    # Per-layer and per-shift figures stay scalars: they differ between models and would crowd the table.
    finals = {k: v for k, v in metrics.items() if "/" in k and isinstance(v, (int, float))
              and not isinstance(v, bool) and k.split("/")[0] in HPARAM_METRIC_GROUPS
              and not k.startswith(("border/layer_", "probe/layer_", "crop/acc_at_"))}
    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            if measurement is not None:
                measurement.log_tensorboard(lg.experiment, step)
            lg.log_hyperparams(hparams, metrics=finals)
            lg.finalize("success")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun and cfg.get("resume", True):
        from stridelab.studies.resume import find_finished

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

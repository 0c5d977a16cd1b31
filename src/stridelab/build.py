"""A run's parts from its config: data module, model, LightningModule, suite, loggers and Trainer.

``train.run`` trains with them; ``evaluate`` rebuilds data and model from a finished run's config;
``bench`` times the same path. Hydra's ``instantiate`` does the work; :func:`instantiate_checked`
lets stridelab's one-paragraph errors through unwrapped.
"""

from __future__ import annotations

import importlib
import logging
import re
import warnings
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from stridelab.config import VARIANT_FIELDS, resolve_precision
from stridelab.errors import ConfigError, StridelabError


def unwrap_error(err: BaseException) -> BaseException:
    """Hydra wraps errors from constructors in InstantiationException; the user's error is inside."""
    from hydra.errors import InstantiationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def instantiate_checked(node, **kwargs):
    """``hydra.utils.instantiate`` that raises our own errors unwrapped."""
    from hydra.utils import instantiate

    try:
        # Objects go in through a partial: passed to instantiate(), dataclasses would become configs.
        return instantiate(node, _partial_=True)(**kwargs) if kwargs else instantiate(node)
    except Exception as err:
        inner = unwrap_error(err)
        if isinstance(inner, StridelabError):
            raise inner from None
        unknown = (
            re.search(r"unexpected keyword argument '(\w+)'", str(inner)) if isinstance(inner, TypeError) else None
        )
        if unknown and isinstance(node, DictConfig) and unknown[1] in node:
            # a key added with +group.key=... that this option's class does not take
            group = node._key() or "the config"
            target = node.get("_target_", "?")
            raise ConfigError(
                f"{group}.{unknown[1]} is not an option of {target}: the {group} you chose does not take "
                f"it. Remove the +{group}.{unknown[1]}=... override, or choose a {group} option that has "
                "it (`python -m stridelab.train --cfg job` prints every key the config has)."
            ) from None
        raise


def check_data_on_disk(data_cfg: DictConfig) -> None:
    """Data sets read from disk are looked for (and fetched) with numpy-only code, first: missing
    data fails at once, before torch and Lightning are imported."""
    from stridelab.data import cifar10, cifar100

    on_disk = {
        "stridelab.data.Cifar10DataModule": cifar10.ensure_available,
        "stridelab.data.datamodule.Cifar10DataModule": cifar10.ensure_available,
        "stridelab.data.Cifar100DataModule": cifar100.ensure_available,
        "stridelab.data.datamodule.Cifar100DataModule": cifar100.ensure_available,
    }
    check = on_disk.get(data_cfg.get("_target_"))
    if check is not None:
        check(data_cfg.root, data_cfg.download)


def hydra_choices() -> dict:
    """The config-group options of the running Hydra app (empty outside one)."""
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def registry_name(target: str, module: str, registry: str) -> str:
    """The registry key of a ``_target_`` (so names match configs even outside a Hydra run)."""
    from hydra.utils import get_object

    names = getattr(importlib.import_module(module), registry)
    obj = get_object(target)
    return next((k for k, v in names.items() if v is obj), target.rsplit(".", 1)[-1])


def variant_fields(cfg: DictConfig, choices: dict | None = None) -> dict:
    """The :data:`~stridelab.config.VARIANT_FIELDS` of a run and its seed: names, not _target_ paths."""
    choices = choices if choices is not None else hydra_choices()
    fields = {
        "model": choices.get("model") or registry_name(cfg.model._target_, "stridelab.models", "MODEL_REGISTRY"),
        "downsample": cfg.downsample.name,
        "padding": cfg.padding.mode,
        "padding_amount": cfg.padding.amount,
        "data": choices.get("data") or registry_name(cfg.data._target_, "stridelab.data", "DATA_REGISTRY"),
        "experiment": choices.get("experiment"),
    }
    assert tuple(fields) == VARIANT_FIELDS  # one list: extend VARIANT_FIELDS and this together
    seed = cfg.seed  # a seed that is no integer is recorded as given: stridelab.validation refuses it
    return {**fields, "seed": int(seed) if str(seed).isdigit() else seed}


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


def build_data_and_model(cfg: DictConfig):
    """The data module (data loaded, so missing data fails here) and the model of a run's config."""
    datamodule = instantiate_checked(cfg.data)
    datamodule.load()  # fail fast on missing data, before anything else is built
    model = instantiate_checked(
        cfg.model,
        num_classes=datamodule.num_classes,
        in_chans=datamodule.in_chans,
        downsample=instantiate_checked(cfg.downsample),
        padding=instantiate_checked(cfg.padding),
    )
    return datamodule, model


def _logger(node, resume_step: int | None):
    """A logger of the config; a resumed run's TensorBoard writer purges the steps it logs again."""
    from hydra.utils import instantiate

    if resume_step is not None and str(node.get("_target_", "")).endswith("TensorBoardLogger"):
        return instantiate(node, purge_step=resume_step)  # passed on to SummaryWriter
    return instantiate(node)


def build_run(cfg: DictConfig, callbacks=(), timer=None, resume_step: int | None = None) -> RunParts:
    """Seed, then build data (loaded), model (geometry checked), LightningModule, suite and Trainer
    exactly as a run does. ``callbacks`` are added to the configured ones; ``timer``: the run's
    timing callback (:class:`~stridelab.training.throughput.TrainThroughput`) when the caller sets
    its options (the benchmark); by default one with the suite's warm-up steps. ``resume_step``: the
    step a resumed run continues from (its TensorBoard writer purges later steps logged before)."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import Checkpoint

    from stridelab.models import check_geometry
    from stridelab.training.sharing import take_share
    from stridelab.training.throughput import TrainThroughput

    quiet_lightning()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule, model = build_data_and_model(cfg)
    datamodule.seed = int(cfg.seed)  # data order and augmentation: the seed's, whatever the model drew
    feature_shape = check_geometry(model, datamodule.input_shape)
    suite = instantiate_checked(cfg.metrics) if cfg.get("metrics") else None
    if suite is not None:
        suite.check_input(datamodule.input_shape)  # before training, not after it
    module = instantiate_checked(
        cfg.module,
        model=model,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        eval_names=datamodule.test_names,
    )
    loggers = [_logger(c, resume_step) for c in (cfg.get("logger") or {}).values() if c is not None]
    timer = timer or TrainThroughput(suite.warmup_steps if suite else 5)
    all_callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    all_callbacks += [timer, *callbacks]
    share = take_share(str(cfg.trainer.get("accelerator", "auto")))
    checkpoints = any(isinstance(c, Checkpoint) for c in all_callbacks)  # ours (RunCheckpoint), not Lightning's
    trainer = instantiate_checked(
        cfg.trainer,
        logger=loggers or False,
        callbacks=all_callbacks,
        enable_checkpointing=checkpoints or bool(cfg.trainer.get("enable_checkpointing", False)),
        precision=resolve_precision(cfg.trainer.get("precision", "fast")),
        **share,
    )
    return RunParts(datamodule, model, module, trainer, timer, suite, loggers, tuple(feature_shape))


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_lightning() -> None:
    """Lightning adds its own console handler; Hydra's already prints (and files) its messages."""
    import lightning.pytorch  # noqa: F401  (its handlers are added on import)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            lg.removeHandler(handler)
        lg.propagate = True
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropTips())
    # On a machine with SLURM installed, Lightning warns on every run that `srun` is not used; a run
    # of launcher=slurm is started by sbatch (submitit) and a local run is meant to be local.
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system")

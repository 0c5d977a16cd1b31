"""Hydra/OmegaConf plumbing: where the configs live and the resolvers they use."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Configs live at the repository root (lightning-hydra-template layout); override with STRIDELAB_CONFIG_DIR.
CONFIG_DIR = Path(os.environ.get("STRIDELAB_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs"))


# Config keys that say where and how results are written, not what is trained: left out of a run's
# config_hash (resume) and of the settings that tell variants apart (aggregation). The measurement
# suite's knobs are among them: stridelab.evaluate re-measures without retraining.
NON_IDENTITY_KEYS = (
    "paths",
    "hydra",
    "trainer.default_root_dir",
    "logger",
    "callbacks",
    "metrics",
    "resume",
    "resume_dir",
    "checkpoint",
    "save_weights",
)


# metrics.json fields that name a variant (stridelab.build.variant_fields fills them; the first columns
# of every table, the HPARAMS of TensorBoard); the seed tells the runs of one variant apart.
VARIANT_FIELDS = ("model", "downsample", "padding", "padding_amount", "data", "experiment")


def config_hash(cfg: DictConfig) -> str:
    """A stable id of what a run trains (resolved config minus :data:`NON_IDENTITY_KEYS`): equal
    configs, equal hash. Resume matches finished runs by it."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in NON_IDENTITY_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = plain.get(parent, {}) if parent else plain
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fast_precision() -> str:
    """The fast default for this machine: bf16-mixed on a GPU that has bf16, else fp32."""
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def resolve_precision(value):
    """``trainer.precision=fast`` (the default trainer's) becomes :func:`fast_precision` when the
    trainer is built, so reading a config never needs torch."""
    return fast_precision() if value == "fast" else value


def job_dirname(override_dirname: str, limit: int = 120) -> str:
    """A multirun job's folder: its overrides (``downsample=conv,seed=0``), so another sweep into the
    same folder never reuses a finished run's folder (job numbers would). Long names are cut and
    made unique with a hash of the whole."""
    name = (override_dirname or "run").replace("/", "_")
    if len(name) <= limit:
        return name
    return f"{name[: limit - 13]}...{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def register_resolvers() -> None:
    """``${stridelab.uid:}``: a short id, fixed per process, that keeps run folders unique even for
    jobs started in the same second. ``${stridelab.cwd:}``: the launch directory; unlike
    ``${hydra:runtime.cwd}`` it also resolves where a multirun's sweep folder is named, before
    Hydra's runtime config exists. ``${stridelab.jobdir:...}``: see :func:`job_dirname`."""
    if not OmegaConf.has_resolver("stridelab.cwd"):
        OmegaConf.register_new_resolver("stridelab.cwd", os.getcwd, use_cache=True)
    if not OmegaConf.has_resolver("stridelab.jobdir"):
        OmegaConf.register_new_resolver("stridelab.jobdir", job_dirname)
    if not OmegaConf.has_resolver("stridelab.uid"):
        run_id = uuid.uuid4().hex[:6]
        OmegaConf.register_new_resolver("stridelab.uid", lambda: run_id)

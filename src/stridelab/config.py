"""Hydra/OmegaConf plumbing: where the configs live and the resolvers they use."""

from __future__ import annotations

import hashlib
import json
import os
import re
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
    "notes",
    "tags",
)


# metrics.json fields that name a variant (stridelab.build.variant_fields fills them; the first columns
# of every table, the HPARAMS of TensorBoard); the seed tells the runs of one variant apart.
VARIANT_FIELDS = ("model", "downsample", "padding", "padding_amount", "data", "experiment")
# The override that sets a variant field of another name (a sweep of padding.amount=... is the
# padding_amount column).
VARIANT_FIELD_OF = {"padding.amount": "padding_amount"}


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


SWEPT_ENV = "STRIDELAB_SWEPT"  # the keys a multirun sweeps, for its jobs' folder names (job_dirname)
_SWEEP_FUNCTIONS = ("range(", "choice(", "interval(", "glob(", "tag(", "sort(", "shuffle(")


def swept_keys(argv: list[str]) -> list[str]:
    """The keys a command line sweeps: ``key=a,b`` (a comma outside brackets and quotes) or a Hydra
    sweep function (``seed=range(3)``); ``hydra.*`` keys excepted."""
    keys = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        key = key.lstrip("+~")
        if not eq or arg.startswith("-") or key.startswith("hydra."):
            continue
        depth, comma = 0, False
        for ch in value:
            depth += ch in "[{(" and 1 or 0
            depth -= ch in "]})" and 1 or 0
            comma = comma or (ch == "," and depth == 0)
        if comma or value.startswith(_SWEEP_FUNCTIONS):
            keys.append(key)
    return keys


def job_dirname(override_dirname: str, limit: int = 120, *, _root_=None) -> str:
    """A multirun job's folder, named by its swept keys (``downsample=conv,seed=0``): what tells the
    sweep's runs apart, readable in TensorBoard's run list. The keys every job shares are not spelled
    out but hashed into a short suffix (``seed=0~3fa9c1``; ``launcher=`` is left out: where a grid runs
    is not what it runs), so a sweep with other fixed settings into the same folder never lands in a
    finished run's folder. The swept keys come from ``STRIDELAB_SWEPT`` (set by ``stridelab.train``
    from its command line, inherited by launcher processes) and from the sweeper's own
    ``hydra.sweeper.params`` (an ``hparams_search`` names them in its config, not on the command line);
    without either the folder holds every override. Long names are cut and made unique with a hash of
    the whole."""
    name = (override_dirname or "run").replace("/", "_")
    swept = [k for k in os.environ.get(SWEPT_ENV, "").split(",") if k] + _sweeper_params(_root_)
    if swept:
        parts = re.split(r",(?=[\w.+~-]+=)", override_dirname or "")
        mine = [p for p in parts if p.split("=", 1)[0].lstrip("+~") in swept]
        # Where a sweep runs is not what it runs: the same grid under another launcher finds its folders.
        fixed = [p for p in parts if p not in mine and p.split("=", 1)[0].lstrip("+~") not in ("launcher",)]
        if mine:
            name = ",".join(mine).replace("/", "_")
            if fixed:
                name += "~" + hashlib.sha256(",".join(fixed).encode()).hexdigest()[:6]
    if len(name) <= limit:
        return name
    return f"{name[: limit - 13]}...{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def _sweeper_params(root) -> list[str]:
    """The keys ``hydra.sweeper.params`` sweeps (the Optuna sweeper's search space), if any."""
    try:
        params = OmegaConf.select(root, "hydra.sweeper.params", default=None) if root is not None else None
    except Exception:  # a config without a hydra node, or one not resolvable yet: no sweeper params
        return []
    return [str(k) for k in params] if isinstance(params, DictConfig) else []


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

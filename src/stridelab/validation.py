"""Config validation before any work: the keys users set, their types and ranges, in one table.

:func:`validate_config` checks a composed config against :data:`RULES` (about a millisecond, no
torch) and raises one :class:`~stridelab.errors.ConfigError` that names every bad key, its value and
what it may be. Hydra refuses a misspelt key before stridelab's code runs; :func:`hydra_cli` turns
that refusal (and a run folder Hydra cannot create) into a ``stridelab: error:`` with the keys that
were probably meant. ``train.run``, ``study --dry-run`` and ``evaluate`` call these first.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import sys
import traceback
from dataclasses import dataclass, field

from omegaconf import DictConfig, ListConfig, OmegaConf

from stridelab.config import CONFIG_DIR
from stridelab.errors import ConfigError, StridelabError

INT, NUMBER, BOOL, CHOICE, INT_LIST, DEVICES = "int", "number", "bool", "choice", "int list", "devices"

# trainer.precision: Lightning's values (lightning.fabric.plugins.precision) and stridelab's "fast".
PRECISIONS = (
    "fast",
    "32-true",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    "32",
    "16",
    "64",
    "bf16",
    32,
    16,
    64,
)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")


@dataclass(frozen=True)
class Rule:
    """A key's valid values: ``kind`` with ``low <= value <= high`` (``open_low`` / ``open_high``
    make a bound strict) or one of ``choices``, and the ``special`` values allowed besides, each with
    what it means (``{None: "all of them"}`` allows null). ``means`` says what the value is."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    means: str = ""
    special: dict = field(default_factory=dict)
    choices: tuple = ()
    open_low: bool = False
    open_high: bool = False


# The keys users set, written once. Keys a config does not have (optimizer.momentum under adamw) are
# skipped; choices that live with their code (padding modes, metrics.skip, crop fills) are checked there.
RULES = (
    Rule("seed", INT, 0, 2**32 - 1, "model init, data order and augmentation"),
    Rule("trainer.max_epochs", INT, 1, means="epochs to train", special={-1: "no epoch limit: set trainer.max_steps"}),
    Rule("trainer.max_steps", INT, 1, means="optimiser steps to train", special={-1: "no step limit"}),
    Rule("trainer.precision", CHOICE, choices=PRECISIONS),
    Rule("trainer.accelerator", CHOICE, choices=ACCELERATORS),
    Rule("trainer.devices", DEVICES),
    Rule("trainer.log_every_n_steps", INT, 0),
    Rule("trainer.check_val_every_n_epoch", INT, 1, special={None: "validate only at the end"}),
    Rule("trainer.num_sanity_val_steps", INT, 0, special={-1: "the whole validation set"}),
    Rule("trainer.gradient_clip_val", NUMBER, 0, special={None: "no clipping"}),
    Rule("trainer.accumulate_grad_batches", INT, 1),
    Rule("data.batch_size", INT, 1, means="training images per step"),
    Rule("data.eval_batch_size", INT, 1, means="images per evaluation batch"),
    Rule("data.limit_train", INT, 1, means="train on the first N training images", special={None: "all of them"}),
    Rule("data.limit_test", INT, 1, means="test on the first N images of each test set", special={None: "all of them"}),
    Rule("data.val_size", INT, 0, means="images held out for validation (0: none)", special={None: "none"}),
    Rule("data.train_size", INT, 1, means="images generated for training", special={None: "the data set's default"}),
    Rule("data.test_size", INT, 1, means="images generated for testing", special={None: "the data set's default"}),
    Rule("data.data_seed", INT, 0, 2**32 - 1),
    Rule("data.split_seed", INT, 0, 2**32 - 1),
    Rule("data.crop_padding", INT, 0, means="pixels of random translation"),
    Rule("data.augment", BOOL),
    Rule("data.flip", BOOL),
    Rule("data.normalize", BOOL),
    Rule("data.download", BOOL),
    Rule("data.test_train", BOOL),
    Rule("metrics.subset_size", INT, 1, means="test images the suite measures", special={None: "all of them"}),
    Rule("metrics.subset_seed", INT, 0, 2**32 - 1),
    Rule("metrics.batch_size", INT, 1),
    Rule("metrics.inference_batch", INT, 1),
    Rule("metrics.max_shift", INT, 0, means="pixels of circular shift"),
    Rule("metrics.crop_padding", INT, 0),
    Rule("metrics.border_band", INT, 1),
    Rule("metrics.warmup_steps", INT, 0),
    Rule("metrics.timing_seconds", NUMBER, 0),
    Rule("metrics.probe_ridge", NUMBER, 0),
    Rule("optimizer.lr", NUMBER, 0, means="learning rate", open_low=True),
    Rule("optimizer.weight_decay", NUMBER, 0),
    Rule("optimizer.momentum", NUMBER, 0, 1, open_high=True),
    Rule("optimizer.nesterov", BOOL),
    Rule("optimizer.rho", NUMBER, 0, 1),
    Rule("optimizer.eps", NUMBER, 0, open_low=True),
    Rule("scheduler.warmup_frac", NUMBER, 0, 1, "share of the steps spent warming up"),
    Rule("scheduler.peak_frac", NUMBER, 0, 1, "share of the steps before the peak"),
    Rule("scheduler.start_frac", NUMBER, 0, 1, "starting lr as a share of optimizer.lr"),
    Rule("scheduler.final_frac", NUMBER, 0, 1, "final lr as a share of optimizer.lr"),
    Rule("module.label_smoothing", NUMBER, 0, 1),
    Rule("module.compile", BOOL),
    Rule("module.channels_last", BOOL),
    Rule(
        "module.diverge_factor",
        NUMBER,
        0,
        means="times ln(classes) an epoch's training loss may reach",
        special={None: "only a non-finite loss counts"},
        open_low=True,
    ),
    Rule("model.width", INT, 1, means="channels of the first stage"),
    Rule("model.stages", INT, 1),
    Rule("model.depth", INT, 1),
    Rule("model.width_mult", NUMBER, 0, open_low=True),
    Rule("model.widths", INT_LIST, 1, means="channels per stage", special={None: "from model.width"}),
    Rule("model.stem_width", INT, 1, special={None: "model.width"}),
    Rule("model.pool_size", INT, 1),
    Rule("model.dropout", NUMBER, 0, 1, open_high=True),
    Rule("model.dropout_input", NUMBER, 0, 1, open_high=True),
    Rule("downsample.filter_size", INT, 1, means="taps of the blur filter"),
    Rule("downsample.kernel_size", INT, 1),
    Rule("downsample.pool_size", INT, 1, special={None: "the model's own window"}),
    Rule("downsample.hidden", INT, 1, special={None: "the map's own channels"}),
    Rule("downsample.tau_start", NUMBER, 0, open_low=True),
    Rule("downsample.tau_end", NUMBER, 0, open_low=True),
    Rule("save_weights", BOOL),
    Rule("resume", BOOL),
    Rule(
        "checkpoint.every_n_epochs",
        INT,
        0,
        means="epochs between checkpoints (0: only on a stop signal)",
        special={None: "never"},
    ),
    Rule("checkpoint.keep", BOOL),
    Rule("checkpoint.keep_previous", BOOL),
)


def validate_config(cfg: DictConfig, prefix: str = "", fix: str | None = None) -> DictConfig:
    """Check every key of :data:`RULES` (under ``prefix``, e.g. ``"metrics."``) that ``cfg`` has;
    raise one ConfigError naming each bad key, its value and its valid values, and ending with
    ``fix`` (what to do; by default, set them on the command line or in the config). Returns ``cfg``."""
    problems = [p for rule in RULES if rule.key.startswith(prefix) for p in [_problem(cfg, rule)] if p]
    try:
        missing = sorted(k for k in OmegaConf.missing_keys(cfg) if k.startswith(prefix) and not k.startswith("hydra."))
    except Exception:  # a broken interpolation: the rules above name it
        missing = []
    problems += [(key, "it is required and has no value (???)") for key in missing]
    epochs, steps = OmegaConf.select(cfg, "trainer.max_epochs"), OmegaConf.select(cfg, "trainer.max_steps")
    if not problems and not prefix and epochs == -1 and steps in (None, -1):
        problems.append(("trainer.max_epochs=-1", "it needs trainer.max_steps >= 1, or the run never ends"))
    if not problems:
        return cfg
    if len(problems) == 1:
        (subject, why), them = problems[0], "it"
        text = f"{subject} is not valid: {why}."
    else:
        them = "them"
        text = f"{len(problems)} config values are not valid. " + " ".join(f"{s}: {w}." for s, w in problems)
    raise ConfigError(f"{text} {fix or f'Set {them} on the command line or in the config file that sets {them}.'}")


def describe(rule: Rule) -> str:
    """What ``rule`` allows, in words: ``an integer >= 1 (train on ...), or null (all of them)``."""
    if rule.kind == BOOL:
        text = "true or false"
    elif rule.kind == CHOICE:
        text = "one of " + ", ".join(dict.fromkeys(map(str, rule.choices)))
    elif rule.kind == DEVICES:
        text = "a number of devices >= 1, -1 (all), auto, or a list of device indices such as [0,1]"
    else:
        noun = {INT: "an integer", NUMBER: "a number", INT_LIST: "a list of integers"}[rule.kind]
        text = noun + _range(rule) + (f" ({rule.means})" if rule.means else "")
    extra = [f"{_show(v)} ({meaning})" for v, meaning in rule.special.items()]
    return ", ".join([text, *extra[:-1]]) + (f", or {extra[-1]}" if extra else "")


def _range(rule: Rule) -> str:
    if rule.low is not None and rule.high is not None:
        if rule.kind == INT:
            return f" from {rule.low} to {rule.high}"
        return f" in {'(' if rule.open_low else '['}{rule.low}, {rule.high}{')' if rule.open_high else ']'}"
    if rule.low is not None:
        return f" {'>' if rule.open_low else '>='} {rule.low}"
    return ""


def _problem(cfg: DictConfig, rule: Rule) -> tuple[str, str] | None:
    """``("key=value", "it is a string; it must be ...")`` when ``cfg`` has the key with a bad value."""
    parent, _, leaf = rule.key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if not isinstance(node, DictConfig) or leaf not in node:
        return None
    try:
        value = OmegaConf.select(cfg, rule.key, throw_on_missing=True)
    except Exception as err:  # an interpolation that does not resolve, or ???
        return rule.key, f"it cannot be read ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
    if _fits(rule, value):
        return None
    typed = {INT: (int,), NUMBER: (int, float), BOOL: (bool,), INT_LIST: (ListConfig,)}.get(rule.kind)
    wrong_type = typed is not None and (not isinstance(value, typed) or (rule.kind != BOOL and isinstance(value, bool)))
    why = f"it must be {describe(rule)}"
    return f"{rule.key}={_show(value)}", f"it is {_kind_of(value)}; {why}" if wrong_type else why


def _fits(rule: Rule, value) -> bool:
    if any(value == v and type(value) is type(v) for v in rule.special):
        return True
    if rule.kind == BOOL:
        return isinstance(value, bool)
    if rule.kind == CHOICE:
        return any(value == c and type(value) is type(c) for c in rule.choices)
    if rule.kind == DEVICES:
        return _devices_fit(value)
    if rule.kind == INT_LIST:
        items = OmegaConf.to_container(value) if isinstance(value, ListConfig) else None
        return bool(items) and all(_number_fits(rule, v, integer=True) for v in items)
    return _number_fits(rule, value, integer=rule.kind == INT)


def _number_fits(rule: Rule, value, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not math.isfinite(value):
        return False
    if rule.low is not None and (value < rule.low or (rule.open_low and value == rule.low)):
        return False
    return rule.high is None or value < rule.high or (not rule.open_high and value == rule.high)


def _devices_fit(value) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 1 or value == -1
    if isinstance(value, str):
        return value == "auto" or re.fullmatch(r"-1|\d+(,\d*)*", value.replace(" ", "")) is not None
    if isinstance(value, ListConfig):
        items = OmegaConf.to_container(value)
        return bool(items) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items)
    return False


def _kind_of(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    names = {bool: "a boolean", int: "an integer", float: "a decimal number", str: "a string"}
    names.update({ListConfig: "a list", DictConfig: "a mapping"})
    return names.get(type(value), f"a {type(value).__name__}")


def _show(value) -> str:
    """A value as it is written in an override: ``abc``, ``null``, ``true``, ``[1, 2]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (ListConfig, DictConfig)):
        return str(OmegaConf.to_container(value)).replace(" ", "")
    return str(value)


# Mistyped keys ------------------------------------------------------------------------------------
def dotted_keys(node, prefix: str = "") -> list[str]:
    """Every key under ``node`` as a dotted path (``trainer``, ``trainer.max_epochs``, ...)."""
    plain = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    keys = []
    for k, v in (plain or {}).items() if isinstance(plain, dict) else ():
        path = f"{prefix}{k}"
        keys.append(path)
        if isinstance(v, dict) and k != "hydra":
            keys += dotted_keys(v, f"{path}.")
    return keys


def close_keys(wanted: str, keys: list[str], n: int = 3) -> list[str]:
    """The keys ``wanted`` probably meant: a sibling with a close name (``trainer.max_epochs`` for
    ``trainer.max_epoch``); where the part before the name is wrong, the same name elsewhere
    (``trainer.max_epochs`` for ``max_epochs``) or a close key of the same depth (for ``traner.max_epochs``)."""
    parent, _, leaf = wanted.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent and k != wanted}
    found = [siblings[name] for name in _closest(leaf, list(siblings), 0.6)]
    if not parent or not siblings:  # the part before the name is missing or wrong
        found += [k for k in keys if k.rpartition(".")[2] == leaf and k != wanted]
    if not siblings and not found:
        found = _closest(wanted, [k for k in keys if k.count(".") == wanted.count(".")], 0.7)
    return list(dict.fromkeys(found))[:n]


def _closest(word: str, options: list[str], cutoff: float) -> list[str]:
    """difflib's matches of ``word`` that score within 0.05 of the best one."""
    scored = sorted(((difflib.SequenceMatcher(None, word, o).ratio(), o) for o in options), reverse=True)
    return [o for r, o in scored if r >= cutoff and r >= scored[0][0] - 0.05]


def unknown_key_error(wanted: str, keys: list[str], value: str | None = None, add_hint: bool = True) -> ConfigError:
    """The ConfigError for a key the config does not have: the keys probably meant and, with
    ``add_hint``, Hydra's ``+key=value`` for adding a key on purpose."""
    matches = close_keys(wanted, keys)
    assign = "" if value is None else f"={value}"
    text = f"{wanted} is not a key of the config."
    if matches:
        text += f" Did you mean {' or '.join(matches)}? Correct the spelling ({matches[0]}{assign})"
    else:
        parent = wanted.rpartition(".")[0]
        known = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent and "._" not in f".{k}"]
        text += f" The keys under {parent or 'the top level'} are: {', '.join(known)}" if known else " Check it"
    if add_hint:
        text += f"; to add a new key on purpose, write +{wanted}{assign}"
        return ConfigError(text + ". `python -m stridelab.train --cfg job` prints every key.")
    return ConfigError(text + ".")


# Where a run's free metadata goes: nothing reads these keys, so a key added under them is not refused.
FREE_KEYS = ("tags", "notes")


def check_added_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse a key added with ``+key=value`` (or ``++``) that no part of the run reads: a typo such
    as ``+optimzer.lr=0.1`` would otherwise train at the default rate and exit 0. A key is read when
    it lies under a node built with ``_target_`` (its constructor refuses what it does not take, see
    :func:`stridelab.build.instantiate_checked`), when an interpolation refers to it (``+my_lr=0.1
    optimizer.lr=${my_lr}``), or under :data:`FREE_KEYS`. Config groups (``+experiment=smoke``) and
    ``hydra.*`` keys are Hydra's own and left alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # Hydra parsed them already to compose cfg; nothing to add here
        return
    plain = OmegaConf.to_container(cfg, resolve=False)
    text = str(plain)
    added = [o for o in parsed if (o.is_add() or o.is_force_add()) and o.package is None]
    for o in added:
        key = o.key_or_group
        first = key.split(".")[0]
        if key in groups or first in ("hydra", *FREE_KEYS) or _built_above(plain, key):  # key in groups: +group=option
            continue
        if re.search(r"\$\{" + re.escape(key) + r"[}.\[]", text):
            continue
        keys = [k for k in dotted_keys(cfg) if k != key and not k.startswith(key + ".")]
        matches = close_keys(key, keys)
        value = o.input_line.partition("=")[2]
        hint = f"Did you mean {' or '.join(matches)}? Write {matches[0]}={value}" if matches else "Remove it"
        raise ConfigError(
            f"+{key}={value} adds a key that no part of the run reads: the run would train as if it were not "
            f"there. {hint}. A note to keep with the run goes under tags (+tags.<name>=<value>) or in "
            'notes="...": both are saved in its config.yaml and read by nothing.'
        )


def _built_above(plain: dict, key: str) -> bool:
    """Whether a node above ``key`` is built with ``_target_`` (its constructor then sees the key)."""
    node = plain
    for part in key.split(".")[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and "_target_" in node:
            return True
    return False


def composition_error(err: BaseException) -> ConfigError | None:
    """Hydra's "Could not override 'trainer.max_epoch' ... not in struct" as a ConfigError with the
    keys that were probably meant, and "Could not find 'downsample/nope'" with the group's options;
    None for other composition errors."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        if group:
            options = sorted(str(o) for o in err.options)
            near = _closest(option, options, 0.6)
            return ConfigError(
                f"{group}={option} is not an option of {group}"
                + (f" (did you mean {group}={near[0]}?)" if near else "")
                + f". Its options are: {', '.join(options)} (the files in configs/{group}/). Pick one of "
                f"them, for example {group}={near[0] if near else options[0]}."
            )
    cause = err.__cause__  # "Key 'max_epoch' is not in struct", or "not in 'RunDir'" (Hydra's own schema)
    if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or not re.match(
        r"Key '.*' (is )?not in", str(cause)
    ):
        return None
    message = str(err)
    wanted = re.search(r"Could not override '([^']+)'", message)
    wanted = wanted.group(1) if wanted else str(getattr(cause, "full_key", "") or "")
    if not wanted:
        return None
    line = re.search(r"use \+(\S+)", message)
    value = line.group(1).partition("=")[2] if line and "=" in line.group(1) else None
    full_key = str(getattr(cause, "full_key", "") or wanted)
    base = full_key.rpartition(".")[0]  # the node that lacks the key
    parent = getattr(cause, "parent_node", None)
    keys = [f"{base}.{k}" if base else k for k in dotted_keys(parent)] if parent is not None else []
    return unknown_key_error(wanted, keys, value)


def _raised_in(err: BaseException, code) -> bool:
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def _output_folder_error(err: OSError) -> ConfigError:
    return ConfigError(
        f"Cannot create or write {err.filename} ({err.strerror or type(err).__name__}): Hydra puts each run's "
        "folder at hydra.run.dir (hydra.sweep.dir with -m), by default in logs/ under the folder you launch from "
        "or under STRIDELAB_ROOT. Point it at a folder you can write (for example hydra.run.dir=/tmp/my_run), "
        "or launch from one. Nothing was run."
    )


def _explained(func, task_code):
    """Run Hydra's ``func``; a misspelt key, a run folder that cannot be created (before the task
    starts) or a launcher's refusal of its settings (``launcher=packed``) end with ``stridelab: error:``
    and status 2, anything else goes on to Hydra's report."""
    from hydra.errors import ConfigCompositionException

    try:
        return func()
    except (ConfigCompositionException, OSError, StridelabError) as err:
        if isinstance(err, StridelabError):  # the task reports its own; this one came from a launcher
            problem = str(err)
        elif isinstance(err, ConfigCompositionException):
            problem = composition_error(err)
        elif err.filename is not None and not _raised_in(err, task_code):
            problem = _output_folder_error(err)
        else:
            problem = None
        if problem is None:
            raise
        print(f"\nstridelab: error: {problem}\n", file=sys.stderr)
        if os.environ.get("STRIDELAB_TRACEBACK"):
            traceback.print_exc()
        sys.exit(2)


def hydra_cli(hydra_main):
    """Decorate a ``@hydra.main`` function so that Hydra's refusals users cause (a misspelt key,
    an output folder that cannot be created) read as stridelab's errors, with a "did you mean".

    Hydra reports its errors itself and exits (``hydra._internal.utils.run_and_report``); while the
    app runs, that reporter is given a function that explains these two first."""
    task_code = getattr(hydra_main, "__wrapped__", hydra_main).__code__

    @functools.wraps(hydra_main)
    def cli(*args, **kwargs):
        import hydra._internal.utils as hydra_utils

        report = getattr(hydra_utils, "run_and_report", None)
        if report is None or args or kwargs:  # another Hydra, or called with a config: as it is
            return hydra_main(*args, **kwargs)
        hydra_utils.run_and_report = lambda func: report(functools.partial(_explained, func, task_code))
        try:
            return hydra_main()
        finally:
            hydra_utils.run_and_report = report

    return cli

"""Measure a trained model again, without training: ``python -m stridelab.evaluate ckpt=RUN_DIR/model.pt``.

The run's ``config.yaml`` (next to the weights) rebuilds the data and the model; the weights are
loaded with ``torch.load(weights_only=True)``; the measurement suite runs and its figures are merged
into the run's ``metrics.json`` (atomically; training and test figures are kept), with the plots and
``padding_audit.md`` rewritten and the figures logged to ``RUN_DIR/tensorboard/evaluate``. A
``metrics.json`` that cannot be read, weights that are not a plain state_dict and a misspelt or bad
knob are refused before anything is measured; a copied run folder is measured where it now is.

Options (``key=value``): ``ckpt=`` (the weights, or the run folder), ``device=auto|cpu|cuda``,
``precision=fast|32-true|bf16-mixed|...``, and any ``metrics.<knob>=value`` of configs/metrics.
"""

from __future__ import annotations

import json
import pickle
import re
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from stridelab.config import CONFIG_DIR, register_resolvers, resolve_precision
from stridelab.errors import ConfigError, DataError, StridelabError, choose
from stridelab.validation import PRECISIONS, dotted_keys, unknown_key_error, validate_config

USAGE = (
    "usage: python -m stridelab.evaluate ckpt=RUN_DIR/model.pt [device=auto|cpu|cuda] "
    "[precision=fast|32-true|bf16-mixed] [metrics.subset_size=N ...]"
)


def parse_args(argv: list[str]) -> dict:
    opts = {"ckpt": None, "device": "auto", "precision": "fast"}
    metrics = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise ConfigError(f"'{arg}' is not a key=value option. {USAGE}")
        if key.startswith("metrics."):
            metrics.append(arg)
        elif key in opts:
            opts[key] = value
        else:
            raise ConfigError(f"Unknown option '{key}'. {USAGE}")
    if not opts["ckpt"]:
        raise ConfigError(f"Say which weights to measure with ckpt=. {USAGE}")
    opts["metrics"] = metrics
    return opts


def _locate(ckpt: str) -> tuple[Path, Path]:
    path = Path(ckpt).expanduser()
    weights = path / "model.pt" if path.is_dir() else path
    run_dir = weights.parent
    if not weights.is_file():
        raise DataError(
            f"No weights at {weights}. Pass ckpt= the model.pt of a finished run (runs write it "
            "unless save_weights=false), or its run folder."
        )
    if not (run_dir / "config.yaml").is_file():
        raise DataError(
            f"No config.yaml next to {weights}: the model cannot be rebuilt without the run's "
            "config. Keep model.pt inside the run folder stridelab.train wrote."
        )
    return weights, run_dir


def _read_previous(path: Path) -> dict:
    """The run's metrics.json, read before anything is measured (a missing one: a fresh start)."""
    if not path.exists():
        return {"status": "ok"}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
    except (OSError, ValueError) as err:
        raise DataError(
            f"{path} cannot be read ({type(err).__name__}: {err}), so the new figures cannot be merged into it; "
            "nothing was measured. Restore the file (it holds the run's training and test figures), or move it "
            "away to have evaluate write a new metrics.json with the suite's figures only."
        ) from None
    return data


def metrics_config(run_metrics, overrides: list[str]) -> DictConfig:
    """The suite's knobs: configs/metrics/default.yaml, then the run's, then ``metrics.<knob>=value``
    overrides; a misspelt knob or a bad value is refused (stridelab.validation)."""
    base = OmegaConf.load(CONFIG_DIR / "metrics" / "default.yaml")
    knobs = [f"metrics.{k}" for k in dotted_keys(base) if not k.startswith("_")]
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key.split(".")[1] not in base:
            raise unknown_key_error(key, knobs, value, add_hint=False)
    merged = OmegaConf.merge(base, run_metrics or {}, OmegaConf.from_dotlist(list(overrides)).get("metrics", {}))
    fix = "Give a valid value with metrics.<knob>=value (the run's own values are in its config.yaml)."
    validate_config(OmegaConf.create({"metrics": merged}), prefix="metrics.", fix=fix)
    return merged


def _load_state(weights: Path) -> dict:
    """The weights as tensors only (``weights_only=True``); anything else is refused."""
    import torch

    try:
        return torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        raise DataError(
            f"{weights} is not a plain state_dict: it holds pickled Python objects"
            f"{f' ({found.group(1)})' if found else ''} besides tensors, which could run code when loaded, so "
            "stridelab refuses it. Use the model.pt that stridelab.train wrote for this run (a state_dict of "
            "tensors), or train the run again."
        ) from None
    except Exception as err:
        first_line = (str(err).splitlines() or [""])[0]
        raise DataError(
            f"{weights} cannot be read as weights ({type(err).__name__}: {first_line}). It must be the state_dict "
            "the run wrote; was the file replaced or cut short? Train the run again to get it."
        ) from None


def evaluate(ckpt: str, device: str = "auto", precision: str = "fast", metric_overrides: list[str] = ()) -> dict:
    """Rebuild, load and measure; returns the updated metrics of the run."""
    weights, run_dir = _locate(ckpt)
    metrics_path = run_dir / "metrics.json"
    previous = _read_previous(metrics_path)
    register_resolvers()
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.metrics = metrics_config(cfg.get("metrics"), list(metric_overrides))
    choose("precision", precision, map(str, PRECISIONS))
    import torch

    from stridelab.build import build_data_and_model, check_data_on_disk, instantiate_checked
    from stridelab.metrics.suite import SUITE_PREFIXES
    from stridelab.training.results import RunResults

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    state = _load_state(weights)
    check_data_on_disk(cfg.data)
    datamodule, model = build_data_and_model(cfg)
    suite = instantiate_checked(cfg.metrics)
    suite.check_input(datamodule.input_shape)
    try:
        model.load_state_dict(state)
    except Exception as err:
        raise DataError(
            f"{weights} does not hold this run's weights ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}). It must be the state_dict the run wrote; was the file "
            "replaced or the config edited?"
        ) from None
    model.to(device)
    if cfg.get("module", {}).get("channels_last", True):
        model.to(memory_format=torch.channels_last)
    precision = resolve_precision(precision)
    t0 = time.perf_counter()
    measurement = suite.measure(model, datamodule, device=device, precision=precision)
    results = RunResults(metrics_path)
    results.data = previous
    fresh = dict(measurement.metrics)
    keep = set()
    if results.data.get("cost/train_from") == "fit":  # the real run's timing beats a probe's
        keep |= {"cost/train_images_per_s", "cost/train_from", "cost/train_timed_steps"}
    if results.data.get("cost/infer_from") == "fit":
        keep |= {"cost/infer_images_per_s", "cost/infer_from", "cost/infer_batch"}
    for key in keep:
        fresh.pop(key, None)
    # The previous measurement goes entirely (other knobs may have written other keys).
    results.data = {
        k: v for k, v in results.data.items() if k in keep or k.split("/")[0] not in (*SUITE_PREFIXES, "evaluate")
    }
    results.update(
        fresh,
        **{
            "evaluate/device": str(device),
            "evaluate/precision": precision,
            "evaluate/seconds": time.perf_counter() - t0,
            "run_dir": str(run_dir.absolute()),  # where the files are now (a copied run's folder too)
        },
    )
    results.write()
    measurement.save(run_dir)
    try:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(run_dir / "tensorboard" / "evaluate")) as writer:
            measurement.log_tensorboard(writer)
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        pass
    return results.data


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        opts = parse_args(argv)
        data = evaluate(opts["ckpt"], opts["device"], opts["precision"], opts["metrics"])
    except StridelabError as err:
        print(f"\nstridelab: error: {err}\n", file=sys.stderr)
        return 2
    keys = (
        "shift/circular_consistency",
        "shift/circular_logit_change",
        "crop/consistency",
        "border/deviation",
        "audit/uneven_layers",
        "coverage/interior_ratio",
        "position/gap",
        "probe/spc",
        "cost/infer_images_per_s",
    )
    print("stridelab: " + "  ".join(f"{k}={data[k]:.4g}" for k in keys if isinstance(data.get(k), (int, float))))
    print(f"stridelab: measurements merged into {Path(data['run_dir']) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

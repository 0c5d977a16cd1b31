"""The benchmark run: generated CIFAR-shaped data, the three paths interleaved, run costs, bars.

Data: a stand-in of CIFAR-10 (random images and labels, 50000 + 10000 by default) written in the
official binary format into a temporary folder and read by the real ``data=cifar10`` module; the
torchvision baseline gets the same training images. Nothing touches the network.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stridelab.config import CONFIG_DIR, register_resolvers, resolve_precision
from stridelab.errors import ConfigError

# Overrides of the train config per preset; the data are always the generated CIFAR-10 stand-in.
PRESETS = {
    # A small CNN (the default simple_cnn at width 8): steps of ~150 ms at batch 256 on 2 cores, where
    # the data pipeline and the harness's per-step work are most visible. The bars apply to it.
    "cpu": ["trainer=cpu", "model.width=8"],
    # The default CIFAR-10 model and settings on a GPU (bf16-mixed, cudnn benchmark, batch 256).
    "gpu": ["trainer=gpu"],
    # The airbench94-sized network (configs/experiment/airbench_sized.yaml), batch 1024.
    "airbench": ["trainer=gpu", "experiment=airbench_sized"],
}


@dataclass
class BenchOptions:
    preset: str = "auto"  # cpu | gpu | airbench; auto: gpu when CUDA is available, else cpu
    overrides: list[str] = field(default_factory=list)
    repeats: int = 10
    steps: int = 30
    warmup: int = 5
    block: int = 5  # bare and stridelab steps alternate in blocks of this many
    workers: list[int] | None = None  # DataLoader workers for the torchvision path (None: 0 and all cores)
    # The torchvision baseline runs in the first this-many repeats only: it is 2-3x slower per step and
    # far from its bar, while stridelab / bare is a few percent from its bar and needs every repeat.
    baseline_repeats: int = 3
    train_size: int = 50000
    test_size: int = 10000
    run_costs: bool = True  # the fixed cost of a run in a sweep
    demo: bool = True  # the suite's share of a standard demo run (about a minute on 2 CPU cores)
    quick: bool = False  # tiny sizes: checks the machinery, the figures mean nothing


def quick_options(**changes) -> BenchOptions:
    """Tiny sizes for the smoke test: seconds, not minutes."""
    base = dict(
        repeats=1,
        steps=2,
        warmup=1,
        workers=[0],
        baseline_repeats=1,
        train_size=640,
        test_size=256,
        quick=True,
        overrides=["data.batch_size=64", "data.val_size=128", "data.eval_batch_size=128", "metrics=quick"],
    )
    base.update(changes)
    return BenchOptions(**base)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def machine() -> dict:
    import lightning
    import torch

    from stridelab.training.sharing import available_cores

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return info


def _progress(msg: str) -> None:
    print(f"stridelab bench: {msg}", flush=True)


def _summary(timings: list) -> dict:
    ips = [t.images_per_s for t in timings]
    return {
        "images_per_s": statistics.median(ips),
        "images_per_s_repeats": ips,
        "step_ms": 1000 * statistics.median(t.seconds / t.steps for t in timings),
        # The first repeat's: a cold start. With module.compile=true it holds the compile time;
        # later repeats (and paths timed after it) reuse the process's compiled code.
        "first_step_s": timings[0].first_step_s,
        "first_step_s_repeats": [t.first_step_s for t in timings],
        "setup_s": statistics.median(t.setup_s for t in timings),
        "timed_steps": timings[0].steps,
        **_syncs(timings),
    }


def _syncs(timings: list) -> dict:
    """Host waits for the GPU inside a training step, from the CUDA sync debug mode (stridelab, CUDA)."""
    counted = [t.extra for t in timings if "syncs_per_step" in t.extra]
    if not counted:
        return {}
    return {
        "syncs_per_step": statistics.median(e["syncs_per_step"] for e in counted),
        "sync_sites": sorted({site for e in counted for site in e["sync_sites"]}),
    }


def run_benchmark(opts: BenchOptions) -> dict:
    """Everything ``make bench`` reports, as one dict (also the JSON file's content)."""
    import torch
    from hydra.utils import instantiate

    from stridelab.bench import paths
    from stridelab.bench.runs import run_cost
    from stridelab.build import build_data_and_model
    from stridelab.data import cifar10
    from stridelab.metrics import cost
    from stridelab.metrics.inference import autocast_dtype
    from stridelab.training.sharing import available_cores, take_share

    preset = opts.preset if opts.preset != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    if preset not in PRESETS:
        raise ConfigError(f"unknown bench preset {preset!r}: choose one of {', '.join(PRESETS)} (or auto).")
    if preset != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"--preset {preset} needs a CUDA GPU and this machine has none; use --preset cpu.")
    table = read_bars()  # before minutes of timing: a broken table fails now
    workers = opts.workers if opts.workers is not None else sorted({0, available_cores()})
    take_share("cpu" if preset == "cpu" else "gpu")

    with tempfile.TemporaryDirectory(prefix="stridelab-bench-") as tmp:
        tmp = Path(tmp)
        _progress(f"writing a generated CIFAR-10 stand-in ({opts.train_size} + {opts.test_size} images) ...")
        cifar10.write_generated(tmp / "cifar10", opts.train_size, opts.test_size)
        counter = iter(range(10**6))

        def config(extra: list[str]):
            return compose(
                [
                    "data=cifar10",
                    f"data.root={tmp / 'cifar10'}",
                    "data.download=false",
                    f"paths.root_dir={tmp}",
                    f"paths.output_dir={tmp / f'run{next(counter)}'}",
                    *PRESETS[preset],
                    *opts.overrides,
                    *extra,
                ]
            )

        cfg = config([])
        datamodule, model = build_data_and_model(cfg)
        splits = datamodule.load()
        device = torch.device("cuda" if preset != "cpu" else "cpu")
        precision = str(resolve_precision(cfg.trainer.get("precision", "fast")))
        amp = autocast_dtype(precision)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark", True))
        batch = datamodule.batch_size
        channels_last, compile_model = bool(cfg.module.channels_last), bool(cfg.module.compile)
        images = datamodule.model_inputs(splits.train[0][:batch], device)
        labels = torch.from_numpy(splits.train[1][:batch]).to(device)
        optimizer = instantiate(cfg.optimizer)
        train_x, train_y = cifar10.load_cifar10(tmp / "cifar10", download_if_missing=False)[0]
        dataset = paths.torchvision_dataset(train_x, train_y, datamodule.mean, datamodule.std)
        common = dict(amp_dtype=amp, channels_last=channels_last, compile=compile_model)

        def paired():
            step, setup = paths.bare_step(model, optimizer, images, labels, **common)
            bare = paths.BareBlocks(step, len(labels), device, opts.warmup)
            fit = paths.stridelab_path(cfg, opts.steps, opts.warmup, bare=bare, block=opts.block)
            bare.timing.setup_s = setup
            return {"bare": bare.timing, "stridelab": fit}

        runners = {"bare+stridelab": paired}
        for w in workers:
            runners[f"torchvision_w{w}"] = lambda w=w: {
                f"torchvision_w{w}": paths.torchvision_loader(
                    model, optimizer, dataset, batch, w, device, opts.steps, opts.warmup, **common
                )
            }
        timings: dict[str, list] = {"bare": [], "stridelab": [], **{f"torchvision_w{w}": [] for w in workers}}
        names = list(runners)
        for r in range(opts.repeats):
            # The bare loop and stridelab alternate in blocks within one fit (the host's speed drifts
            # by 10-20% over seconds); the baselines run after them, rotating, in the first
            # baseline_repeats repeats. Ratios are medians of per-repeat ratios.
            baselines = names[1:] if r < opts.baseline_repeats else []
            k = r % max(len(baselines), 1)
            order = names[:1] + baselines[k:] + baselines[:k]
            for name in order:
                for path, t in runners[name]().items():
                    timings[path].append(t)
                    _progress(f"repeat {r + 1}/{opts.repeats}  {path:<16} {t.images_per_s:10.0f} images/s")

        result = {
            "machine": machine(),
            "preset": preset,
            "quick": opts.quick,
            "overrides": [*PRESETS[preset], *opts.overrides],
            "setup": {
                "model": cfg.model._target_.rsplit(".", 1)[-1],
                "batch_size": batch,
                "device": str(device),
                "precision": precision,
                "channels_last": channels_last,
                "compile": compile_model,
                "steps": opts.steps,
                "warmup": opts.warmup,
                "repeats": opts.repeats,
                "block": opts.block,
                "baseline_repeats": min(opts.baseline_repeats, opts.repeats),
                "workers": workers,
                "train_flops_per_image": cost.count_flops(model, datamodule.input_shape, train=True),
            },
            "paths": {name: _summary(ts) for name, ts in timings.items()},
        }
        peak = cost.device_peak_flops(device, precision)
        if peak is not None:
            result["setup"]["peak_flops"], result["setup"]["peak_flops_source"] = peak
            for p in result["paths"].values():
                p["mfu"] = p["images_per_s"] * result["setup"]["train_flops_per_image"] / peak[0]
        result["ratios"] = _ratios(timings)
        for name, ts in timings.items():
            result["paths"][name]["vs_bare"] = statistics.median(
                x.images_per_s / y.images_per_s for x, y in zip(ts, timings["bare"])
            )

        if opts.run_costs:
            result["run_cost"] = _run_costs(config, batch, opts)
        if opts.demo:
            demo = (
                ["experiment=smoke", "data.train_size=512", "data.test_size=256"]
                if opts.quick
                else ["experiment=shapes10_quick"]
            )
            _progress(f"a standard run ({demo[0]}) with the measurement suite ...")
            t0 = time.perf_counter()
            demo_cfg = compose([f"paths.root_dir={tmp}", f"paths.output_dir={tmp / 'demo'}", *demo])
            r = run_cost(demo_cfg, time.perf_counter() - t0)
            r["run"] = demo[0]
            r["suite_share"] = r["suite_s"] / max(r["total_s"] - r["suite_s"], 1e-9)
            result["suite_on_demo"] = r
    result["bars"] = bars(result, table)
    return result


def _run_costs(config, batch: int, opts: BenchOptions) -> dict:
    """Two short runs in this process, as in a sweep; the second is the one a sweep pays per run."""
    from stridelab.bench.runs import run_cost

    steps = max(2, opts.steps // 2)
    extra = ["trainer.max_epochs=1", f"data.limit_train={steps * batch}", f"data.limit_test={2 * batch}"]
    costs = []
    for i in range(2):
        _progress(f"fixed cost of a run: run {i + 1}/2 ({steps} training steps) ...")
        t0 = time.perf_counter()
        cfg = config(extra)
        costs.append(run_cost(cfg, time.perf_counter() - t0))
    return {**costs[1], "first_run_in_process": costs[0]}


def _ratios(timings: dict[str, list]) -> dict:
    """Medians over repeats of the per-repeat ratios (each repeat's paths ran minutes apart at most;
    a baseline, timed in the first repeats only, is paired with those)."""

    def ratio(a: str, b: str) -> float:
        return statistics.median(x.images_per_s / y.images_per_s for x, y in zip(timings[a], timings[b]))

    tv = {k: statistics.median(t.images_per_s for t in v) for k, v in timings.items() if k.startswith("torchvision")}
    best_tv = max(tv, key=tv.get)
    return {
        "stridelab_vs_bare": ratio("stridelab", "bare"),
        "stridelab_vs_bare_repeats": [
            x.images_per_s / y.images_per_s for x, y in zip(timings["stridelab"], timings["bare"])
        ],
        "torchvision_vs_bare": ratio(best_tv, "bare"),
        "torchvision_best": best_tv,
        "stridelab_vs_torchvision": ratio("stridelab", best_tv),
    }


PERFORMANCE_DOC = Path(__file__).resolve().parents[3] / "docs" / "performance.md"
_BAR_ROW = re.compile(
    r"^\|\s*(?P<name>[^|`]+?)\s*\|\s*`(?P<figure>[\w.]+)`\s*\|\s*(?P<device>cpu|cuda)\s*\|"
    r"\s*(?P<op>>=|<=)\s*(?P<threshold>[\d.]+)(?P<pct>%?)\s*\|\s*(?P<when>[^|]+?)\s*\|\s*$"
)
_WHEN = re.compile(r"^`(?P<figure>[\w.]+)`\s*(?P<op>>=|<=)\s*(?P<threshold>[\d.]+)$")


def read_bars(text: str | None = None) -> list[dict]:
    """The bars of docs/performance.md's "Bars" table (the one place their thresholds are written):
    one dict per row with ``name``, ``figure`` (a dotted key into the result), ``device``, ``op``,
    ``threshold`` (a fraction when the table says %), ``percent`` and ``when`` (None: always, or
    ``(figure, op, threshold)``)."""
    if text is None:
        try:
            text = PERFORMANCE_DOC.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"the benchmark reads its bars from {PERFORMANCE_DOC} and could not ({e.strerror or e}); "
                "run it from a checkout of the stridelab repository, which has docs/performance.md."
            ) from e
    section = text.split("\n## Bars", 1)[-1].split("\n## ", 1)[0] if "\n## Bars" in text else ""
    rows = []
    for line in section.splitlines():
        m = _BAR_ROW.match(line.strip())
        if not m:
            continue
        when = m["when"]
        if when != "always":
            w = _WHEN.match(when)
            if not w:
                raise ConfigError(
                    f"docs/performance.md, Bars table: cannot read the condition {when!r} of bar {m['name']!r}; "
                    "write 'always' or a figure, an operator and a number, e.g. `paths.bare.step_ms` >= 50."
                )
            when = (w["figure"], w["op"], float(w["threshold"]))
        else:
            when = None
        scale = 0.01 if m["pct"] else 1.0
        rows.append(
            dict(
                name=m["name"],
                figure=m["figure"],
                device=m["device"],
                op=m["op"],
                threshold=float(m["threshold"]) * scale,
                percent=bool(m["pct"]),
                when=when,
            )
        )
    if not rows:
        raise ConfigError(
            "docs/performance.md has no readable Bars table (a '## Bars' section with rows like "
            "'| stridelab / bare | `ratios.stridelab_vs_bare` | cpu | >= 0.95 | always |'); restore it from git."
        )
    return rows


def _figure(result: dict, dotted: str):
    value = result
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _holds(value: float, op: str, threshold: float) -> bool:
    return value >= threshold if op == ">=" else value <= threshold


def bars(result: dict, table: list[dict] | None = None) -> list[dict]:
    """The bars (:func:`read_bars`) for this result's device, each with its value and whether it is
    met; ``applies`` is false where the setup is outside the bar's conditions (a quick run, or a row's
    "applies when", e.g. CPU steps under 50 ms). A bar whose figure was not measured is left out."""
    device = "cuda" if result["setup"]["device"].startswith("cuda") else "cpu"
    out = []
    for b in read_bars() if table is None else table:
        value = _figure(result, b["figure"])
        if b["device"] != device or value is None:
            continue
        applies = not result["quick"]
        if b["when"] is not None:
            cond = _figure(result, b["when"][0])
            applies = applies and cond is not None and _holds(cond, *b["when"][1:])
        shown = f"{100 * b['threshold']:g}%" if b["percent"] else f"{b['threshold']:.2f}"
        out.append(
            {
                "bar": f"{b['name']} {b['op']} {shown}",
                "value": value,
                "met": _holds(value, b["op"], b["threshold"]),
                "applies": applies,
                "percent": b["percent"],
            }
        )
    return out


def as_json_ready(result: dict) -> dict:
    """Plain types only (for the JSON file)."""
    import json

    return json.loads(json.dumps(result, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)))


def default_out() -> Path:
    return Path(os.environ.get("STRIDELAB_ROOT", ".")) / "logs" / "bench" / "bench.json"

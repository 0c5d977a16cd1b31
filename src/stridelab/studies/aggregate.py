"""Aggregate a study: every run's ``metrics.json`` under a folder -> tables and plots in that folder.

Writes (each file atomically): ``results.csv`` (one row per run, failed ones included),
``summary.csv`` and ``summary.md`` (one row per variant: mean, std, 95% CI over seeds, number of
seeds), and ``plots/*.png``. A variant is identified by what varies across the study's runs (the
variant fields of ``metrics.json`` and any other setting of the runs' resolved ``config.yaml``,
seeds excepted); settings that are the same in every run go into the summary's header. Runs that
failed or did not finish are listed with their reason and left out of the means.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from stridelab.config import NON_IDENTITY_KEYS, VARIANT_FIELD_OF, VARIANT_FIELDS
from stridelab.errors import DataError
from stridelab.files import atomic_write_bytes, atomic_write_text
from stridelab.metrics.suite import HEADLINE
from stridelab.studies.compare import Comparison, compare, default_baseline
from stridelab.studies.labels import CONFIG_PREFIX, label
from stridelab.studies.stats import describe
from stridelab.studies.summary import summary_md
from stridelab.training.results import METRICS_FILE

# metrics.json fields that are neither the variant nor a metric.
RUN_FIELDS = ("status", "reason", "seed", "config_hash", "run_dir")
# Config keys that do not tell variants apart: where results go (stridelab.config.NON_IDENTITY_KEYS),
# the seed, and the settings VARIANT_FIELDS already name.
_CONFIG_IGNORED = (*NON_IDENTITY_KEYS, "seed", "task_name", "downsample.name", "padding.mode", "padding.amount")


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in _CONFIG_IGNORED)


COMPARISON_FIELDS = ("mean", "lo", "hi", "boot_lo", "boot_hi", "boot_method", "p", "p_adj", "seeds_needed")
# Headline figures fixed by the architecture alone (the same in every seed): no verdict to draw.
NOT_COMPARED = ("coverage/interior_ratio", "cost/flops_per_image")


def _column(key: str) -> str:
    """The variant column of an override key: ``padding.amount`` -> ``padding_amount``,
    ``optimizer.lr`` -> ``config/optimizer.lr``."""
    key = VARIANT_FIELD_OF.get(key, key)
    return key if key in VARIANT_FIELDS else f"{CONFIG_PREFIX}{key}"


def sweep_order(root: Path) -> dict:
    """The first value of every swept key, as the sweeps under ``root`` list them (their
    ``multirun.yaml``): the default baseline of each factor (``downsample=conv,blurpool`` -> conv)."""
    first: dict = {}
    for path in sorted(root.glob("multirun.yaml")) + sorted(root.glob("*/multirun.yaml")):
        try:
            from omegaconf import OmegaConf

            task = OmegaConf.load(path).hydra.overrides.task
        except Exception:
            continue
        for override in task:
            key, _, values = str(override).partition("=")
            if "," in values and not values.startswith(("[", "{")) and key not in ("seed",):
                first.setdefault(_column(key), values.split(",")[0])
    return first


@dataclass
class Run:
    path: Path  # the run's folder
    metrics: dict
    config: dict = field(default_factory=dict)  # flattened resolved config (empty when missing)
    readable: bool = True  # False: metrics.json could not be read (the run is listed as failed)

    @property
    def ok(self) -> bool:
        return self.metrics.get("status") == "ok"

    def value(self, column: str):
        """The run's value of a variant column (a metrics.json field, or ``config/<key>``)."""
        return self.config.get(label(column)) if column.startswith(CONFIG_PREFIX) else self.metrics.get(column)

    @property
    def mtime(self) -> float:
        try:
            return (self.path / METRICS_FILE).stat().st_mtime
        except OSError:
            return 0.0


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else node}


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        from omegaconf import OmegaConf

        return _flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    except Exception:
        return {}


def collect(root: str | os.PathLike) -> list[Run]:
    """Every run under ``root`` (folders holding a ``metrics.json``). Unreadable files become
    failed runs with the reason, not silent omissions. Runs with the same ``config_hash`` (a run
    redone after a failure) count once: the finished one, else the newest."""
    root = Path(root)
    runs = []
    for path in sorted(root.rglob(METRICS_FILE)):
        if any(part.startswith(".") for part in path.relative_to(root).parts[:-1]):
            continue
        readable = True
        try:
            metrics = json.loads(path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            metrics, readable = {"status": "failed", "reason": f"unreadable metrics.json ({err})"}, False
        metrics.setdefault("run_dir", str(path.parent))
        runs.append(Run(path.parent, metrics, _read_config(path.parent), readable))
    best: dict = OrderedDict()
    for run in runs:
        key = run.metrics.get("config_hash") or str(run.path)
        old = best.get(key)
        if old is None or (run.ok, run.mtime) > (old.ok, old.mtime):
            best[key] = run
    return list(best.values())


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def variant_columns(runs: list[Run]) -> tuple[list[str], dict]:
    """Columns whose values differ across runs (the variant) and the settings common to all."""
    runs = [r for r in runs if r.readable]
    fields = {k: [r.metrics.get(k) for r in runs] for k in VARIANT_FIELDS}
    configs = [r.config for r in runs if r.config]
    keys = sorted({k for c in configs for k in c if not _ignored(k) and not k.endswith("_target_")})
    for k in keys:
        fields[f"{CONFIG_PREFIX}{k}"] = [r.config.get(k) for r in runs if r.config]

    def dump(v):
        return json.dumps(v, sort_keys=True, default=str)

    varying, constant = [], {}
    for k, values in fields.items():
        if len({dump(v) for v in values}) > 1:
            varying.append(k)
        elif values and values[0] is not None:
            constant[label(k)] = values[0]
    # A config key that only follows the named fields (downsample.filter_size exists for blurpool
    # alone) adds no variant of its own.
    named = [c for c in varying if not c.startswith(CONFIG_PREFIX)]
    groups: dict = {}
    for r in (r for r in runs if r.config):
        groups.setdefault(tuple(dump(r.metrics.get(c)) for c in named), []).append(r)
    varying = named + [
        c
        for c in varying
        if c.startswith(CONFIG_PREFIX) and any(len({dump(r.config.get(c[4:])) for r in g}) > 1 for g in groups.values())
    ]
    # The preset's name adds nothing when it pairs one-to-one with another column (data=redgreen
    # <-> experiment=redgreen): leave it out of the tables.
    if "experiment" in varying:
        pairs = {c: {(dump(r.value(c)), dump(r.metrics.get("experiment"))) for r in runs} for c in varying}
        if any(
            len(pairs[c]) == len({a for a, _ in pairs[c]}) == len({b for _, b in pairs[c]})
            for c in varying
            if c != "experiment"
        ):
            varying.remove("experiment")
    return varying, constant


@dataclass
class Aggregate:
    """The aggregate of one folder of runs."""

    root: Path
    runs: list[Run]
    variant_cols: list[str]
    constant: dict
    metric_keys: list[str]
    variants: "OrderedDict[tuple, list[Run]]"  # variant values -> finished runs
    failed: list[Run]
    baseline: dict = field(default_factory=dict)  # variant column -> its baseline value
    comparisons: list[Comparison] = field(default_factory=list)  # every factor contrast (compare.py)
    correction: str = "fdr"  # how the comparisons' p-values were adjusted together (stats.CORRECTIONS)

    def summary_rows(self) -> list[dict]:
        rows = []
        for key, runs in self.variants.items():
            row = {label(c): v for c, v in zip(self.variant_cols, key)}
            row["n_seeds"] = len(runs)
            row["seeds"] = " ".join(str(r.metrics.get("seed")) for r in runs)
            for m in self.metric_keys:
                d = describe([r.metrics.get(m) for r in runs if _is_number(r.metrics.get(m))])
                if d["n"]:
                    row.update({f"{m}/mean": d["mean"], f"{m}/std": d["std"], f"{m}/ci95": d["ci95"]})
            for c in (c for c in self.comparisons if c.variant == key):
                f = label(c.factor)
                row[f"vs_{f}"] = c.baseline[self.variant_cols.index(c.factor)]
                for m, d in c.differences.items():
                    row[f"{m}/vs_{f}/paired"] = d.paired
                    row.update({f"{m}/vs_{f}/{k}": getattr(d, k) for k in COMPARISON_FIELDS})
            rows.append(row)
        return rows


def analyse(root: str | os.PathLike, baseline: dict | None = None, correction: str = "fdr") -> Aggregate:
    """``baseline``: factor -> value (a study file's ``baseline:``); unnamed factors take the first
    value their sweep lists. ``correction``: fdr, holm or none, over every comparison x figure."""
    root = Path(root)
    runs = collect(root)
    if not runs:
        raise DataError(
            f"No runs under {root}: aggregation reads every metrics.json below the folder it is "
            "given. Pass a study or multirun folder (e.g. logs/studies/demo or logs/multiruns/<date>)."
        )
    varying, constant = variant_columns(runs)
    done = [r for r in runs if r.ok]
    failed = [r for r in runs if not r.ok]
    metric_keys = sorted(
        {
            k
            for r in done
            for k, v in r.metrics.items()
            if _is_number(v) and k not in RUN_FIELDS and k not in VARIANT_FIELDS
        }
    )
    variants: OrderedDict = OrderedDict()
    for r in sorted(done, key=lambda r: [str(r.value(c)) for c in varying] + [str(r.metrics.get("seed"))]):
        variants.setdefault(tuple(r.value(c) for c in varying), []).append(r)
    study = Aggregate(root, runs, varying, constant, metric_keys, variants, failed, correction=correction)
    if varying and variants:
        given = {
            **sweep_order(root),
            **{_column(c): v for c, v in (baseline or {}).items()},
        }
        study.baseline = default_baseline(varying, list(variants), given)
        figures = {
            key: {
                m: {r.metrics.get("seed"): r.metrics.get(m) for r in rs if _is_number(r.metrics.get(m))}
                for m in metric_keys
            }
            for key, rs in variants.items()
        }
        compared = [k for k, _ in HEADLINE if k in metric_keys and k not in NOT_COMPARED]
        study.comparisons = compare(varying, figures, study.baseline, compared, correction)
    return study


# -- writing ---------------------------------------------------------------------------------------
def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}
        )
    return buf.getvalue()


def results_csv(study: Aggregate) -> str:
    first = [
        "status",
        "reason",
        *VARIANT_FIELDS,
        *[label(c) for c in study.variant_cols if c.startswith(CONFIG_PREFIX)],
        "seed",
    ]
    rest = sorted({k for r in study.runs for k in r.metrics} - set(first) - {"config_hash", "run_dir"})
    rows = []
    for r in sorted(study.runs, key=lambda r: str(r.path)):
        row = dict(r.metrics)
        row.update({label(c): r.value(c) for c in study.variant_cols if c.startswith(CONFIG_PREFIX)})
        rows.append(row)
    return _csv(rows, [*first, *rest, "config_hash", "run_dir"])


def summary_csv(study: Aggregate) -> str:
    cols = [*[label(c) for c in study.variant_cols], "n_seeds", "seeds"]
    for m in study.metric_keys:
        cols += [f"{m}/mean", f"{m}/std", f"{m}/ci95"]
    compared = [m for m, _ in HEADLINE if any(m in c.differences for c in study.comparisons)]
    for factor in dict.fromkeys(c.factor for c in study.comparisons):
        f = label(factor)
        cols.append(f"vs_{f}")
        for m in compared:
            cols += [f"{m}/vs_{f}/paired", *(f"{m}/vs_{f}/{k}" for k in COMPARISON_FIELDS)]
    return _csv(study.summary_rows(), cols)


def aggregate(
    root: str | os.PathLike, plots: bool = True, baseline: dict | None = None, correction: str = "fdr"
) -> Aggregate:
    """Analyse ``root`` and write its tables (and plots) into it; returns the analysis."""
    study = analyse(root, baseline, correction)
    root = Path(root)
    written = []
    if plots:
        from stridelab.studies.plots import STUDY_PLOTS, study_figures

        figures = study_figures(study)
        for name, png in figures.items():
            atomic_write_bytes(root / "plots" / name, png)
            written.append(f"plots/{name}")
        # a plot the study no longer makes (a grid that grew a second data set) would read as current
        for stale in {p for pattern in STUDY_PLOTS for p in (root / "plots").glob(pattern)}:
            if stale.name not in figures:
                stale.unlink(missing_ok=True)
    atomic_write_text(root / "results.csv", results_csv(study))
    atomic_write_text(root / "summary.csv", summary_csv(study))
    atomic_write_text(root / "summary.md", summary_md(study, written))
    if written:
        plots_to_tensorboard(root, written)
    return study


def plots_to_tensorboard(root: Path, plots: list[str]) -> None:
    """The study's plots as TensorBoard images (tab IMAGES, run ``_study``), so ``make tensorboard
    DIR=<study>`` shows them beside the runs. Rewritten whole on every aggregation (written into a
    temporary folder, then swapped in): an aggregate never shows a stale plot twice."""
    import shutil

    import matplotlib.image as mpimg
    from torch.utils.tensorboard import SummaryWriter

    final, tmp = root / "_study", root / "._study.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with SummaryWriter(str(tmp)) as writer:
        for name in plots:
            image = mpimg.imread(root / name)[..., :3]
            writer.add_image(f"study/{Path(name).stem}", image, 0, dataformats="HWC")
    old = root / "._study.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def summary_for_console(root: str | os.PathLike) -> str:
    """``summary.md`` without its long list of common settings, for printing after a sweep."""
    return (Path(root) / "summary.md").read_text().split("<details>")[0].rstrip()

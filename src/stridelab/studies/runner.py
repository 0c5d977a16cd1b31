"""Run a study file from ``experiments/``: each of its grids as a Hydra multirun, then aggregate.

A study file (YAML) holds a ``question`` (what the study answers), optional ``reference`` numbers
from the literature, and ``grids``: named grids, each with fixed ``overrides`` (as on the command
line) and ``params`` in the syntax of Hydra's ``hydra.sweeper.params`` (``key: v1,v2,...``). Grid
``g`` of study ``s`` runs into ``<root>/logs/studies/s/g/<swept overrides>/`` (the default
``hydra.sweep.subdir``, with the grid's fixed overrides left out of the name); finished configs
are skipped (``resume``), so re-running a study only does what is missing or failed.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from stridelab.config import CONFIG_DIR, register_resolvers
from stridelab.errors import ConfigError, StridelabError
from stridelab.files import atomic_write_text
from stridelab.studies.reference import check_reference, reference_md
from stridelab.studies.stats import CORRECTIONS
from stridelab.validation import check_added_keys, composition_error, validate_config

STUDY_DIR = Path(os.environ.get("STRIDELAB_STUDY_DIR", CONFIG_DIR.parent / "experiments"))
_KEYS = {"question", "reference", "grids", "notes", "baseline", "tune", "verdicts"}


@dataclass
class Grid:
    name: str
    overrides: list[str]
    params: dict[str, str]


@dataclass
class StudyFile:
    name: str
    path: Path
    question: str
    grids: list[Grid]
    reference: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)  # factor -> the value the verdicts compare against
    # tune: {search: lr, per: [downsample, padding], overrides: [...]}: an hparams_search per variant
    # first, then each variant's seeds at its best values (run_study).
    tune: dict = field(default_factory=dict)
    notes: str = ""  # how the study follows or departs from its paper, printed under the question
    correction: str = "fdr"  # verdicts.correction: how the verdicts' p-values are adjusted together


def available() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def load_study(name: str) -> StudyFile:
    """``name`` is a file stem in ``experiments/`` or a path to a study file."""
    path = Path(name)
    if not path.suffix:
        path = STUDY_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"No study '{name}': studies are the files in {STUDY_DIR} ({', '.join(available())}). "
            "Run one with make study NAME=<name>, or pass the path of a study file."
        )
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("grids"), dict) or not raw["grids"]:
        raise ConfigError(
            f"{path} is not a study file: it needs a 'grids:' mapping of named grids, each with "
            "'overrides' (a list) and 'params' (key: comma-separated values). See experiments/README.md."
        )
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; a study file has {sorted(_KEYS)}.")
    grids = []
    for gname, g in raw["grids"].items():
        g = g or {}
        if set(g) - {"overrides", "params"}:
            raise ConfigError(
                f"{path}: grid '{gname}' has unknown keys {sorted(set(g) - {'overrides', 'params'})}; "
                "a grid has 'overrides' and 'params'."
            )
        grids.append(
            Grid(
                str(gname),
                [str(o) for o in g.get("overrides") or []],
                {str(k): str(v) for k, v in (g.get("params") or {}).items()},
            )
        )
    tune = raw.get("tune") or {}
    if tune and (not isinstance(tune, dict) or not tune.get("search") or not isinstance(tune.get("per"), list)):
        raise ConfigError(
            f"{path}: 'tune' needs 'search' (an hparams_search option, e.g. lr) and 'per' (the swept keys "
            "that make a variant, e.g. [downsample, padding]); optional 'overrides' for the searches."
        )
    baseline = raw.get("baseline") or {}
    if not isinstance(baseline, dict):
        raise ConfigError(
            f"{path}: 'baseline' must map a swept key to its baseline value (e.g. baseline: {{downsample: conv}})."
        )
    verdicts = raw.get("verdicts") or {}
    correction = verdicts.get("correction", "fdr") if isinstance(verdicts, dict) else None
    if correction not in CORRECTIONS or set(verdicts if isinstance(verdicts, dict) else {}) - {"correction"}:
        raise ConfigError(
            f"{path}: 'verdicts' takes one key, correction: fdr (Benjamini-Hochberg false discovery rate, the "
            "default), holm (Holm's family-wise error) or none; got "
            f"{verdicts!r}. For example: verdicts: {{correction: holm}}."
        )
    return StudyFile(
        path.stem,
        path,
        str(raw.get("question", "")).strip(),
        grids,
        check_reference(raw.get("reference"), path),
        {str(k): str(v) for k, v in baseline.items()},
        tune,
        " ".join(str(raw.get("notes") or "").split()),
        correction,
    )


def _read_yaml(path: Path):
    """A study file as plain data; YAML it cannot read is a ConfigError naming the file and line."""
    import yaml

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        context, opened = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and opened and opened is not mark:  # where the unclosed bracket or block began
            problem += f"; {context} that began at line {opened.line + 1}, column {opened.column + 1}"
        tag = re.search(r"tag:yaml\.org,2002:(\S+?)'", problem)
        if tag:
            why = (
                f"it uses the YAML tag !!{tag[1]}, which asks the reader to build a Python object. Study files are "
                "read as plain data only, so nothing was built or run. Remove the tag and write the value as plain "
                "text, a list or a mapping"
            )
        else:
            why = f"it is not valid YAML ({problem}). Nothing was run. Fix that line (a bracket or quote left open, "
            why += "a tab for indentation, a missing colon) and run the same command again"
        raise ConfigError(f"{where}: {why}. experiments/README.md shows the format.") from None
    except Exception as err:  # OmegaConf's own refusals (a duplicate key, a value it cannot hold)
        raise ConfigError(
            f"{path} cannot be read as a study file: {' '.join(str(err).split())}. Nothing was run. Fix it and run "
            "the same command again; experiments/README.md shows the format."
        ) from None


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def grid_argv(grid: Grid, sweep_dir: Path, extra: list[str], resume_dir: Path | None = None) -> list[str]:
    """The Hydra command line of one grid. ``extra`` overrides apply to every grid; an extra
    override of a swept key narrows the sweep to it (``seed=0``)."""
    extra_keys = {_key(o) for o in extra}
    params = {k: v for k, v in grid.params.items() if k not in extra_keys}
    fixed = [o for o in grid.overrides if _key(o) not in extra_keys] + list(extra)
    excluded = sorted({_key(o) for o in fixed} | {"resume_dir"})
    return [
        "-m",
        *fixed,
        *(f"{k}={v}" for k, v in params.items()),
        f"resume_dir={resume_dir or sweep_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]",
        "hydra.callbacks.aggregate.enabled=false",
    ]


def grid_runs(grid: Grid, extra: list[str]) -> list[list[str]]:
    """Every run of a grid as its list of overrides (the sweep expanded as Hydra's basic sweeper does)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    argv = grid_argv(grid, Path("."), extra)
    swept = [a for a in argv[1:] if not a.startswith(("hydra.", "resume_dir="))]
    parsed = OverridesParser.create().parse_overrides(swept)
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
        for o in parsed
    ]
    return [list(combo) for combo in itertools.product(*choices)]


def check_grid(grid: Grid, extra: list[str], build: bool = True) -> int:
    """Compose every run of ``grid`` with Hydra, check its values (:func:`stridelab.validation.validate_config`)
    and, with ``build``, build its strategy, padding and model on the data's input size (no data read,
    nothing trained): a dry run catches a misspelt key, a bad value, option or geometry in run 97 before
    run 1 starts. Raises the first problem, naming the run. Every study checks its grids before it trains
    anything without ``build``, composing only runs that bring a value of a swept key not composed yet.
    Returns the number of runs of the grid."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class, instantiate

    from stridelab.models import check_geometry

    register_resolvers()
    runs = grid_runs(grid, extra)
    total = len(runs)
    if not build:
        runs = _covering(runs)
    built = set()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for overrides in runs:
            try:
                cfg = validate_config(compose(config_name="train", overrides=overrides))
                check_added_keys(cfg, overrides)
                if not build:
                    continue
                key = OmegaConf.to_yaml({k: cfg[k] for k in ("data", "model", "downsample", "padding")})
                if key in built:  # the same network as a run already checked (e.g. another seed)
                    continue
                built.add(key)
                data = get_class(cfg.data._target_)
                model = instantiate(cfg.model, _partial_=True)(
                    num_classes=len(data.classes) or 10,  # an image folder's classes are known once it is read
                    in_chans=data.in_chans,
                    downsample=instantiate(cfg.downsample),
                    padding=instantiate(cfg.padding),
                )
                size = cfg.data.get("image_size") or data.image_size
                shape = (data.in_chans, size, size)
                check_geometry(model, shape)
                if cfg.get("metrics"):
                    instantiate(cfg.metrics).check_input(shape)
            except Exception as err:
                err = composition_error(err) or err
                while err.__cause__ is not None and not isinstance(err, StridelabError):
                    err = err.__cause__
                raise ConfigError(
                    f"grid '{grid.name}', run {' '.join(overrides)}: {' '.join(str(err).split()).rstrip('.')}. "
                    "Fix the study file or the overrides given on the command line."
                ) from None
    return total


def _covering(runs: list[list[str]]) -> list[list[str]]:
    """The runs that bring an override no earlier one had: each value of each swept key once, what
    composition can refuse, in seconds rather than a composition per run."""
    seen: set[str] = set()
    kept = []
    for overrides in runs:
        if not set(overrides) <= seen:
            kept.append(overrides)
            seen.update(overrides)
    return kept


def study_root(name: str) -> Path:
    root = Path(os.environ.get("STRIDELAB_ROOT") or os.getcwd())
    return root / "logs" / "studies" / name


def run_study(name: str, extra: list[str] = (), out: str | None = None, dry_run: bool = False) -> int:
    """Run every grid of study ``name`` (skipping finished configs), aggregate, print the summary.
    Returns the exit status as stridelab.train gives it: 0, 1 (some runs failed; the other grids
    still ran) or 128 + N (a signal N stopped it: the grids after it did not start; what finished
    is aggregated)."""
    study = load_study(name)
    root = Path(out) if out else study_root(study.name)
    print(f"stridelab: study '{study.name}': {study.question.splitlines()[0] if study.question else ''}")
    if not dry_run:  # a bad override or value: one paragraph before anything runs, not one error per grid
        for grid in study.grids:
            check_grid(grid, list(extra), build=False)
    status = 0
    for grid in study.grids:
        argv = grid_argv(grid, root / grid.name, list(extra), resume_dir=root)
        print(
            f"stridelab: grid '{grid.name}' -> {root / grid.name}\n  python -m stridelab.train " + shlex.join(argv[:-4])
        )
        if dry_run:
            n = check_grid(grid, list(extra))
            print(f"  {n} runs composed; each one's model built and its geometry checked")
            continue
        status = max(status, _run_tuned(study, grid, root, list(extra)) if study.tune else _run_hydra(argv))
        if status == 2:  # an input error only Hydra's run could find (its paragraph is printed): not per grid
            return status
        if status >= 128:
            print(f"stridelab: the study stopped in grid '{grid.name}'; run the same command again to finish it.")
            break
    if dry_run:
        return 0
    from stridelab.studies.aggregate import aggregate, summary_for_console

    for grid in study.grids:
        if (root / grid.name).is_dir():
            aggregate(root / grid.name, baseline=study.baseline, correction=study.correction)
    aggregate(root, baseline=study.baseline, correction=study.correction)
    _add_study_header(study, root / "summary.md")
    print("\n" + summary_for_console(root))
    print(f"\nstridelab: study tables and plots in {root} (per grid: {', '.join(g.name for g in study.grids)})")
    return status


def _variants(grid: Grid, per: list[str]) -> list[dict]:
    import itertools

    keys = [k for k in per if k in grid.params]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid.params[k].split(",") for k in keys))]


def _run_tuned(study: StudyFile, grid: Grid, root: Path, extra: list[str]) -> int:
    """``tune:``: for each variant of ``grid`` (its values of the ``per`` keys), an ``hparams_search``
    into ``<study>/tune/<grid>/<variant>/`` (skipped when its optimization_results.yaml exists), then
    the variant's other swept keys (seeds) at its best values into the grid's folder. The values each
    variant used are written to ``<study>/tuned.yaml``."""
    import yaml

    tune, status = study.tune, 0
    per = [str(k) for k in tune["per"]]
    tuned_file = root / "tuned.yaml"
    record = yaml.safe_load(tuned_file.read_text()) if tuned_file.is_file() else {}
    for variant in _variants(grid, per):
        name = ",".join(f"{k}={v}" for k, v in variant.items()) or "all"
        search_dir = root / "tune" / grid.name / name.replace("/", "_")
        results = search_dir / "optimization_results.yaml"
        fixed = [*grid.overrides, *extra] + [f"{k}={v}" for k, v in variant.items()]
        if not results.is_file():
            print(f"stridelab: tuning {name} (hparams_search={tune['search']}) -> {search_dir}")
            argv = [
                f"hparams_search={tune['search']}",
                *fixed,
                *(str(o) for o in tune.get("overrides") or []),
                f"hydra.sweep.dir='{search_dir}'",  # quoted: the folder's name holds '='
                "hydra.callbacks.aggregate.enabled=false",
            ]
            status = max(status, _run_hydra(argv))
            if status >= 128 or not results.is_file():
                return max(status, 1)
        best = yaml.safe_load(results.read_text())["best_params"]
        record.setdefault(grid.name, {})[name] = {k: float(v) for k, v in best.items()}
        atomic_write_text(tuned_file, yaml.safe_dump(record, sort_keys=True))
        print(f"stridelab: {name} runs at " + ", ".join(f"{k}={v:.4g}" for k, v in best.items()))
        # The variant's values as one-value sweeps (choice): its run folders are named by them.
        rest = {k: v for k, v in grid.params.items() if k not in variant}
        params = {**{k: f"choice({v})" for k, v in variant.items()}, **rest}
        tuned = Grid(grid.name, [*grid.overrides, *(f"{k}={v}" for k, v in best.items())], params)
        status = max(status, _run_hydra(grid_argv(tuned, root / grid.name, extra, resume_dir=root)))
        if status >= 128:
            return status
    return status


def _run_hydra(argv: list[str]) -> int:
    """stridelab.train's Hydra app in this process (imports and start-up are paid once per study);
    returns its exit status."""
    from hydra.core.global_hydra import GlobalHydra

    from stridelab import train

    saved = sys.argv
    sys.argv = ["stridelab.train", *argv]
    try:
        GlobalHydra.instance().clear()
        train.main()
        return 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()


def _add_study_header(study: StudyFile, summary: Path) -> None:
    """The study's question on top of its summary, and the literature's numbers after the table."""

    text = summary.read_text()
    head, _, rest = text.partition("\n")
    parts = [head, "", f"Study `{study.name}` ({study.path}): {study.question}"]
    if study.notes:
        parts += ["", f"Notes: {study.notes}"]
    body = rest
    if study.reference:
        table = summary.parent / "summary.csv"
        rows = list(csv.DictReader(io.StringIO(table.read_text()))) if table.is_file() else []
        lines = reference_md(study.reference, rows)
        marker = "## Failed" if "## Failed" in body else "## Plots" if "## Plots" in body else "All metrics"
        body = body.replace(marker, "\n".join(lines) + "\n" + marker, 1)
    tuned = summary.parent / "tuned.yaml"
    if study.tune and tuned.is_file():  # which values each variant ran at
        import yaml

        record = yaml.safe_load(tuned.read_text()) or {}
        rows = [
            f"| {g} | {v} | " + ", ".join(f"`{k}={x:.4g}`" for k, x in best.items()) + " |"
            for g, variants in record.items()
            for v, best in variants.items()
        ]
        lines = [
            "## Tuned hyperparameters",
            "",
            f"Each variant ran at the best values of its own `hparams_search={study.tune['search']}` on the "
            "validation split (`tuned.yaml`; the searches in `tune/`).",
            "",
            "| grid | variant | values |",
            "|---|---|---|",
            *rows,
            "",
        ]
        marker = "## Failed" if "## Failed" in body else "## Plots" if "## Plots" in body else "All metrics"
        body = body.replace(marker, "\n".join(lines) + "\n" + marker, 1)
    atomic_write_text(summary, "\n".join(parts) + "\n" + body)

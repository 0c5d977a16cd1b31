"""The literature's numbers beside ours, in a study's ``summary.md`` (a study file's ``reference:``).

Free form (a bullet per entry, printed as given)::

    reference:
      source: Springenberg et al. 2015, Table 3; test error (%)
      Model C: 9.74

Or a table of ours beside theirs: ``figures`` names the paper's figures and, for each, the figures of
ours (``summary.csv`` keys) to put beside it; ``rows`` names the paper's rows, each with the settings
that pick our variant (``match``: summary columns, e.g. ``padding_amount: same``) and the paper's
numbers; ``scale`` converts ours to the paper's unit (100: fractions to %)::

    reference:
      source: Kayhan & van Gemert, CVPR 2020, Table 1; test accuracy (%)
      scale: 100
      figures: {similar: [test/acc], dissimilar: [test_dissimilar/acc]}
      rows:
        S-circular: {match: {padding: circular}, similar: 73.7, dissimilar: 73.7}
"""

from __future__ import annotations

import math

from stridelab.errors import ConfigError


def check_reference(raw, path) -> dict:
    """``raw`` (a study file's ``reference:``) as a dict, or a clear error about what is wrong."""
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: 'reference' must be a mapping (source: ..., then the paper's numbers).")
    if "rows" not in raw and "figures" not in raw:
        return raw
    figures, rows = raw.get("figures"), raw.get("rows")
    how = (
        "a reference table needs 'figures' (the paper's figure -> a list of our summary.csv keys, e.g. "
        "{similar: [test/acc]}) and 'rows' (the paper's row -> {match: {column: value}, <figure>: number})"
    )
    if not isinstance(figures, dict) or not figures or not isinstance(rows, dict) or not rows:
        raise ConfigError(f"{path}: {how}.")
    for name, ours in figures.items():
        if not isinstance(ours, list) or not ours:
            raise ConfigError(f"{path}: reference figure '{name}' must list our figures (e.g. [test/acc]); {how}.")
    for name, row in rows.items():
        if not isinstance(row, dict) or not isinstance(row.get("match"), dict):
            raise ConfigError(f"{path}: reference row '{name}' needs 'match' (which variant is ours); {how}.")
        for k, v in row.items():
            if k == "match":
                continue
            if k not in figures:
                raise ConfigError(f"{path}: reference row '{name}' gives '{k}', not one of figures {sorted(figures)}.")
            if not isinstance(v, (int, float)):
                raise ConfigError(f"{path}: reference row '{name}': '{k}' must be a number, got {v!r}.")
    scale = raw.get("scale", 1)
    if not isinstance(scale, (int, float)) or scale <= 0:
        raise ConfigError(f"{path}: reference 'scale' must be a positive number (100 turns fractions into %).")
    return raw


def _number(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def reference_md(reference: dict, rows: list[dict]) -> list[str]:
    """The ``## Reference (literature)`` section; ``rows`` are ``summary.csv``'s rows (strings)."""
    if not reference:
        return []
    ref = dict(reference)
    source = ref.pop("source", "")
    lines = ["## Reference (literature)", "", str(source), ""]
    if "rows" not in ref:
        return [*lines, *(f"* {k}: {v}" for k, v in ref.items()), ""]
    scale, figures = float(ref.get("scale", 1)), ref["figures"]
    head, cols = ["paper's row", "our seeds"], []
    for fig, ours in figures.items():
        head.append(f"{fig}: paper")
        cols.append((fig, None))
        for key in ours:
            head.append(f"{fig}: ours, `{key}`")
            cols.append((fig, key))
    lines += [
        f"Ours: mean ± 95% t interval over seeds{f', x{scale:g}' if scale != 1 else ''}, from `summary.csv`.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, row in ref["rows"].items():
        match = {str(k): str(v) for k, v in row["match"].items()}
        found = [r for r in rows if all(str(r.get(k, "")) == v for k, v in match.items())]
        seeds = found[0].get("n_seeds", "") if len(found) == 1 else f"{len(found)} variants match"
        cells = [str(name), str(seeds)]
        for fig, key in cols:
            if key is None:
                cells.append(str(row.get(fig, "-")))
                continue
            mean = _number(found[0].get(f"{key}/mean")) if len(found) == 1 else None
            ci = _number(found[0].get(f"{key}/ci95")) if len(found) == 1 else None
            cells.append("-" if mean is None else f"{scale * mean:.1f}" + (f" ± {scale * ci:.1f}" if ci else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]

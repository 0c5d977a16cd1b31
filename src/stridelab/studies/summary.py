"""``summary.md`` of an aggregate: the table of variants, the verdicts, the runs left out.

Rendering only: :func:`stridelab.studies.aggregate.analyse` computes every figure it shows, and each
function here takes its :class:`~stridelab.studies.aggregate.Aggregate` (``study``; not imported, so
that the two modules do not import each other).
"""

from __future__ import annotations

import math

from stridelab.config import VARIANT_FIELDS
from stridelab.metrics.suite import BETTER, HEADLINE
from stridelab.studies.compare import Comparison
from stridelab.studies.labels import label

# Figures in [0, 1] whose differences read as percentage points.
FRACTIONS = (
    "test/acc",
    "shift/circular_consistency",
    "crop/consistency",
    "pairshift/standard_consistency",
    "worstshift/circular_acc",
    "corruption/mean_acc",
    "position/dissimilar_acc",
)


def _signed(v: float, points: bool) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{100 * v:+.1f}" if points else ("+" if v >= 0 else "") + _fmt(v)


def _comparison_title(study, c: Comparison, versus: bool = True) -> str:
    """``blurpool vs conv (zeros, shapes10)``: the two values of the factor, then the other settings."""
    i = study.variant_cols.index(c.factor)
    others = [str(v) for j, v in enumerate(c.variant) if j != i]
    head = f"{c.variant[i]} vs {c.baseline[i]}" if versus else str(c.variant[i])
    return head + (f" ({', '.join(others)})" if others else "")


CORRECTION_NAMES = {
    "fdr": "Benjamini-Hochberg, false discovery rate 5%",
    "holm": "Holm, family-wise error 5%",
    "none": "no correction for testing many at once",
}


def glance_cell(d, points: bool) -> str:
    """A glance cell: the mean difference; bold with a mark where decided; else what would decide it."""
    text = _signed(d.mean, points)
    if d.decided:
        return f"**{text}**"
    if d.excludes_zero:  # the raw interval excludes 0, the adjusted p-value does not
        return f"{text} †"
    if d.seeds_needed is not None and d.seeds_needed > d.n:
        return f"{text} (needs ~{d.seeds_needed} seeds)"
    if d.paired and d.n >= 2 and d.seeds_needed is None and math.isfinite(d.sd) and d.sd > 0 and d.mean != 0:
        return f"{text} (needs >1000 seeds)"
    return text


def seeds_to_decide(study) -> str:
    """One sentence: how many paired seeds would decide the undecided headline cells (half of them, four in
    five, all), with the cell that needs the most; empty where nothing is left to estimate."""
    names = dict(HEADLINE)
    cells = [
        (d.seeds_needed, f"{names.get(m, m)}, {_comparison_title(study, c)}")
        for c in study.comparisons
        for m, d in c.differences.items()
        if m in BETTER and not d.decided and d.paired and math.isfinite(d.sd) and d.sd > 0
    ]
    if not cells:
        return ""
    needs = sorted(n if n is not None else math.inf for n, _ in cells)

    def share(q: float) -> str:
        n = needs[min(len(needs) - 1, math.ceil(q * len(needs)) - 1)]
        return "over 1000" if n == math.inf else str(n)

    most, where = max(cells, key=lambda cell: math.inf if cell[0] is None else cell[0])
    all_of_them = "over 1000" if most is None else str(most)
    return (
        f" Seeds that would decide the {len(needs)} undecided cells (80% power, if the differences and their "
        f"spread are what these seeds show; with 2 or 3 seeds the spread itself is a guess: docs/metrics.md): "
        f"half of them with {share(0.5)}, four in five with {share(0.8)}, every comparison you named with "
        f"{all_of_them} (the most: {where})."
    )


def verdicts_glance_md(study) -> list[str]:
    """Per factor, a table of comparisons x headline figures: the mean difference, bold with a mark
    where the adjusted p-value is below 0.05 (better or worse, by the figure's direction); undecided
    cells say how many paired seeds would decide them."""
    names = dict(HEADLINE)
    lines = []
    for factor in dict.fromkeys(c.factor for c in study.comparisons):
        rows = [c for c in study.comparisons if c.factor == factor]
        figures = [m for m, _ in HEADLINE if any(m in c.differences for c in rows)]
        base = rows[0].baseline[study.variant_cols.index(factor)]
        heads = [
            f"{names[m]} ({'pts, ' if m in FRACTIONS else ''}{'↑' if BETTER.get(m, 0) > 0 else '↓'})"
            if m in BETTER
            else names[m]
            for m in figures
        ]
        lines += [
            f"**{label(factor)}, against {base}**",
            "",
            "| " + " | ".join([f"{label(factor)} (setting)", "seeds", *heads]) + " |",
            "|" + "---|" * (2 + len(figures)),
        ]
        for c in rows:
            cells = []
            for m in figures:
                d = c.differences.get(m)
                if d is None:
                    cells.append("-")
                    continue
                text = glance_cell(d, m in FRACTIONS)
                if d.decided:
                    sign = BETTER.get(m, 0) * (1 if d.mean > 0 else -1)
                    text += {1: " ✓", -1: " ✗"}.get(sign, "")
                cells.append(text)
            n = next(iter(c.differences.values()))
            seeds = f"{n.n}{'' if n.paired else ' unpaired'}"
            lines.append(f"| {_comparison_title(study, c, versus=False)} | {seeds} | {' | '.join(cells)} |")
        lines.append("")
    return lines


def verdicts_md(study) -> list[str]:
    """At a glance (a table per factor), then one plain-words row per comparison: each headline
    figure's mean difference and 95% intervals."""
    if not study.comparisons:
        return []
    names = dict(HEADLINE)
    base = ", ".join(f"{label(c)}={v}" for c, v in study.baseline.items())
    fewest = min(d.n for c in study.comparisons for d in c.differences.values())
    if fewest == 1:
        few_seeds = (
            " Where a comparison has 1 seed there is no interval: its difference is shown, but nothing is decided "
            "(plain). Trust a verdict from 3 or more seeds."
        )
    elif fewest == 2:
        few_seeds = (
            " With 2 seeds a verdict rests on 1 degree of freedom: seeds that happen to differ by the same amount "
            "(e.g. one test image each) give a zero-width interval. Trust a verdict from 3 or more seeds."
        )
    else:
        few_seeds = ""
    tests = sum(1 for c in study.comparisons for d in c.differences.values() if math.isfinite(d.p))
    correction = getattr(study, "correction", "fdr")
    to_decide = seeds_to_decide(study)
    lines = [
        "## Verdicts",
        "",
        "At a glance: each variant's mean difference to the variant that differs only in one factor, set "
        f"to its baseline ({base}), over seeds paired by seed. **Bold** where the difference is decided: its "
        f"t test's p-value, adjusted for the {tests} tests of this table ({CORRECTION_NAMES[correction]}), "
        "is below 0.05; ✓ better, ✗ worse (↑: higher is better, ↓: lower is better). Plain: the seeds do not "
        "decide; (needs ~N seeds): the paired seeds that would decide that difference with 80% power; †: the "
        "95% t interval excludes 0, but not after the correction. Accuracies and consistencies in percentage "
        "points (pts). The intervals are in the rows below." + few_seeds + to_decide,
        "",
        *verdicts_glance_md(study),
        "In plain words: the mean difference, `[95% t interval]`, `(95% bootstrap interval, BCa or percentile)` "
        f"and `p` (the t test's, then adjusted: {CORRECTION_NAMES[correction]}); **bold**: decided. The "
        "intervals are not adjusted. With a few seeds the bootstrap interval is narrow by construction (2 "
        "seeds: 3 distinct resamples): read the t one.",
        "",
        "| comparison | seeds | differences |",
        "|---|---|---|",
    ]
    for c in study.comparisons:
        title = _comparison_title(study, c)
        parts = []
        for m, d in c.differences.items():
            pts = m in FRACTIONS
            text = f"{names.get(m, m)} {_signed(d.mean, pts)}{' pts' if pts else ''}"
            if math.isfinite(d.lo):
                text += f" [{_signed(d.lo, pts)}, {_signed(d.hi, pts)}]"
                if d.boot_method:
                    text += f" ({d.boot_method} {_signed(d.boot_lo, pts)}, {_signed(d.boot_hi, pts)})"
            if math.isfinite(d.p):
                text += f" p {_p(d.p)}" + (f", adj. {_p(d.p_adj)}" if d.correction != "none" else "")
            parts.append(f"**{text}**" if d.decided else text)
        n = next(iter(c.differences.values()))
        seeds = f"{n.n} paired" if n.paired else f"{n.n}, unpaired (a seed missing on one side)"
        lines.append(f"| {title} | {seeds} | {'; '.join(parts)} |")
    return [*lines, ""]


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _fmt(v: float) -> str:
    """Three significant digits, fixed-point where that reads well."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    a = abs(v)
    if a >= 1e5 or (0 < a < 1e-3):
        return f"{v:.2e}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def summary_md(study, plots: list[str] = ()) -> str:
    lines = [f"# Study summary: {study.root}", ""]
    n_ok = sum(len(v) for v in study.variants.values())
    lines.append(
        f"{len(study.runs)} runs: {n_ok} finished, {len(study.failed)} failed, diverged or unfinished; "
        f"{len(study.variants)} variants. Cells: mean ± 95% CI half-width over seeds "
        "(Student's t; no interval with one seed)."
    )
    lines.append("")
    named = {k: v for k, v in study.constant.items() if k in VARIANT_FIELDS}
    if named:
        lines += [
            "Common to every run: "
            + ", ".join(f"`{k}={v}`" for k, v in named.items())
            + " (every other common setting: at the end).",
            "",
        ]
    shown = [(k, name) for k, name in HEADLINE if k in study.metric_keys]
    rows = study.summary_rows()
    head = [label(c) for c in study.variant_cols] or ["variant"]
    lines.append("| " + " | ".join([*head, "seeds", *(n for _, n in shown)]) + " |")
    lines.append("|" + "---|" * (len(head) + 1 + len(shown)))
    for row in rows:
        cells = [str(row.get(h, "all")) for h in head] + [str(row["n_seeds"])]
        for k, _ in shown:
            mean, ci = row.get(f"{k}/mean"), row.get(f"{k}/ci95")
            # one seed, or the same in every seed (up to rounding: 1.75 ± 6.8e-16 is a constant)
            no_ci = ci is None or not math.isfinite(ci) or abs(ci) <= 1e-9 * max(1.0, abs(mean or 0.0))
            cells.append("-" if mean is None else _fmt(mean) + ("" if no_ci else f" ± {_fmt(ci)}"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += verdicts_md(study)
    if study.failed:
        lines += [
            "## Failed, diverged or unfinished runs (not in the means)",
            "",
            "| run | variant | seed | status | reason |",
            "|---|---|---|---|---|",
        ]
        for r in study.failed:
            variant = ", ".join(f"{label(c)}={r.value(c)}" for c in study.variant_cols) or "-"
            status = r.metrics.get("status", "?")
            reason = r.metrics.get("reason") or (
                "did not finish (killed, or still running)" if status == "running" else ""
            )
            reason = str(reason).replace("|", "/")[:300]
            lines.append(f"| {r.path} | {variant} | {r.metrics.get('seed', '-')} | {status} | {reason} |")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"* `{p}`" for p in plots] + [""]
    lines.append("All metrics, per variant: `summary.csv`; per run: `results.csv`; definitions: docs/metrics.md.")
    others = {k: v for k, v in study.constant.items() if k not in VARIANT_FIELDS}
    if others:
        lines += [
            "",
            f"<details><summary>Settings common to every run ({len(others)})</summary>",
            "",
            ", ".join(f"`{k}={v}`" for k, v in others.items()),
            "",
            "</details>",
        ]
    return "\n".join(lines) + "\n"

"""A study's comparison plots, one point or bar per variant with 95% CI error bars (PNG bytes)."""

from __future__ import annotations

import math
import re

from stridelab.metrics.plots import pyplot, to_png
from stridelab.studies.labels import label

_LAYER = re.compile(r"^border/layer_(\d+)\.(.+)$")


def _png(fig) -> bytes:
    return to_png(fig, dpi=110)


def _err(v):
    return 0.0 if v is None or not math.isfinite(v) else v


# The range each figure lives in: a CI bar is cut at its ends (a 2-seed interval of an accuracy can
# reach from -0.4 to 2.1; the figure cannot).
_RANGE = {
    "test/acc": (0.0, 1.0),
    "shift/circular_consistency": (0.0, 1.0),
    "crop/consistency": (0.0, 1.0),
    "position/dissimilar_acc": (0.0, 1.0),
    "probe/spc": (-1.0, 1.0),
}


def _bar(key: str, means, cis) -> list[list[float]]:
    """``yerr`` for errorbar/bar: the 95% CI half-width, cut to the figure's range (see _RANGE;
    every other figure is non-negative)."""
    lo, hi = _RANGE.get(key, (0.0, math.inf))
    below = [max(0.0, min(_err(c), m - lo)) if math.isfinite(m) else 0.0 for m, c in zip(means, cis)]
    above = [max(0.0, min(_err(c), hi - m)) if math.isfinite(m) else 0.0 for m, c in zip(means, cis)]
    return [below, above]


def _seeds(rows) -> str:
    n = sorted({row["n_seeds"] for row in rows})
    return f"{n[0]} seeds each" if len(n) == 1 else f"{n[0]}-{n[-1]} seeds"


# Every file study_figures may write (glob patterns): what an aggregation may replace or remove.
STUDY_PLOTS = (
    "acc_vs_throughput.png",
    "shift_consistency.png",
    "border_deviation.png",
    "border_per_layer.png",
    "verdicts.png",
    "factors_heatmap*.png",
    "factors_interaction*.png",
)


def study_figures(study) -> dict[str, bytes]:
    """``acc_vs_throughput.png``, ``shift_consistency.png``, ``border_deviation.png``,
    ``border_per_layer.png`` (those whose metrics the study has) and, for a two-factor grid,
    ``factors_heatmap.png`` and ``factors_interaction.png``."""
    rows = study.summary_rows()
    if not rows:
        return {}
    plt = pyplot()

    cols = [label(c) for c in study.variant_cols]
    names = [", ".join(f"{row[c]}" for c in cols) or "all" for row in rows]
    title = str(study.root.name)
    out = {}
    seeds = list(study.variants.values())  # the runs of each row, in the same order

    # One panel per data set: red-green and shapes10 figures do not share axes.
    panel_of = [str(row.get("data", "")) if "data" in cols else "" for row in rows]
    panels = list(dict.fromkeys(panel_of))
    short = [", ".join(f"{row[c]}" for c in cols if c != "data") or "all" for row in rows]

    def members(panel):
        return [i for i, p in enumerate(panel_of) if p == panel]

    def seed_values(i, key):
        return [r.metrics.get(key) for r in seeds[i] if isinstance(r.metrics.get(key), (int, float))]

    def has(key):
        return all(f"{key}/mean" in row for row in rows)

    if has("test/acc") and has("cost/train_images_per_s"):
        fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.5), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            for n, i in enumerate(members(panel)):
                row = rows[i]
                x, y = row["cost/train_images_per_s/mean"], row["test/acc/mean"]
                color = f"C{n % 10}"
                ax.scatter(
                    seed_values(i, "cost/train_images_per_s"), seed_values(i, "test/acc"), s=10, color=color, alpha=0.4
                )
                ax.errorbar(
                    x,
                    y,
                    xerr=_bar("cost/train_images_per_s", [x], [row.get("cost/train_images_per_s/ci95")]),
                    yerr=_bar("test/acc", [y], [row.get("test/acc/ci95")]),
                    fmt="o",
                    capsize=3,
                    color=color,
                    label=short[i],
                )
            ax.set_xlabel("training throughput (images/s)")
            ax.set_ylabel("test accuracy")
            ax.set_title(panel or title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        fig.suptitle(
            f"{title}: accuracy vs training throughput (mean ± 95% CI; small dots: seeds; {_seeds(rows)})", fontsize=9
        )
        fig.tight_layout()
        out["acc_vs_throughput.png"] = _png(fig)

    def bars(keys, fname, ylabel, caption):
        keys = [(k, lab) for k, lab in keys if has(k)]
        if not keys:
            return
        sizes = [len(members(p)) for p in panels]
        fig, axes = plt.subplots(
            1,
            len(panels),
            figsize=(sum(max(3.0, 0.9 * n + 1.5) for n in sizes), 4.2),
            squeeze=False,
            gridspec_kw={"width_ratios": sizes},
        )
        width = 0.8 / len(keys)
        for ax, panel in zip(axes[0], panels):
            idx = members(panel)
            for j, (k, lab) in enumerate(keys):
                xs = [n + (j - (len(keys) - 1) / 2) * width for n in range(len(idx))]
                means = [rows[i][f"{k}/mean"] for i in idx]
                cis = [rows[i].get(f"{k}/ci95") for i in idx]
                ax.bar(xs, means, width, yerr=_bar(k, means, cis), capsize=3, label=lab, color=f"C{j}")
                for x, i in zip(xs, idx):
                    vals = seed_values(i, k)
                    ax.scatter([x] * len(vals), vals, s=8, color="k", alpha=0.5, zorder=3)
            ax.set_xticks(range(len(idx)))
            ax.set_xticklabels([short[i] for i in idx], rotation=30, ha="right", fontsize=7)
            ax.set_title(panel or title, fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        axes[0][0].set_ylabel(ylabel)
        if len(keys) > 1:
            axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"{title}: {caption} (mean ± 95% CI; dots: seeds; {_seeds(rows)})", fontsize=9)
        fig.tight_layout()
        out[fname] = _png(fig)

    bars(
        [
            ("shift/circular_consistency", "circular shift (Chaman & Dokmanic 2021)"),
            ("crop/consistency", "crop (Zhang 2019)"),
        ],
        "shift_consistency.png",
        "consistency",
        "shift consistency per variant",
    )
    bars(
        [("border/deviation", "mean over layers"), ("border/features", "features")],
        "border_deviation.png",
        "border deviation (constant input)",
        "border deviation per variant (Alsallakh et al. 2021)",
    )

    layered = [
        (
            name,
            sorted(
                (int(m.group(1)), row[k])
                for k in row
                for m in [_LAYER.match(k.removesuffix("/mean"))]
                if m and k.endswith("/mean")
            ),
        )
        for row, name in zip(rows, names)
    ]
    out.update(factor_figures(study, rows, title))
    out.update(verdict_figure(study, title))

    if any(points for _, points in layered):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for name, points in layered:
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=name)
        ax.set_xlabel("layer (forward order: convolutions, pools, blurs)")
        ax.set_ylabel("border deviation")
        ax.set_title(f"{title}: border deviation per layer (mean over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out["border_per_layer.png"] = _png(fig)
    return out


def factor_figures(study, rows: list[dict], title: str) -> dict[str, bytes]:
    """For a grid of two factors (downsample x padding, the common case): ``factors_heatmap.png``, one
    heat map per headline figure (cells: mean over seeds, the 95% CI half-width as text), and
    ``factors_interaction.png``, the mean of each figure against the first factor, one line per value
    of the second (parallel lines: no interaction).

    A study of several grids (the demo: red-green x padding beside shapes10 x downsample x padding)
    gets the same for each group of rows that share every other setting and cross two factors in
    full: the first such pair of factors, one pair of files per group (``factors_heatmap_<group>.png``
    where there are several groups)."""
    cols = [label(c) for c in study.variant_cols]
    base = {label(c): study.baseline.get(c) for c in study.variant_cols}
    for i, a in enumerate(cols):
        for b in cols[i + 1 :]:
            others = [c for c in cols if c not in (a, b)]
            groups: dict[tuple, list[dict]] = {}
            for row in rows:
                groups.setdefault(tuple(str(row[c]) for c in others), []).append(row)
            crossed = {k: g for k, g in groups.items() if _crossed(g, a, b)}
            if not crossed:
                continue
            out = {}
            for key, group in crossed.items():
                where = f"{title} ({', '.join(key)})" if key else title
                suffix = "" if len(crossed) == 1 else "_" + "_".join(key).replace("/", "-")
                for name, png in _factor_pair(group, a, b, (base[a], base[b]), where).items():
                    out[name.replace(".png", f"{suffix}.png")] = png
            return out
    return {}


def _crossed(rows: list[dict], a: str, b: str) -> bool:
    """Do ``rows`` hold every pair of their values of ``a`` and ``b``, at least two of each?"""
    a_values, b_values = {str(r[a]) for r in rows}, {str(r[b]) for r in rows}
    cells = {(str(r[a]), str(r[b])) for r in rows}
    return len(a_values) >= 2 and len(b_values) >= 2 and len(cells) == len(a_values) * len(b_values) == len(rows)


def _factor_pair(rows: list[dict], a: str, b: str, base: tuple, title: str) -> dict[str, bytes]:
    """The heat map and interaction figures of one two-factor grid; ``base``: each factor's baseline."""
    from stridelab.metrics.suite import HEADLINE

    plt = pyplot()
    # the baseline first, as in the verdicts
    a_values = sorted(dict.fromkeys(row[a] for row in rows), key=lambda v: str(v) != str(base[0]))
    b_values = sorted(dict.fromkeys(row[b] for row in rows), key=lambda v: str(v) != str(base[1]))
    cell = {(row[a], row[b]): row for row in rows}
    figures = [(k, name) for k, name in HEADLINE if any(f"{k}/mean" in row for row in rows)]
    figures = [(k, n) for k, n in figures if k not in ("cost/flops_per_image", "coverage/interior_ratio")]
    if not figures or len(a_values) < 2 or len(b_values) < 2:
        return {}
    out = {}
    cols = min(3, len(figures))
    nrows = math.ceil(len(figures) / cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(4.2 * cols, 0.5 * len(a_values) * nrows + 1.6 * nrows), squeeze=False
    )
    for ax, (k, name) in zip(axes.flat, figures):
        grid = [[cell.get((va, vb), {}).get(f"{k}/mean", float("nan")) for vb in b_values] for va in a_values]
        im = ax.imshow(grid, cmap="viridis", aspect="auto")
        finite = [v for r in grid for v in r if math.isfinite(v)]
        middle = (min(finite) + max(finite)) / 2 if finite else 0.0
        for i, va in enumerate(a_values):
            for j, vb in enumerate(b_values):
                row = cell.get((va, vb), {})
                mean, ci = row.get(f"{k}/mean"), row.get(f"{k}/ci95")
                if mean is None:
                    continue
                text = f"{mean:.3g}" + (f"\n±{ci:.2g}" if ci is not None and math.isfinite(ci) and ci > 0 else "")
                ink = "black" if mean > middle else "white"  # readable on viridis' bright and dark ends
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=ink)
        ax.set_xticks(range(len(b_values)), [str(v) for v in b_values], fontsize=7)
        ax.set_yticks(range(len(a_values)), [str(v) for v in a_values], fontsize=7)
        ax.set_xlabel(b, fontsize=8)
        ax.set_ylabel(a, fontsize=8)
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in list(axes.flat)[len(figures) :]:
        ax.axis("off")
    fig.suptitle(f"{title}: {a} x {b}, mean over seeds (± 95% CI half-width; {_seeds(rows)})", fontsize=9)
    fig.tight_layout()
    out["factors_heatmap.png"] = _png(fig)

    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for ax, (k, name) in zip(axes.flat, figures):
        for vb in b_values:
            means = [cell.get((va, vb), {}).get(f"{k}/mean", float("nan")) for va in a_values]
            cis = [cell.get((va, vb), {}).get(f"{k}/ci95") for va in a_values]
            ax.errorbar(range(len(a_values)), means, yerr=_bar(k, means, cis), marker="o", capsize=3, label=f"{b}={vb}")
        ax.set_xticks(range(len(a_values)), [str(v) for v in a_values], fontsize=7)
        ax.set_xlabel(a, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(figures) :]:
        ax.axis("off")
    fig.suptitle(
        f"{title}: interaction of {a} and {b} (mean ± 95% CI cut to the figure's range, {_seeds(rows)}; "
        "parallel lines: no interaction)",
        fontsize=9,
    )
    fig.tight_layout()
    out["factors_interaction.png"] = _png(fig)
    return out


def verdict_figure(study, title: str) -> dict[str, bytes]:
    """``verdicts.png``: the comparisons of summary.md's Verdicts table, one panel per headline figure,
    one row per comparison: the paired mean difference (dot) with its 95% t interval (bar) and the
    zero line; filled where decided (the adjusted p-value below 0.05, as the table's bold)."""
    from stridelab.metrics.suite import HEADLINE

    comps = study.comparisons
    if not comps:
        return {}
    names = dict(HEADLINE)
    figures = [k for k, _ in HEADLINE if any(k in c.differences for c in comps)]
    fractions = ("test/acc", "shift/circular_consistency", "crop/consistency", "position/dissimilar_acc")
    plt = pyplot()
    cols = min(3, len(figures))
    nrows = math.ceil(len(figures) / cols)
    height = max(2.5, 0.28 * len(comps) + 1.2)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, height * nrows), squeeze=False, sharey=True)
    labels = []
    for c in comps:
        i = study.variant_cols.index(c.factor)
        others = [str(v) for j, v in enumerate(c.variant) if j != i]
        labels.append(f"{c.variant[i]} vs {c.baseline[i]}" + (f" ({', '.join(others)})" if others else ""))
    for ax, k in zip(axes.flat, figures):
        scale = 100.0 if k in fractions else 1.0
        for y, c in enumerate(comps):
            d = c.differences.get(k)
            if d is None:
                continue
            filled = d.decided
            if math.isfinite(d.lo):
                ax.plot([scale * d.lo, scale * d.hi], [y, y], color="C0" if filled else "0.6", lw=2)
            ax.plot(scale * d.mean, y, "o", color="C0" if filled else "white", markeredgecolor="C0", ms=5)
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_title(names.get(k, k) + (" (pts)" if scale == 100.0 else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_yticks(range(len(comps)), labels, fontsize=7)
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(figures) :]:
        ax.axis("off")
    n = sorted({next(iter(c.differences.values())).n for c in comps})
    fig.suptitle(
        f"{title}: verdicts, paired difference to the baseline with its 95% t interval "
        f"({n[0]}{'-' + str(n[-1]) if len(n) > 1 else ''} seeds; filled: decided, adjusted p < 0.05, "
        f"{getattr(study, 'correction', 'fdr')})",
        fontsize=9,
    )
    fig.tight_layout()
    return {"verdicts.png": _png(fig)}

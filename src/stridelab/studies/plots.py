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


def study_figures(study) -> dict[str, bytes]:
    """``acc_vs_throughput.png``, ``shift_consistency.png``, ``border_deviation.png``,
    ``border_per_layer.png`` (those whose metrics the study has)."""
    rows = study.summary_rows()
    if not rows:
        return {}
    plt = pyplot()

    cols = [label(c) for c in study.variant_cols]
    names = [", ".join(f"{row[c]}" for c in cols) or "all" for row in rows]
    title = str(study.root.name)
    out = {}

    def has(key):
        return all(f"{key}/mean" in row for row in rows)

    if has("test/acc") and has("cost/train_images_per_s"):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for row, name in zip(rows, names):
            ax.errorbar(
                row["cost/train_images_per_s/mean"],
                row["test/acc/mean"],
                xerr=_err(row.get("cost/train_images_per_s/ci95")),
                yerr=_err(row.get("test/acc/ci95")),
                fmt="o",
                capsize=3,
                label=name,
            )
        ax.set_xlabel("training throughput (images/s)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{title}: accuracy vs training throughput (mean ± 95% CI)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        out["acc_vs_throughput.png"] = _png(fig)

    def bars(keys, fname, ylabel, caption):
        keys = [(k, lab) for k, lab in keys if has(k)]
        if not keys:
            return
        fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 4.2))
        width = 0.8 / len(keys)
        for j, (k, lab) in enumerate(keys):
            xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(
                xs,
                [row[f"{k}/mean"] for row in rows],
                width,
                yerr=[_err(row.get(f"{k}/ci95")) for row in rows],
                capsize=3,
                label=lab,
            )
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {caption}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
        fig.tight_layout()
        out[fname] = _png(fig)

    bars(
        [
            ("shift/circular_consistency", "circular shift (Chaman & Dokmanic 2021)"),
            ("crop/consistency", "crop (Zhang 2019)"),
        ],
        "shift_consistency.png",
        "consistency",
        "shift consistency per variant (mean ± 95% CI)",
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

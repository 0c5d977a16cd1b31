"""Paired comparisons of variants against a baseline (issue 14): the verdicts of a study.

Two variants trained with the same seed see the same data order and initialisation draws, so their
*difference* varies far less across seeds than either mean. For each variant and each figure, the
comparison is the mean over seeds of (variant - baseline), with

* a 95% interval from Student's t on the paired differences, ``mean +- t_{0.975,n-1} sd / sqrt(n)``;
* a 95% percentile interval from a bootstrap over seeds (the paired differences resampled with
  replacement, 2000 times, a fixed generator: the same runs give the same interval).

Where the two variants do not share every seed (a run failed or is missing) they are compared
unpaired: Welch's interval for the difference of means (degrees of freedom by Welch-Satterthwaite,
rounded down: a slightly wider interval) and a bootstrap that resamples each side on its own; the
verdict says "unpaired". A comparison whose t interval excludes 0 is marked.

Which comparisons: for every swept factor (downsample, padding, ...) with a baseline value, each
variant whose value differs is compared with the variant that is the same except for that factor
at its baseline value ("blurpool vs conv (zeros)"). References: Student (1908); Welch (1947);
Efron & Tibshirani, An Introduction to the Bootstrap (1993), ch. 13 (percentile interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stridelab.studies.stats import t975

BOOTSTRAP_SAMPLES = 2000


@dataclass
class Difference:
    """``mean`` of (variant - baseline) with its t interval ``lo``..``hi`` and bootstrap interval."""

    n: int  # paired seeds, or the smaller side's runs when unpaired
    paired: bool
    mean: float
    lo: float
    hi: float
    boot_lo: float
    boot_hi: float

    @property
    def excludes_zero(self) -> bool:
        return math.isfinite(self.lo) and (self.lo > 0 or self.hi < 0)


def paired_difference(variant: dict, baseline: dict, samples: int = BOOTSTRAP_SAMPLES) -> Difference | None:
    """``variant`` and ``baseline`` map seed -> value. Paired by seed when both have the same seeds,
    else unpaired; None when a side has no value."""
    a = {s: float(v) for s, v in variant.items() if v is not None and math.isfinite(float(v))}
    b = {s: float(v) for s, v in baseline.items() if v is not None and math.isfinite(float(v))}
    if not a or not b:
        return None
    rng = np.random.default_rng(0)
    if set(a) == set(b):
        d = np.array([a[s] - b[s] for s in sorted(a)])
        n, mean = len(d), float(d.mean())
        if n < 2:
            nan = float("nan")
            return Difference(n, True, mean, nan, nan, nan, nan)
        half = t975(n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
        boot = d[rng.integers(0, n, (samples, n))].mean(axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        return Difference(n, True, mean, mean - half, mean + half, float(lo), float(hi))
    x, y = np.array(list(a.values())), np.array(list(b.values()))
    mean = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        nan = float("nan")
        return Difference(min(len(x), len(y)), False, mean, nan, nan, nan, nan)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)) if se > 0 else len(x) + len(y) - 2
    half = t975(max(1, int(df))) * se
    boot = x[rng.integers(0, len(x), (samples, len(x)))].mean(axis=1) - y[
        rng.integers(0, len(y), (samples, len(y)))
    ].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return Difference(min(len(x), len(y)), False, mean, mean - half, mean + half, float(lo), float(hi))


@dataclass
class Comparison:
    """``variant`` against ``baseline`` (tuples of the variant columns' values), differing in ``factor``."""

    factor: str
    variant: tuple
    baseline: tuple
    differences: dict  # metric -> Difference


def default_baseline(columns: list[str], variants: list[tuple], first: dict | None = None) -> dict:
    """The baseline value of each factor: ``first[column]`` where given (a study file's ``baseline:``,
    or the first value a sweep lists), else the first value among the variants."""
    first = first or {}
    out = {}
    for i, c in enumerate(columns):
        values = [v[i] for v in variants]
        given = first.get(c)
        out[c] = next((v for v in values if str(v) == str(given)), values[0]) if given is not None else values[0]
    return out


def compare(columns: list[str], seeds_by_variant: dict, baseline: dict, metrics: list[str]) -> list[Comparison]:
    """Every factor contrast against ``baseline`` (column -> value). ``seeds_by_variant`` maps a variant
    tuple to ``{metric: {seed: value}}``."""
    out = []
    for i, factor in enumerate(columns):
        base_value = baseline.get(factor)
        for variant, figures in seeds_by_variant.items():
            if str(variant[i]) == str(base_value):
                continue
            ref = tuple(base_value if j == i else v for j, v in enumerate(variant))
            ref_key = next((k for k in seeds_by_variant if tuple(map(str, k)) == tuple(map(str, ref))), None)
            if ref_key is None:
                continue
            diffs = {}
            for m in metrics:
                d = paired_difference(figures.get(m, {}), seeds_by_variant[ref_key].get(m, {}))
                if d is not None:
                    diffs[m] = d
            if diffs:
                out.append(Comparison(factor, variant, ref_key, diffs))
    return out

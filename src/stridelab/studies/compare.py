"""Paired comparisons of variants against a baseline (issues 14, 23): the verdicts of a study.

Two variants trained with the same seed see the same data order and initialisation draws, so their
*difference* varies far less across seeds than either mean. For each variant and each figure, the
comparison is the mean over seeds of (variant - baseline), with

* the paired t test (``scipy.stats.ttest_rel``): its two-sided p-value and 95% interval
  (``confidence_interval``), ``mean +- t_{0.975,n-1} sd / sqrt(n)``;
* a 95% bootstrap interval over seeds (``scipy.stats.bootstrap``, 2000 resamples, a fixed generator: the
  same runs give the same interval): BCa where it is defined, the percentile interval where BCa is not
  (all resampled means equal, or too few distinct resamples); ``boot_method`` says which;
* ``seeds_needed``: the paired seeds that would decide the observed difference at 80% power
  (:func:`stridelab.studies.stats.seeds_needed`).

Where the two variants do not share every seed (a run failed or is missing) they are compared
unpaired: Welch's t test (``scipy.stats.ttest_ind(equal_var=False)``: Welch-Satterthwaite degrees of
freedom, not rounded) and a bootstrap that resamples each side on its own; the verdict says "unpaired".

A study tests many comparisons x figures at once; :func:`compare` adjusts their p-values together
(``correction``: Benjamini-Hochberg false discovery rate, the default; Holm's family-wise error; or
none), and a cell is decided where its adjusted p-value is below 0.05. The raw intervals stay as they
are. Which comparisons: for every swept factor (downsample, padding, ...) with a baseline value, each
variant whose value differs is compared with the variant that is the same except for that factor at its
baseline value ("blurpool vs conv (zeros)"). References: Student (1908); Welch (1947); Efron &
Tibshirani, An Introduction to the Bootstrap (1993), ch. 13-14 (percentile and BCa); Benjamini &
Hochberg (1995); Holm (1979).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from stridelab.studies.stats import ALPHA, adjust, seeds_needed

BOOTSTRAP_SAMPLES = 2000
NAN = float("nan")


@dataclass
class Difference:
    """``mean`` of (variant - baseline) with its t interval ``lo``..``hi``, its bootstrap interval, the t
    test's p-value ``p`` and, once the study's comparisons are adjusted together, ``p_adj``."""

    n: int  # paired seeds, or the smaller side's runs when unpaired
    paired: bool
    mean: float
    lo: float
    hi: float
    boot_lo: float
    boot_hi: float
    p: float = NAN  # two-sided, paired t (or Welch)
    boot_method: str = ""  # BCa | percentile ("" without an interval)
    sd: float = NAN  # of the paired differences
    seeds_needed: int | None = None  # paired seeds that would decide this difference at 80% power
    p_adj: float = NAN  # p after the study's correction (compare(); equal to p before)
    correction: str = "none"

    @property
    def excludes_zero(self) -> bool:
        """The raw 95% t interval excludes 0 (before any correction)."""
        return math.isfinite(self.lo) and (self.lo > 0 or self.hi < 0)

    @property
    def decided(self) -> bool:
        """The seeds decide the sign: the adjusted p-value is below 0.05."""
        return math.isfinite(self.p_adj) and self.p_adj < ALPHA


def _bootstrap(samples: tuple, statistic) -> tuple[float, float, str]:
    """95% bootstrap interval of ``statistic`` over ``samples`` (each resampled on its own): BCa, or the
    percentile interval where BCa is not defined."""
    for method in ("BCa", "percentile"):
        options = {"n_resamples": BOOTSTRAP_SAMPLES, "confidence_level": 0.95, "method": method, "vectorized": True}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a degenerate BCa says so by NaN, handled here
            try:
                try:
                    res = stats.bootstrap(samples, statistic, rng=np.random.default_rng(0), **options)
                except TypeError:  # scipy < 1.15 names the generator random_state
                    res = stats.bootstrap(samples, statistic, random_state=np.random.default_rng(0), **options)
            except ValueError:
                continue
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi, method
    return NAN, NAN, ""


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def paired_difference(variant: dict, baseline: dict) -> Difference | None:
    """``variant`` and ``baseline`` map seed -> value. Paired by seed when both have the same seeds,
    else unpaired; None when a side has no value."""
    a = {s: float(v) for s, v in variant.items() if v is not None and math.isfinite(float(v))}
    b = {s: float(v) for s, v in baseline.items() if v is not None and math.isfinite(float(v))}
    if not a or not b:
        return None
    if set(a) == set(b):
        seeds = sorted(a)
        x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
        d = x - y
        n, mean = len(d), float(d.mean())
        if n < 2:
            return Difference(n, True, mean, NAN, NAN, NAN, NAN)
        sd = float(d.std(ddof=1))
        if sd <= 1e-12 * max(1.0, abs(mean)):  # every seed differs by the same amount: t is infinite (or 0/0)
            sd = 0.0
            p = 0.0 if mean != 0 else 1.0
            return Difference(n, True, mean, mean, mean, mean, mean, p, "", sd, None, p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy's "nearly identical data" (handled above)
            test = stats.ttest_rel(x, y)
            ci = test.confidence_interval(0.95)
        boot_lo, boot_hi, method = _bootstrap((d,), _mean)
        p = float(test.pvalue)
        need = seeds_needed(mean, sd)
        return Difference(n, True, mean, float(ci.low), float(ci.high), boot_lo, boot_hi, p, method, sd, need, p)
    x, y = np.array(list(a.values())), np.array(list(b.values()))
    mean = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Difference(min(len(x), len(y)), False, mean, NAN, NAN, NAN, NAN)
    if x.std() == 0 and y.std() == 0:  # no spread on either side: Welch's t is undefined
        p = 0.0 if mean != 0 else 1.0
        return Difference(min(len(x), len(y)), False, mean, mean, mean, mean, mean, p, "", NAN, None, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(x, y, equal_var=False)
        ci = test.confidence_interval(0.95)
    boot_lo, boot_hi, method = _bootstrap((x, y), _mean_difference)
    p = float(test.pvalue)
    return Difference(
        min(len(x), len(y)), False, mean, float(ci.low), float(ci.high), boot_lo, boot_hi, p, method, NAN, None, p
    )


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


def compare(
    columns: list[str], seeds_by_variant: dict, baseline: dict, metrics: list[str], correction: str = "fdr"
) -> list[Comparison]:
    """Every factor contrast against ``baseline`` (column -> value), their p-values adjusted together by
    ``correction`` (fdr, holm or none). ``seeds_by_variant`` maps a variant tuple to
    ``{metric: {seed: value}}``."""
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
    every = [d for c in out for d in c.differences.values()]
    for d, p_adj in zip(every, adjust([d.p for d in every], correction)):
        d.p_adj, d.correction = p_adj, correction
    return out

"""The statistics of a study's tables, on ``scipy.stats`` (issue 23): mean, standard deviation and a 95%
confidence interval over seeds (Student's t), multiple-comparison adjustment of p-values, and the number of
paired seeds that would decide a difference.

* :func:`describe`: ``t_{0.975, n-1} sd / sqrt(n)``, the t quantile from ``scipy.stats.t.ppf``.
* :func:`adjust`: Benjamini & Hochberg (1995), "Controlling the false discovery rate", JRSS B 57(1)
  (``scipy.stats.false_discovery_control``, method ``bh``), or Holm (1979), "A simple sequentially
  rejective multiple test procedure", Scand. J. Statist. 6(2) (step-down, written out here: scipy has
  no Holm), or none.
* :func:`seeds_needed`: the power of a two-sided paired t test at level ``alpha`` for ``n`` pairs, from
  the noncentral t distribution (``scipy.stats.nct``; e.g. Cohen 1988, Statistical Power Analysis,
  ch. 2): ``P(|T| > t_{1-alpha/2, n-1})`` with ``T ~ nct(n-1, (mean / sd) sqrt(n))``; the smallest
  ``n`` with power >= 0.8. It takes the observed mean and standard deviation of the differences as the
  truth: with 2 or 3 seeds the standard deviation is itself a guess (docs/metrics.md, "Comparing
  variants").
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CORRECTIONS = ("fdr", "holm", "none")
ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # beyond this, a difference is reported as too small to decide with seeds


def t975(df: float) -> float:
    """``t_{0.975}`` with ``df`` degrees of freedom (``scipy.stats.t.ppf``); NaN below 1."""
    return float(stats.t.ppf(0.975, df)) if df >= 1 else float("nan")


def describe(values: list[float]) -> dict[str, float]:
    """``n``, ``mean``, ``std`` (sample, ddof=1) and ``ci95``, the half-width ``t_{0.975,n-1} std / sqrt(n)``
    of the 95% confidence interval of the mean (NaN for std and ci95 when n < 2)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "ci95": float("nan")}
    mean = float(np.mean(vals))
    if n < 2:
        return {"n": 1, "mean": mean, "std": float("nan"), "ci95": float("nan")}
    std = float(np.std(vals, ddof=1))
    return {"n": n, "mean": mean, "std": std, "ci95": t975(n - 1) * std / math.sqrt(n)}


def adjust(p_values: list[float], correction: str = "fdr") -> list[float]:
    """``p_values`` adjusted for testing them all at once (NaN ones are not tests: they stay NaN and do not
    count). ``fdr``: Benjamini-Hochberg adjusted p-values (a cell is decided at false discovery rate 5%
    where its adjusted p < 0.05); ``holm``: Holm's step-down adjusted p-values (family-wise error 5%);
    ``none``: unchanged."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tests = np.isfinite(p)
    if not tests.any():
        return out.tolist()
    q = p[tests]
    if correction == "fdr":
        out[tests] = stats.false_discovery_control(q, method="bh")
    elif correction == "holm":
        out[tests] = holm(q)
    else:
        out[tests] = q
    return out.tolist()


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values: sorted ascending, the i-th (from 0) is ``max_{j <= i} min(1, (m - j) p_(j))``."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def paired_power(n: int, effect: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test with ``n`` pairs for a true standardised difference ``effect``
    (mean / sd of the differences)."""
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n)
    power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    if not math.isfinite(power):  # scipy's nct fails for large nc, where the normal approximation is exact enough
        power = float(stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc))
    return power


def seeds_needed(mean: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The smallest number of paired seeds (>= 2) whose paired t test at ``alpha`` has ``power`` to decide a
    true mean difference ``mean`` with standard deviation ``sd`` of the differences; None where it cannot
    be said (no spread observed, no difference, or more than :data:`MAX_SEEDS`)."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or sd <= 0 or mean == 0:
        return None
    effect = abs(mean) / sd
    lo, hi = 2, MAX_SEEDS
    if paired_power(hi, effect, alpha) < power:
        return None
    while lo < hi:  # power grows with n: bisect for the first n that reaches it
        mid = (lo + hi) // 2
        if paired_power(mid, effect, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo

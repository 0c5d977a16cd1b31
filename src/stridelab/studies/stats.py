"""Mean, standard deviation and a 95% confidence interval over seeds (Student's t)."""

from __future__ import annotations

import math

# Two-sided 95% quantiles t_{0.975, df} for df = 1..30.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(df: int) -> float:
    """``t_{0.975}`` with ``df`` degrees of freedom (table to 30; beyond, 1.96 + 2.4/df, within 0.002)."""
    if df < 1:
        return float("nan")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def describe(values: list[float]) -> dict[str, float]:
    """``n``, ``mean``, ``std`` (sample, ddof=1) and ``ci95``, the half-width ``t_{0.975,n-1} std / sqrt(n)``
    of the 95% confidence interval of the mean (NaN for std and ci95 when n < 2)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "ci95": float("nan")}
    mean = sum(vals) / n
    if n < 2:
        return {"n": 1, "mean": mean, "std": float("nan"), "ci95": float("nan")}
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return {"n": n, "mean": mean, "std": std, "ci95": t975(n - 1) * std / math.sqrt(n)}

"""Summaries across seeds: means with confidence intervals (Table III: 95 %)."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from .checks import check_real

__all__ = ["mean_ci", "summarise"]


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and two-sided Student-t interval of independent samples (NaN rejected).

    One sample gives the interval (mean, mean), there being no spread to estimate.

    >>> m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    >>> m, round(lo, 4), round(hi, 4)
    (2.0, -0.4841, 4.4841)
    """
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        raise ValueError("values: need at least one sample")
    if np.isnan(x).any():
        raise ValueError(f"values: contains NaN ({x.tolist()})")
    check_real("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    from scipy import stats

    # t * sd / sqrt(n), not scipy's t * sem (NaN for zero spread), so the numbers stay bit for bit the book's
    half = float(stats.t.interval(confidence, df=x.size - 1)[1] * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def summarise(frame, by: Sequence[str] | str, value: str, confidence: float = 0.95):
    """Mean, CI low/high and sample count ``n`` of ``value`` per group of ``by`` in a DataFrame (a row per seed)."""
    import pandas as pd

    keys = [by] if isinstance(by, str) else list(by)
    rows = []
    for group, sub in frame.groupby(keys, sort=True):
        m, lo, hi = mean_ci(sub[value].to_numpy(), confidence)
        rows.append(dict(zip(keys, group), mean=m, low=lo, high=hi, n=len(sub)))
    return pd.DataFrame(rows)

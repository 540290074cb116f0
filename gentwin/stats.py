"""Summaries across seeds: means with confidence intervals (Table III: 95 %)."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

__all__ = ["mean_ci", "summarise"]


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of independent samples.

    Parameters
    ----------
    values : iterable of float
        One value per seed.  NaN is rejected.
    confidence : float
        Level of the two-sided interval, in (0, 1).

    Returns
    -------
    (mean, low, high)
        With one sample the interval is (mean, mean): there is no spread to
        estimate, and the caller should show that only one seed ran.

    Examples
    --------
    >>> m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    >>> m, round(lo, 4), round(hi, 4)
    (2.0, -0.4841, 4.4841)
    """
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        raise ValueError("values: need at least one sample")
    if np.isnan(x).any():
        raise ValueError(f"values: contains NaN ({x.tolist()})")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence = {confidence!r}: must be in (0, 1)")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def summarise(frame, by: Sequence[str] | str, value: str, confidence: float = 0.95):
    """Mean, CI low/high and sample count of ``value`` per group of ``by``.

    ``frame`` is a :class:`pandas.DataFrame` with one row per seed (and per
    group); the result has columns ``by + [mean, low, high, n]``.
    """
    import pandas as pd

    keys = [by] if isinstance(by, str) else list(by)
    rows = []
    for group, sub in frame.groupby(keys, sort=True):
        group = group if isinstance(group, tuple) else (group,)
        m, lo, hi = mean_ci(sub[value].to_numpy(), confidence)
        rows.append(dict(zip(keys, group), mean=m, low=lo, high=hi, n=len(sub)))
    return pd.DataFrame(rows)

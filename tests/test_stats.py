"""gentwin.stats: Student-t means and intervals across seeds, checked against hand-worked values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from gentwin.stats import mean_ci, summarise


def test_mean_ci_matches_the_hand_worked_t_interval() -> None:
    # [1, 2, 3]: mean 2, sd 1, n 3, t(0.975, 2) = 4.3026527297 (tables: 4.303) -> half = 4.3027 / sqrt(3)
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = 4.3026527297 / math.sqrt(3)
    assert m == 2.0
    assert lo == pytest.approx(2.0 - half, abs=1e-9) and hi == pytest.approx(2.0 + half, abs=1e-9)


def test_mean_ci_at_90_percent_is_narrower() -> None:
    # t(0.95, 3) = 2.3533634348 (tables: 2.353); [0, 2, 4, 6]: mean 3, sd sqrt(20/3)
    m, lo, hi = mean_ci([0.0, 2.0, 4.0, 6.0], 0.90)
    half = 2.3533634348 * math.sqrt(20 / 3) / 2
    assert (m, lo, hi) == pytest.approx((3.0, 3.0 - half, 3.0 + half), abs=1e-9)
    assert hi - lo < mean_ci([0.0, 2.0, 4.0, 6.0], 0.95)[2] - mean_ci([0.0, 2.0, 4.0, 6.0], 0.95)[1]


def test_mean_ci_keeps_the_historical_formula_bit_for_bit() -> None:
    # the book's glued values must not move: t * sd / sqrt(n), exactly
    from scipy import stats

    x = [0.3, 1.7, 2.9, 0.1, 5.5]
    sd = pd.Series(x).std(ddof=1)
    half = float(stats.t.ppf(0.975, df=4) * sd / math.sqrt(5))
    m = sum(x) / 5
    _, lo, hi = mean_ci(x)
    assert (lo, hi) == (pytest.approx(m - half, rel=0, abs=1e-15), pytest.approx(m + half, rel=0, abs=1e-15))


def test_no_spread_and_one_sample_give_a_point_interval() -> None:
    assert mean_ci([4.0, 4.0, 4.0]) == (4.0, 4.0, 4.0)  # scipy alone would give NaN for scale 0
    assert mean_ci([7.5]) == (7.5, 7.5, 7.5)


@pytest.mark.parametrize("values, confidence, words", [
    ([], 0.95, "at least one sample"),
    ([1.0, math.nan], 0.95, "NaN"),
    ([1.0, 2.0], 1.0, "confidence = 1.0"),
    ([1.0, 2.0], 0.0, "confidence = 0.0"),
])
def test_bad_input_is_named(values, confidence, words) -> None:
    with pytest.raises(ValueError, match=words):
        mean_ci(values, confidence)


def test_summarise_groups_and_counts() -> None:
    frame = pd.DataFrame({"g": ["a", "a", "a", "b"], "v": [1.0, 2.0, 3.0, 9.0]})
    out = summarise(frame, "g", "v").set_index("g")
    assert list(out.index) == ["a", "b"]
    assert out.loc["a", "n"] == 3 and out.loc["b", "n"] == 1
    assert tuple(out.loc["a", ["mean", "low", "high"]]) == mean_ci([1.0, 2.0, 3.0])
    assert tuple(out.loc["b", ["mean", "low", "high"]]) == (9.0, 9.0, 9.0)

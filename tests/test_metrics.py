"""Tests for gentwin.metrics: hand-worked values and invariants of every measured quantity."""
from __future__ import annotations

# Sections (one owner each while the library is restructured; keep these markers):
# --- eq. (9): L1 and accuracy over relations; the pooling gain (Fig. 6) ---
# --- eq. (10): retrieval recall@k ---
# --- Fig. 8: response gap ---
# --- Table IV: completeness ---

import math

import numpy as np
import pytest

from gentwin.metrics import completeness


def test_completeness_hand_worked():
    # 2 sensors x 4 slots; sensor 1 inactive in slot 3 -> |T| = 7
    T = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    O = np.array([[1, 0, 0, 1], [1, 0, 1, 0]], bool)  # 4 observed
    G = np.array([[0, 1, 1, 0], [0, 0, 0, 1]], bool)  # 3 generated: 2 right, 1 in the inactive cell
    s = completeness(T, O, G)
    assert (s.n_truth, s.n_observed, s.n_generated, s.n_generated_correct) == (7, 4, 3, 2)
    assert s.completeness == pytest.approx((4 + 2) / 7)
    assert s.observed_share == pytest.approx(4 / 7)
    assert s.generated_precision == pytest.approx(2 / 3)
    assert s.false_record_rate == pytest.approx(1 / 7)
    trad = completeness(T, O)
    assert trad.completeness == pytest.approx(4 / 7) and math.isnan(trad.generated_precision)


def test_inventing_everything_does_not_raise_completeness_beyond_truth():
    T = np.array([[1, 0, 0, 0]], bool)
    O = np.zeros_like(T)
    G = np.ones_like(T)  # invents a record in every cell; 3 of 4 are wrong
    s = completeness(T, O, G)
    assert s.completeness == 1.0  # it holds the one true record ...
    assert s.generated_precision == 0.25 and s.false_record_rate == 3.0  # ... and the wrong ones show


def test_completeness_rejects_generated_counted_as_observed():
    T = np.ones((1, 2), bool)
    with pytest.raises(ValueError, match="generated: cell .* both observed and generated"):
        completeness(T, np.array([[1, 0]], bool), np.array([[1, 0]], bool))


@pytest.mark.parametrize(
    "T, O, G, field",
    [
        (np.array([[1, 0]], bool), np.array([[0, 1]], bool), None, "observed"),  # observed a reading nobody sent
        (np.zeros((1, 2), bool), np.zeros((1, 2), bool), None, "truth"),  # empty truth
        (np.ones((1, 2), bool), np.ones((2, 2), bool), None, "observed"),  # shape
        (np.ones((1, 2)), np.ones((1, 2), bool), None, "truth"),  # dtype
    ],
)
def test_completeness_bad_input(T, O, G, field):
    with pytest.raises(ValueError, match=field):
        completeness(T, O, G)

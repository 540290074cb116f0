"""Tests for gentwin.metrics: hand-worked values and invariants of every measured quantity."""
from __future__ import annotations

# --- eq. (9): L1 and accuracy over relations; the pooling gain (Fig. 6) ---

import pytest  # noqa: E402 - each section imports what it needs

from gentwin import metrics  # noqa: E402


def test_l1_hand_worked():
    # 5 indexed relations: 3 true; the model produces 2 of them and 1 false one -> |0|+|0|+|1|+|1|+|0| = 2 -> 2/5
    assert metrics.l1_loss([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(0.4)
    assert metrics.l1_loss([1, 0], [0.25, 0.5]) == pytest.approx(0.625)


def test_l1_index_readings():
    gold = {"a", "b", "c"}
    produced = {"a", "x", "y"}
    r, r_hat, rels = metrics.relation_indicators(gold, produced, index="union")
    assert rels == ["a", "b", "c", "x", "y"]
    assert metrics.l1_loss(r, r_hat) == pytest.approx(4 / 5)  # |G Δ P| / |G ∪ P|
    r, r_hat, rels = metrics.relation_indicators(gold, produced, index="gold")
    assert rels == ["a", "b", "c"] and metrics.l1_loss(r, r_hat) == pytest.approx(2 / 3)  # 1 - recall


@pytest.mark.parametrize(
    "r, r_hat, match",
    [([1, 0], [1], "r_hat: has 1 entries but r has 2"), ([], [], "r = "), ([1, 2], [1, 0], r"r = \[1.0, 2.0\]"),
     ([1, 0], [float("nan"), 0], "r_hat = ")],
)
def test_l1_bad_input(r, r_hat, match):
    with pytest.raises(ValueError, match=match):
        metrics.l1_loss(r, r_hat)


def test_triple_scores_are_micro_averaged_per_entity():
    a, b = ("s", "IN", "x"), ("t", "IN", "x")
    # entity 0 produces entity 1's fact: it is not correct for entity 0
    sc = metrics.triple_scores([{a}, {b}], [{b}, {b}])
    assert sc["accuracy"] == 0.5 and sc["precision"] == 0.5 and sc["l1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="l1_index = 'all'"):
        metrics.triple_scores([{a}], [{a}], index="all")


def test_pooling_gain_is_the_ratio_of_the_areas_under_the_curves():
    assert metrics.pooling_gain([10, 30], [10, 10]) == pytest.approx(100.0)  # (40 - 20) / 20
    assert metrics.pooling_gain([5, 5], [10, 10]) == pytest.approx(-50.0)
    with pytest.raises(ValueError, match="without_pooling: extracted nothing in any round; the gain is undefined"):
        metrics.pooling_gain([1, 2], [0, 0])
    with pytest.raises(ValueError, match="equal length"):
        metrics.pooling_gain([1, 2, 3], [1, 2])


def test_class_accuracy_splits_by_membership_and_rejects_ragged_input():
    out = metrics.class_accuracy([{"a", "b"}, {"c"}], [{"a", "c"}, {"c"}], [{"a", "b"}, {"c"}])
    assert out["accuracy_copyable"] == pytest.approx(2 / 3) and out["copyable_share"] == 1.0  # a, c of a, b, c
    assert out["accuracy_inferred"] != out["accuracy_inferred"]  # NaN: no inferred relation
    with pytest.raises(ValueError, match="members"):
        metrics.class_accuracy([{"a"}], [set()], [])


def test_bootstrap_interval_stays_inside_the_values_and_mde_shrinks_with_seeds():
    gains = [-95.0, -90.0, 40.0, 45.0, -85.0]
    m, lo, hi = metrics.bootstrap_ci(gains, 0.95, seed=1)
    assert m == pytest.approx(-37.0) and -95.0 <= lo < m < hi <= 45.0
    assert metrics.bootstrap_ci(gains, 0.95, seed=1) == (m, lo, hi)  # seeded: the same interval again
    assert metrics.min_detectable_effect(gains * 4) < metrics.min_detectable_effect(gains)
    assert metrics.min_detectable_effect([3.0]) != metrics.min_detectable_effect([3.0])  # NaN for one seed


def test_compare_graph_precision_and_recall_by_hand():
    truth = {("a", "IN", "b"), ("c", "IN", "b"), ("d", "IN", "b"), ("e", "IN", "b")}
    cmp = metrics.compare_graph({("a", "IN", "b"), ("c", "IN", "b"), ("x", "IN", "y")}, truth)
    assert (cmp["correct"], cmp["precision"], cmp["recall"]) == (2, pytest.approx(2 / 3), 0.5)
    assert metrics.compare_graph(set(), truth)["precision"] == 0.0
    with pytest.raises(ValueError, match="truth: has no relation"):
        metrics.compare_graph({("a", "IN", "b")}, set())


# --- eq. (10): retrieval recall@k ---


def test_recall_at_k_by_hand():
    from gentwin.metrics import recall_at_k

    ranking = ["a", "c", "b", "d"]
    assert recall_at_k(ranking, {"a", "b"}, 1) == 0.5  # a is in the top 1, b is not
    assert recall_at_k(ranking, {"a", "b"}, 2) == 0.5
    assert recall_at_k(ranking, {"a", "b"}, 3) == 1.0
    assert recall_at_k(ranking, {"x"}, 4) == 0.0
    assert recall_at_k(ranking, {"b", "d", "x"}, 10) == 2 / 3  # k past the end: what was retrieved counts
    with pytest.raises(ValueError, match="gold: a question needs at least one gold fact"):
        recall_at_k(ranking, set(), 1)
    for bad in (0, True, 1.0):
        with pytest.raises(ValueError, match="k = "):
            recall_at_k(ranking, {"a"}, bad)


def test_answer_correct_needs_every_gold_fact_and_no_contradiction():
    from gentwin.metrics import answer_correct

    up, other, act = ("S", "CONNECTED_TO", "G1"), ("S", "CONNECTED_TO", "G2"), ("S", "active", "True")
    assert answer_correct([up, act], {up}, 2)
    assert not answer_correct([act, up], {up}, 1)  # the gold fact is past k
    assert not answer_correct([up, other], {up}, 2)  # an invented uplink beside the true one
    assert answer_correct([up, act, other], {up}, 2)  # ... unless it is past k
    assert answer_correct([up, other], {up, other}, 2)  # two true values of one key contradict nothing
    assert not answer_correct([up, act], {up, ("S", "SERVES_IN", "AQ")}, 2)  # half the gold is not an answer
    keyed = answer_correct(["S=G1", "S=G2"], {"S=G1"}, 2, key=lambda s: s.split("=")[0])
    assert keyed is False
    with pytest.raises(ValueError, match="gold: a question needs at least one gold fact"):
        answer_correct([up], set(), 1)


def test_answer_scores_by_hand():
    import pandas as pd
    from gentwin.metrics import answer_scores

    rows = pd.DataFrame({"graph": ["true"] * 4 + ["gen"] * 4, "qid": [0, 1, 2, 3] * 2,
                         "correct": [1, 1, 1, 0, 1, 0, 0, 0], "recall": [1, 1, 1, 0.5, 1, 0.5, 0, 0]})
    t = answer_scores(rows, "true", seed=1)
    assert t.index.tolist() == ["true", "gen", "gen − true"]
    assert t["correct"].tolist() == [0.75, 0.25, -0.5]  # paired differences 0, -1, -1, 0
    assert t["recall"].tolist() == [0.875, 0.375, -0.5]  # paired differences 0, -0.5, -1, -0.5
    for m in ("correct", "recall"):
        assert (t[f"{m}_low"] <= t[m]).all() and (t[m] <= t[f"{m}_high"]).all()
    assert t.loc["gen − true", "correct_low"] >= -1 and t.loc["gen − true", "correct_high"] <= 0  # resampled means
    assert t.loc["gen − true", "correct_low"] < t.loc["gen − true", "correct_high"]
    every_one = answer_scores(rows.assign(correct=1), "true")  # equal values: the interval is that value
    assert every_one.loc["true", ["correct_low", "correct_high"]].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="baseline = 'x'"):
        answer_scores(rows, "x")
    with pytest.raises(ValueError, match="do not answer the same questions"):
        answer_scores(rows.iloc[:-1], "true")
    with pytest.raises(ValueError, match="lacks the column"):
        answer_scores(rows.drop(columns="qid"), "true")


# --- Fig. 8: response gap ---


def test_response_gap_by_hand():
    from gentwin.metrics import response_gap

    assert response_gap(200.0, 150.0) == 25.0
    assert response_gap(100.0, 120.0) == -20.0
    with pytest.raises(ValueError, match="traditional_ms = 0: must be > 0"):
        response_gap(0, 1.0)


def test_response_gaps_by_hand():
    import pandas as pd

    from gentwin.metrics import response_gaps

    # rate 0.2: seeds give GenTwin 100 / 300 ms, traditional 200 / 400 ms -> means 200 / 300, gap 100/300 = 33.3 %;
    # per-seed gaps 50 % and 25 %; rate 1.0: GenTwin slower (gap -50 %)
    rows = [("GenTwin", 0.2, 0, 100.0), ("GenTwin", 0.2, 1, 300.0), ("traditional", 0.2, 0, 200.0),
            ("traditional", 0.2, 1, 400.0), ("GenTwin", 1.0, 0, 150.0), ("GenTwin", 1.0, 1, 150.0),
            ("traditional", 1.0, 0, 100.0), ("traditional", 1.0, 1, 100.0)]
    per_seed = pd.DataFrame(rows, columns=["twin", "rate", "seed", "response_ms"])
    g = response_gaps(per_seed, confidence=0.95)
    assert g.index.tolist() == [0.2, 1.0]
    assert g.loc[0.2, "GenTwin (ms)"] == 200.0 and g.loc[0.2, "traditional (ms)"] == 300.0
    assert g.loc[0.2, "gap %"] == pytest.approx(100 / 3)
    low, high = g.loc[0.2, "gap % CI low (per seed)"], g.loc[0.2, "gap % CI high (per seed)"]
    assert (low + high) / 2 == pytest.approx(37.5) and low < 25.0 and high > 50.0  # t interval, 2 seeds: wide
    assert g.loc[1.0, "gap %"] == pytest.approx(-50.0)
    assert g.loc[1.0, "gap % CI low (per seed)"] == g.loc[1.0, "gap % CI high (per seed)"] == pytest.approx(-50.0)
    assert g.loc[0.2, "gap % (per seed)"] == pytest.approx(37.5) and g.loc[0.2, "n"] == 2
    # another pairing and grouping: the arm and baseline are named, seeds missing one of them are left out
    other = per_seed.assign(twin=per_seed.twin.map({"GenTwin": "incremental", "traditional": "event-driven"}),
                            bin=per_seed.rate.map({0.2: 0, 1.0: 1})).drop(columns="rate")
    other = other[~((other.seed == 1) & (other.bin == 0) & (other.twin == "incremental"))]
    h = response_gaps(other, arm="incremental", baseline="event-driven", by="bin")
    assert h.loc[0, "n"] == 1 and h.loc[0, "gap % (per seed)"] == pytest.approx(50.0)
    assert h.loc[0, "incremental (ms)"] == 100.0 and h.loc[0, "event-driven (ms)"] == 200.0


def test_gap_widening_by_hand():
    import pandas as pd

    from gentwin.metrics import gap_widening

    # seed 0: gap 50 % at 0.2, -50 % at 1.0 (change -100); seed 1: 25 % then -50 % (change -75)
    rows = [("GenTwin", 0.2, 0, 100.0), ("GenTwin", 0.2, 1, 300.0), ("traditional", 0.2, 0, 200.0),
            ("traditional", 0.2, 1, 400.0), ("GenTwin", 1.0, 0, 150.0), ("GenTwin", 1.0, 1, 150.0),
            ("traditional", 1.0, 0, 100.0), ("traditional", 1.0, 1, 100.0)]
    per_seed = pd.DataFrame(rows, columns=["twin", "rate", "seed", "response_ms"])
    mean, low, high, n = gap_widening(per_seed, 0.2, 1.0)
    assert mean == pytest.approx(-87.5) and n == 2 and low < -100.0 and high > -75.0
    assert gap_widening(per_seed, 0.2, 1.0, arm="x")[3] == 0  # no such arm: no paired seed
    one = gap_widening(per_seed[per_seed.seed == 0], 0.2, 1.0)
    assert one == (pytest.approx(-100.0), pytest.approx(-100.0), pytest.approx(-100.0), 1)


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
    assert s.net_completeness == (0 + 1 - 3) / 1  # each wrong record cancels a right one


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


def test_net_completeness_counts_wrong_generated_records_against():
    from gentwin.metrics import net_completeness

    # 2 sensors x 4 slots, |T| = 7; 4 observed; 3 generated: 2 right, 1 in the inactive cell
    T = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    O = np.array([[1, 0, 0, 1], [1, 0, 1, 0]], bool)
    G = np.array([[0, 1, 1, 0], [0, 0, 0, 1]], bool)
    assert net_completeness(T, O, G) == pytest.approx((4 + 2 - 1) / 7)
    s = completeness(T, O, G)
    assert s.net_completeness == pytest.approx(s.completeness - s.false_record_rate)
    assert s.record_precision == pytest.approx(6 / 7)  # 6 right of the 7 records held
    assert s.record_f1 == pytest.approx(2 * (6 / 7) * (6 / 7) / (12 / 7))
    # a twin that never generates: net completeness is completeness
    assert net_completeness(T, O) == pytest.approx(4 / 7) == completeness(T, O).completeness


def test_net_completeness_ranks_always_generate_below_a_careful_twin():
    # one sensor sends in slots 0-1, sleeps in 2-5; slots 1-5 are not received
    T = np.array([[1, 1, 0, 0, 0, 0]], bool)
    O = np.array([[1, 0, 0, 0, 0, 0]], bool)
    careful = np.array([[0, 1, 0, 0, 0, 0]], bool)  # fills only the slot it was present in
    always = ~O  # fills every missing slot: 1 right, 4 wrong
    c, a = completeness(T, O, careful), completeness(T, O, always)
    assert c.completeness == a.completeness == 1.0  # completeness cannot tell them apart ...
    assert c.net_completeness == 1.0 and a.net_completeness == pytest.approx((1 + 1 - 4) / 2)  # ... this can
    assert c.record_f1 == 1.0 and a.record_f1 == pytest.approx(2 * (2 / 6) / (2 / 6 + 1))
    # holding nothing: record precision undefined, F1 0
    empty = completeness(T, np.zeros_like(T))
    assert math.isnan(empty.record_precision) and empty.record_f1 == 0.0

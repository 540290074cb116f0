"""Tests of gentwin.experiments.fig6: round slices, the extraction curve, the gain tables and the runner."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from gentwin import training as T
from gentwin.config import resolve
from gentwin.experiments import fig6, pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


def test_round_slices_cumulative_and_chunks():
    assert fig6.round_slices(10, 3) == [(0, 4), (0, 7), (0, 10)]  # ceil(10/3), ceil(20/3), 10
    assert fig6.round_slices(10, 3, mode="chunk") == [(0, 4), (4, 7), (7, 10)]
    assert fig6.round_slices(700, 18)[-1] == (0, 700)
    chunks = fig6.round_slices(700, 18, mode="chunk")
    assert chunks[0][0] == 0 and all(chunks[k][1] == chunks[k + 1][0] for k in range(17))
    with pytest.raises(T.TrainingError, match="rounds = 19"):
        fig6.round_slices(18, 19)
    with pytest.raises(T.TrainingError, match="round_mode = 'all'"):
        fig6.round_slices(18, 2, mode="all")


def test_extraction_curve_feeds_the_stream_round_by_round(tiny_adapted, toy_ds, toy_config):
    model, tok = tiny_adapted
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    train = toy_ds.split("train") * 3
    curve = fig6.extraction_curve(model, task, train, toy_config(round_mode="chunk"), seed=0, rounds=3)
    assert curve["round"].tolist() == [1, 2, 3]
    assert curve["fed"].tolist() == [b for _, b in fig6.round_slices(len(train), 3, "chunk")]
    true = len(toy_ds.topology.device_relations())
    assert ((curve.extracted >= 0) & (curve.extracted <= true)).all()
    assert (curve.extracted <= curve.produced).all()
    with pytest.raises(T.TrainingError, match=r"order = \[\]"):
        fig6.extraction_curve(model, task, [], toy_config(), seed=0)


def curves(extracted: dict[tuple[str, int], list[int]]) -> pd.DataFrame:
    return pd.DataFrame([{"order": o, "seed": s, "round": r + 1, "extracted": e}
                         for (o, s), values in extracted.items() for r, e in enumerate(values)])


def test_gains_per_seed_and_nan_where_the_baseline_extracted_nothing():
    c = curves({("priority", 0): [12, 24], ("random", 0): [10, 20], ("priority", 1): [3, 4], ("random", 1): [0, 0],
                ("weight", 0): [5, 10], ("weight", 1): [0, 0]})
    g = fig6.gains(c).set_index(["order", "seed"])["gain_pct"]
    assert g[("priority", 0)] == pytest.approx(20.0) and math.isnan(g[("priority", 1)])
    assert g[("weight", 0)] == pytest.approx(-50.0)
    with pytest.raises(T.TrainingError, match="baseline = 'none'"):
        fig6.gains(c, baseline="none")
    with pytest.raises(T.TrainingError, match="seed 0 has no matching 'random' curve"):
        fig6.gains(c[~((c.order == "random") & (c["round"] == 2))])


def test_gain_table_leaves_out_seeds_without_a_gain_and_bands_stay_in_range():
    c = curves({("priority", 0): [12, 24], ("random", 0): [10, 20], ("priority", 1): [5, 5], ("random", 1): [0, 0]})
    t = fig6.gain_table(c, 0.95, "p")  # seed 0: +20 %; seed 1: random extracted nothing, so no gain
    assert (t["order"].tolist(), t["mean gain (%)"].tolist(), t["seeds"].tolist()) == (
        [fig6.ORDER_LABELS["priority"]], [20.0], [1])
    b = fig6.curve_bands(pd.DataFrame({"order": "random", "seed": [0, 1, 2], "round": 1, "extracted": [0, 0, 6]}),
                         "extracted", 0.95).iloc[0]
    assert b["mean"] == 2.0 and 0 <= b["low"] < 2.0 < b["high"] <= 6 and b["n"] == 3


def test_gain_table_and_headline_when_no_seed_has_a_gain():
    c = curves({("priority", 0): [1, 2], ("random", 0): [0, 0]})
    table = fig6.gain_table(c, 0.95, "19 %")
    assert table["seeds"].tolist() == [0] and table["mean gain (%)"].isna().all()
    out = fig6.headline(c, table, rounds=2)
    assert out["fig6_gain_text"].startswith("undefined") and "fig6_gain_pct" not in out
    assert math.isnan(out["fig6_gain_mde"])
    assert (out["fig6_final_priority"], out["fig6_final_random"]) == (2.0, 0.0)


def test_gain_table_and_headline_with_gains():
    c = curves({("priority", 0): [12, 24], ("random", 0): [10, 20], ("priority", 1): [13, 20], ("random", 1): [10, 20]})
    table = fig6.gain_table(c, 0.95)
    row = table.iloc[0]
    assert row["order"] == fig6.ORDER_LABELS["priority"] and row["seeds"] == 2
    assert row["mean gain (%)"] == pytest.approx(15.0) and row["low"] < 15.0 < row["high"]  # gains 20 and 10
    out = fig6.headline(c, table, rounds=2)
    assert out["fig6_gain_text"] == "+15.0 %" and out["fig6_final_priority"] == 22.0


def test_runner_needs_the_random_order_and_uses_the_stream_order(tiny_adapted, toy_ds):
    model, tok = tiny_adapted
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    settings = resolve("quick", fig6_orders=("priority",), rounds=2, n_seeds=1, batch_size=4, train_limit=0)
    with pytest.raises(T.TrainingError, match="must include 'random'"):
        fig6.runs(model, task, settings)
    settings = resolve("quick", fig6_orders=("priority", "random"), rounds=2, n_seeds=1, batch_size=4, train_limit=0)
    out = fig6.runs(model, task, settings)
    assert sorted(set(out.order)) == ["priority", "random"] and out["round"].tolist() == [1, 2, 1, 2]
    first = fig6.first_chunks(settings, toy_ds)
    n = len(pipeline.training_instances(toy_ds, settings.training))
    assert (first["instances"] == round(n / 2)).all()
    assert (first["sensors"] + first["gateways"] == first["instances"]).all()


def test_budget_gain_reads_round_k_only_and_measures_choose_the_column():
    c = curves({("priority", 0): [12, 24], ("random", 0): [10, 30]})
    c["extracted_inferred"] = [2, 6, 1, 3]
    assert fig6.gains(c, at_round=1)["gain_pct"].tolist() == [pytest.approx(20.0)]  # 12 vs 10
    assert fig6.gains(c, at_round=2)["gain_pct"].tolist() == [pytest.approx(-20.0)]  # 24 vs 30
    assert fig6.gains(c, measure="extracted_inferred")["gain_pct"].tolist() == [pytest.approx(100.0)]  # 8 vs 4
    with pytest.raises(T.TrainingError, match="budget_rounds = 3"):
        fig6.gains(c, at_round=3)


def test_gain_table_bootstrap_interval_stays_in_range_and_reports_the_mde():
    gains_pct = {0: 20.0, 1: -90.0, 2: 10.0, 3: -80.0}
    c = curves({**{("priority", s): [100 + g, 100 + g] for s, g in gains_pct.items()},
                **{("random", s): [100, 100] for s in gains_pct}})
    row = fig6.gain_table(c, 0.95).iloc[0]
    assert row["seeds"] == 4 and row["mean gain (%)"] == pytest.approx(-35.0)
    assert -90.0 <= row["low"] < -35.0 < row["high"] <= 20.0  # resampled means: never below the smallest gain
    s = pd.Series(list(gains_pct.values())).std()
    assert row["MDE (%)"] == pytest.approx(2.8 * s / 2)


def test_variant_runs_pair_every_order_with_random_on_the_same_seeds(tiny_adapted, toy_ds):
    model, tok = tiny_adapted
    task = T.prepare_task(model, tok, toy_ds, max_length=256)
    settings = resolve("quick", fig6_orders=("priority", "weight", "random"), rounds=2, fig6_seeds=2,
                       batch_size=4, train_limit=0, fig6_variants=("cumulative/named", "chunk/opaque"),
                       budget_rounds=1)
    out = fig6.variant_runs(model, task, settings)
    head, other = out[out.variant == "cumulative/named"], out[out.variant == "chunk/opaque"]
    assert sorted(set(head.order)) == ["priority", "random", "weight"] and sorted(set(other.order)) == ["priority", "random"]
    assert sorted(set(out.seed)) == [0, 1]
    assert (out.extracted == out.extracted_copyable + out.extracted_inferred).all()
    # chunk rounds feed each part once: the last round's "fed" is the stream's end in both modes
    n = len(pipeline.training_instances(toy_ds, settings.training))
    assert set(out.fed[out["round"] == 2]) == {n}
    table = fig6.variant_table(out, 0.95, budget_rounds=1)
    assert table.iloc[0][["variant", "order", "relations"]].tolist() == [
        "cumulative/named", fig6.ORDER_LABELS["priority"], fig6.MEASURES["extracted"]]
    assert len(table) == 2 * 2 * 2 + 2 * 2 * 1  # headline: 2 pooled orders x 2 measures x 2 scorings; other: 1 order
    with pytest.raises(T.TrainingError, match="budget_rounds = 2"):
        fig6.variant_table(out, 0.95, budget_rounds=2)


def test_variant_orders_give_the_headline_every_order_and_the_others_two() -> None:
    cfg = resolve("quick", fig6_orders=("priority", "weight", "random"),
                  fig6_variants=("cumulative/named", "chunk/named", "cumulative/opaque")).training
    assert fig6.variant_orders(cfg) == [("cumulative/named", ("priority", "weight", "random")),
                                        ("chunk/named", ("priority", "random")),
                                        ("cumulative/opaque", ("priority", "random"))]


def test_paper_budget_counts_the_designs_epochs() -> None:
    """benchmarks/paper_budget.py (loaded by path: benchmarks are not a package) on the paper profile."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_budget.py"
    spec = importlib.util.spec_from_file_location("paper_budget", path)
    budget = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(budget)
    t = resolve("paper").training
    d = budget.design_epochs(resolve("paper"))
    # Fig. 7: every arm x seed x epoch; the minimum design is two arms (priority, random)
    assert d["fig7_epochs"] == len(t.fig7_arms) * t.n_seeds * t.epochs
    assert d["fig7_minimum_epochs"] == 2 * t.n_seeds * t.epochs
    # Fig. 6: a cumulative run of R rounds feeds 1/R + 2/R + ... + R/R = (R + 1) / 2 epochs
    assert d["fig6_minimum_epochs"] == 2 * t.fig6_seeds * (t.rounds + 1) / 2
    runs = sum(len(orders) for _, orders in fig6.variant_orders(t)) * t.fig6_seeds
    assert d["fig6_reads"] == runs * t.rounds

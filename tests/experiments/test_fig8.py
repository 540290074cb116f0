"""Tests of gentwin.experiments.fig8: the what-if grid of Fig. 8 and the tables and glued values built from it."""

from __future__ import annotations

import math

import pytest

import gentwin.config
from gentwin.config import TopologyConfig
from gentwin.experiments.fig8 import Fig8, run_fig8, run_whatif
from gentwin.metrics import response_gap
from gentwin.topology import generate_dataset
from gentwin.whatif import WhatIfError

CFG = TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60)


@pytest.fixture(scope="module")
def dataset():
    return generate_dataset(CFG)


def test_run_whatif_rows_and_validation(dataset):
    df = run_whatif(dataset, backend="networkx", rates=(0.2, 1.0), seeds=(0, 1), episodes=2)
    assert len(df) == 2 * 2 * 2 * 2
    assert set(df["twin"]) == {"GenTwin", "traditional"} and set(df["episode"]) == {0, 1}
    paired = df.pivot_table(index=["seed", "rate", "episode"], columns="twin", values="answered_nodes")
    ok = df[df.twin == "GenTwin"].set_index(["seed", "rate", "episode"])["stale"] == 0
    assert (paired.loc[ok[ok].index, "GenTwin"] == paired.loc[ok[ok].index, "traditional"]).all()
    assert (df.groupby("rate")["changes"].first() == [6, 30]).all()
    with pytest.raises(WhatIfError, match="episodes = 0"):
        run_whatif(dataset, backend="networkx", rates=(0.2,), seeds=(0,), episodes=0)
    with pytest.raises(WhatIfError, match="rate = 2"):
        run_whatif(dataset, backend="networkx", rates=(2,), seeds=(0,), episodes=1)


def test_same_seeds_give_the_same_episodes(dataset):
    """Everything but the timings is a function of the seeds (the lead diffs glued values across runs)."""
    cols = ["seed", "rate", "episode", "twin", "kind", "changes", "changed_entities", "n_written", "version",
            "stale", "kv_pairs", "answered_nodes", "parts"]
    a = run_whatif(dataset, backend="networkx", rates=(0.4,), seeds=(3,), episodes=3)
    b = run_whatif(dataset, backend="networkx", rates=(0.4,), seeds=(3,), episodes=3)
    assert a[cols].equals(b[cols])


@pytest.fixture(scope="module")
def fig8():
    settings = gentwin.config.resolve("quick", store="networkx", n_sensors=24, n_gateways=6, update_rates=(0.2, 1.0),
                                      n_episodes=2, twin_seeds=2)
    return run_fig8(settings, show_progress=False)


def test_fig8_tables_agree_with_the_runs(fig8: Fig8):
    runs = fig8.runs
    assert fig8.backend == "networkx" and fig8.seeds == (0, 1) and (fig8.lo_rate, fig8.hi_rate) == (0.2, 1.0)
    assert len(runs) == 2 * 2 * 2 * 2
    gaps = fig8.gaps
    for rate in fig8.rates:
        per_seed = runs[runs.rate == rate].groupby(["twin", "seed"])["response_ms"].mean()
        gen, trad = per_seed["GenTwin"].mean(), per_seed["traditional"].mean()
        assert math.isclose(gaps.loc[rate, "GenTwin (ms)"], gen) and math.isclose(gaps.loc[rate, "traditional (ms)"], trad)
        assert math.isclose(gaps.loc[rate, "gap %"], response_gap(trad, gen))
        seed_gaps = (per_seed["traditional"] - per_seed["GenTwin"]) / per_seed["traditional"] * 100
        low, high = gaps.loc[rate, "gap % CI low (per seed)"], gaps.loc[rate, "gap % CI high (per seed)"]
        assert low <= seed_gaps.mean() <= high and math.isclose((low + high) / 2, seed_gaps.mean())
    alpha = fig8.alpha_table()
    assert alpha["devices changed"].tolist() == [6, 30] and (alpha["seeds"] == 2).all()
    parts = fig8.time_parts()
    assert (parts.loc["traditional", "pooling_ms"] == 0).all() and (parts.loc["GenTwin", "pooling_ms"] > 0).all()
    assert set(fig8.records().index.get_level_values("twin")) == {"GenTwin", "traditional"}


def test_fig8_glued_values(fig8: Fig8):
    g = fig8.glued()
    gaps = fig8.gaps
    assert g["fig8_gentwin_ms_low"] == float(gaps.loc[0.2, "GenTwin (ms)"])
    assert g["fig8_gap_high_pct"] == float(gaps.loc[1.0, "gap %"])
    assert g["fig8_gentwin_ms_low_low"] <= g["fig8_gentwin_ms_low"] <= g["fig8_gentwin_ms_low_high"]
    assert g["fig8_gap_low_pct_low"] <= g["fig8_gap_low_pct_high"]
    assert (g["fig8_backend"], g["fig8_lo_rate"], g["fig8_hi_rate"]) == ("networkx", 0.2, 1.0)
    assert "networkx" in g["fig8_traditional_ms_low_note"]
    table = fig8.comparison()
    assert table.loc["gap at the highest rate (%)", "this run"] == round(g["fig8_gap_high_pct"], 2)
    assert ("widens" if g["fig8_gap_high_pct"] > g["fig8_gap_low_pct"] else "narrows") in fig8.summary()

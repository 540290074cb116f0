"""Tests of gentwin.experiments.fig8: the what-if grid of Fig. 8 and the tables and glued values built from it."""

from __future__ import annotations

import math

import pytest

import gentwin.config
from gentwin.config import TopologyConfig
from gentwin.experiments.fig8 import ARMS, PAIRINGS, Fig8, other_backend, run_fig8, run_whatif
from gentwin.metrics import response_gap
from gentwin.topology import generate_dataset
from gentwin.whatif import WhatIfError

CFG = TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60)


@pytest.fixture(scope="module")
def dataset():
    return generate_dataset(CFG)


def test_run_whatif_rows_and_validation(dataset):
    df = run_whatif(dataset, backend="networkx", rates=(0.2, 1.0), seeds=(0, 1), episodes=2,
                    panel_thresholds=(0.0, 0.5))
    assert len(df) == 2 * 2 * 2 * (len(ARMS) + 1)  # the panel's threshold 0 is GenTwin itself
    assert set(df["twin"]) == {*ARMS, "GenTwin gate"} and set(df["episode"]) == {0, 1}
    assert set(df.loc[df.twin == "GenTwin gate", "alpha_threshold"]) == {0.5}
    paired = df.pivot_table(index=["seed", "rate", "episode"], columns="twin", values="answered_nodes")
    ok = df[df.twin == "GenTwin"].set_index(["seed", "rate", "episode"])["stale"] == 0
    for arm in ("incremental", "event-driven"):
        assert (paired.loc[ok[ok].index, "GenTwin"] == paired.loc[ok[ok].index, arm]).all()
    assert (paired[["incremental", "event-driven"]].to_numpy() == paired[["traditional"] * 2].to_numpy()).all()
    # every arm of one episode carries the episode's alpha, measured by GenTwin
    alpha = df.groupby(["seed", "rate", "episode"])["alpha"].nunique()
    assert (alpha == 1).all() and (df["alpha"] > 0).all()
    assert (df.groupby("rate")["changes"].first() == [6, 30]).all()
    with pytest.raises(WhatIfError, match="episodes = 0"):
        run_whatif(dataset, backend="networkx", rates=(0.2,), seeds=(0,), episodes=0)
    with pytest.raises(WhatIfError, match="rate = 2"):
        run_whatif(dataset, backend="networkx", rates=(2,), seeds=(0,), episodes=1)
    with pytest.raises(WhatIfError, match="alpha_threshold = -0.1"):
        run_whatif(dataset, backend="networkx", rates=(0.2,), seeds=(0,), episodes=1, alpha_threshold=-0.1)


def test_other_backend_pairs_networkx_with_neo4j_when_a_server_is_named():
    assert other_backend("networkx", {}) is None
    assert other_backend("networkx", {"NEO4J_URI": "bolt://db:7687"}) == "neo4j"
    assert other_backend("neo4j", {"NEO4J_URI": "bolt://db:7687"}) == "networkx"


def test_same_seeds_give_the_same_episodes(dataset):
    """Everything but the timings is a function of the seeds (the lead diffs glued values across runs)."""
    cols = ["seed", "rate", "episode", "twin", "kind", "changes", "changed_entities", "n_written", "version",
            "stale", "kv_pairs", "answered_nodes", "parts", "alpha", "transactions"]
    a = run_whatif(dataset, backend="networkx", rates=(0.4,), seeds=(3,), episodes=3)
    b = run_whatif(dataset, backend="networkx", rates=(0.4,), seeds=(3,), episodes=3)
    assert a[cols].equals(b[cols])


@pytest.fixture(scope="module")
def fig8(dataset):
    settings = gentwin.config.resolve("quick", store="networkx", update_rates=(0.2, 0.6, 1.0),
                                      n_episodes=4, twin_seeds=3, alpha_bins=3, alpha_thresholds=(0.0, 0.5))
    return run_fig8(settings, dataset=dataset, show_progress=False)


def test_alpha_bins_cover_every_episode_once(fig8: Fig8):
    arms = fig8.arms
    bins = fig8.bins
    assert bins["episodes"].sum() == 3 * 3 * 4 and list(bins.index) == [0, 1, 2]
    assert (bins["alpha min"].diff().dropna() >= 0).all() and (bins["alpha max"].shift() <= bins["alpha min"]).iloc[1:].all()
    per_episode = arms.groupby(["seed", "rate", "episode"])["alpha bin"].nunique()
    assert (per_episode == 1).all()  # all arms of an episode share its bin
    for b, row in bins.iterrows():
        a = arms[(arms["alpha bin"] == b) & (arms.twin == "GenTwin")]["alpha"]
        assert a.min() >= row["alpha min"] and a.max() <= row["alpha max"] and math.isclose(a.mean(), row["alpha mean"])


def test_fig8_tables_agree_with_the_runs(fig8: Fig8):
    runs = fig8.arms
    assert fig8.backend == "networkx" and fig8.seeds == (0, 1, 2) and fig8.rates == (0.2, 0.6, 1.0)
    for arm, base, _, _ in PAIRINGS:
        gaps = fig8.gaps(arm, base)
        for b in gaps.index:
            per_seed = runs[runs["alpha bin"] == b].groupby(["twin", "seed"])["response_ms"].mean()
            a, t = per_seed[arm], per_seed[base]
            assert math.isclose(gaps.loc[b, f"{arm} (ms)"], a.mean()) and math.isclose(gaps.loc[b, f"{base} (ms)"], t.mean())
            assert math.isclose(gaps.loc[b, "gap %"], response_gap(t.mean(), a.mean()))
            seed_gaps = (t - a) / t * 100
            low, high = gaps.loc[b, "gap % CI low (per seed)"], gaps.loc[b, "gap % CI high (per seed)"]
            assert math.isclose(gaps.loc[b, "gap % (per seed)"], seed_gaps.mean()) and gaps.loc[b, "n"] == len(seed_gaps)
            if len(seed_gaps) > 1:
                assert math.isclose((low + high) / 2, seed_gaps.mean())
    alpha = fig8.alpha_table()
    assert alpha["devices changed"].tolist() == [6, 18, 30] and (alpha["seeds"] == 3).all()
    parts = fig8.time_parts()
    for arm in ("traditional", "incremental", "event-driven"):
        assert (parts.loc[arm, "pooling_ms"] == 0).all() and (parts.loc[arm, "stale"] == 0).all()
    assert (parts.loc["GenTwin", "pooling_ms"] > 0).all()
    assert (parts.loc["event-driven", "transactions"] > parts.loc["incremental", "transactions"]).all()
    # every twin has its row of the per-twin table (time_parts took over from the removed records())
    assert set(parts.index.get_level_values("twin")) == set(ARMS)
    panel = fig8.gate_panel()
    assert list(panel.index) == [0.0, 0.5] and panel.loc[0.5, "stale"] >= panel.loc[0.0, "stale"]


def test_fig8_glued_values(fig8: Fig8):
    g = fig8.glued()
    per_seed = fig8.per_seed()
    for arm, base, suffix, _ in PAIRINGS:
        gaps = fig8.gaps(arm, base)
        assert g["fig8_gap_low_pct" + suffix] == float(gaps.loc[0, "gap % (per seed)"])
        assert g["fig8_gap_high_pct" + suffix] == float(gaps.loc[2, "gap % (per seed)"])
        assert g["fig8_gap_low_pct" + suffix + "_low"] <= g["fig8_gap_low_pct" + suffix] <= g["fig8_gap_low_pct" + suffix + "_high"]
        # the change is the mean of paired per-seed differences: with the same seeds in both bins it
        # equals the difference of the two glued gaps
        w = g["fig8_gap_widening_pct" + suffix]
        if g["fig8_gap_widening_pct" + suffix + "_n"] == g["fig8_gap_low_pct" + suffix + "_n"] == g["fig8_gap_high_pct" + suffix + "_n"]:
            assert math.isclose(w, g["fig8_gap_high_pct" + suffix] - g["fig8_gap_low_pct" + suffix], abs_tol=1e-9)
        by_hand = []
        for seed in fig8.seeds:
            sub = per_seed[per_seed.seed == seed].set_index(["alpha bin", "twin"])["response_ms"]
            if all((b, t) in sub.index for b in (0, 2) for t in (arm, base)):
                by_hand.append(response_gap(sub[(2, base)], sub[(2, arm)]) - response_gap(sub[(0, base)], sub[(0, arm)]))
        assert math.isclose(w, sum(by_hand) / len(by_hand)) and g["fig8_gap_widening_pct" + suffix + "_n"] == len(by_hand)
    assert g["fig8_gentwin_ms_low_low"] <= g["fig8_gentwin_ms_low"] <= g["fig8_gentwin_ms_low_high"]
    assert (g["fig8_backend"], g["fig8_lo_rate"], g["fig8_hi_rate"]) == ("networkx", 0.2, 1.0)
    assert g["fig8_lo_alpha"] < g["fig8_hi_alpha"]
    assert "networkx" in g["fig8_traditional_ms_low_note"]
    table = fig8.comparison()
    assert table.loc["fig8_gap_high_pct", "this run"] == round(g["fig8_gap_high_pct"], 2)
    assert table.loc["fig8_gentwin_ms_low", "judged as"] == "not comparable"
    pairs = fig8.pairings()
    assert list(pairs.index) == [f"{a} vs {b}" for a, b, _, _ in PAIRINGS]
    assert pairs.loc["GenTwin vs traditional", "gap low %"] == round(g["fig8_gap_low_pct"], 1)


@pytest.mark.neo4j
def test_run_fig8_on_neo4j_quick_profile(dataset, neo4j_env, monkeypatch):
    """The runner against a real Neo4j server, quick profile: every arm answers and the tables build."""
    monkeypatch.setenv("NEO4J_URI", neo4j_env["uri"])
    monkeypatch.setenv("NEO4J_USER", neo4j_env["user"])
    monkeypatch.setenv("NEO4J_PASSWORD", str(neo4j_env["password"]))
    settings = gentwin.config.resolve("quick", store="neo4j", update_rates=(0.2, 1.0), n_episodes=2,
                                      alpha_bins=2, alpha_thresholds=(0.0, 0.5))
    fig8 = run_fig8(settings, dataset=dataset, show_progress=False)
    assert fig8.backend == "neo4j" and set(fig8.runs.twin) == {*ARMS, "GenTwin gate"}
    paired = fig8.arms.pivot_table(index=["seed", "rate", "episode"], columns="twin", values="answered_nodes")
    assert (paired["incremental"] == paired["traditional"]).all() and (paired["event-driven"] == paired["traditional"]).all()
    g = fig8.glued()
    assert g["fig8_backend"] == "neo4j" and g["fig8_gap_low_pct_n"] == 2
    assert math.isfinite(g["fig8_gap_widening_pct"])

"""gentwin.experiments.pools: the pooling chapter's tables on the hand-worked example of tests/test_pooling.py."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")  # tests draw off-screen (the library never picks a backend)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from gentwin.config import PoolingConfig, TopologyConfig
from gentwin.experiments import pools
from gentwin.pooling import POOLS, PoolingError, PriorityPool, pool_readings, pool_snapshot, training_order
from gentwin.topology import DataSet, generate_dataset
from pooling_oracle import HEAD, IDS, hand_dataset, hand_topology, owner_dataset

# Step 1 of the hand example (instances 0-7, N_i by head; worked in tests/test_pooling.py):
#   p*13 = G1 2, G2 1, S1 2, S2 0 (absent), S3 2, S4 2, S5 unseen;  Avg/2 = 6/104, 3Avg/4 = 9/104
#   pools (corrected) G1 H, G2 M, S1 H, S2 L, S3 H, S4 H, S5 none;  printed band: G2 in no pool
#   W_p "degree" (1, 3/7, 1/7), "sum_w" (6/7, 2/7, 1/7)


@pytest.fixture()
def step1() -> DataSet:
    ds = hand_dataset()
    return DataSet(ds.topology, ds.instances[:8])


def test_readings_are_the_five_reading_fields() -> None:
    assert pool_readings(PoolingConfig(band="paper", relation_owner="head")) == {
        "band": "paper", "pool_weight": "degree", "relation_count": "unique", "relation_owner": "head",
        "alpha_reading": "nodes"}


def test_snapshot_counts_and_priority_extremes() -> None:
    ds = hand_dataset()
    counts = pools.snapshot_counts(ds, pool_snapshot(ds, **HEAD))["count"]
    # n = 7 devices, M = 13, 9 instances, every node but S5 seen
    assert counts.tolist() == [7, 13, 9, 6]
    table = pool_snapshot(DataSet(ds.topology, ds.instances[:8]), **HEAD).table()
    ext = pools.priority_extremes(table)
    assert set(ext.index[:4]) == {"G1", "S1", "S3", "S4"} and set(ext.index[4:]) == {"G2", "S2", "S5"}
    assert ext.p.iloc[0] == pytest.approx(2 / 13) and ext.p.iloc[-1] == 0.0
    assert list(ext.columns) == ["kind", "instances", "presence", "N", "p"]


def test_tie_share_by_hand() -> None:
    assert pools.tie_share([0.2, 0.2, 0.1, 0.2], [True, True, True, False]) == pytest.approx(2 / 3)
    assert pools.tie_share([0.1, 0.2, 0.3]) == 0.0
    assert pools.tie_share([0.5, 0.5], [False, False]) == 0.0  # none seen
    with pytest.raises(PoolingError, match=r"lengths disagree: len\(priority\) = 2, len\(seen\) = 1"):
        pools.tie_share([0.1, 0.2], [True])
    with pytest.raises(PoolingError, match=r"priority\[0\] = nan: must be a finite number"):
        pools.tie_share([float("nan"), float("nan"), 0.1])
    with pytest.raises(PoolingError, match=r"priority\[0\] = -1.0: must be >= 0"):
        pools.tie_share([-1.0, -1.0, 0.1])


def test_tie_shares_of_the_owner_log() -> None:
    # head: G1, S1, S2, S4, S5 share 2/13 -> 5/7; incident: only the four active sensors share 2/13 -> 4/7
    ds = owner_dataset()
    assert pools.tie_shares(ds, ds.instances[:8]) == pytest.approx({"incident": 4 / 7, "head": 5 / 7})


def test_band_table_counts_the_printed_gap(step1) -> None:
    table = pools.band_table(step1, **HEAD)
    assert list(table.columns) == ["corrected", "paper"]
    assert table["corrected"].tolist() == [4, 1, 1, 0, 1]  # H, M, L, no pool (seen), never seen (S5)
    assert table["paper"].tolist() == [4, 0, 1, 1, 1]  # G2 falls into the gap
    assert table.index.name == "nodes in"


def test_centrality_gap_is_zero_and_sees_a_wrong_weight(step1) -> None:
    snap = pool_snapshot(step1, **HEAD)
    assert pools.centrality_gap(snap, hand_topology()) == pytest.approx(0.0, abs=1e-15)
    off = dataclasses.replace(snap, weights=snap.weights + np.array([0.0, 0.1, 0, 0, 0, 0, 0]))
    assert pools.centrality_gap(off, hand_topology()) == pytest.approx(0.1)


def test_pool_weight_table_by_hand(step1) -> None:
    table = pools.pool_weight_table(step1, **HEAD)
    assert table["degree"].tolist() == pytest.approx([1.0, 3 / 7, 1 / 7])
    assert table["sum_w"].tolist() == pytest.approx([6 / 7, 2 / 7, 1 / 7])
    assert table["nodes"].tolist() == [4, 1, 1] and table.index.name == "pool"


def test_history_frame_by_hand() -> None:
    ds = hand_dataset()
    pp = PriorityPool(ds.topology, **HEAD)
    pp.step(ds.instances[:8])
    pp.step(ds.instances[8:])
    pp.step([])
    frame = pools.history_frame(pp)
    assert frame.shape[0] == 3 * len(POOLS)
    h = frame[frame.pool == "H"].set_index("step")
    assert h.alpha.tolist() == pytest.approx([1.0, 4 / 7, 0.0])  # from empty pools, S1 out and G2 in, nothing
    assert h.W.tolist() == pytest.approx([1.0, 9 / 7, 9 / 7]) and h["size"].tolist() == [4, 4, 4]  # G2 replaces S1
    assert h.instances.tolist() == [8, 9, 9] and h.version.tolist() == [1, 2, 2]
    assert h.updated.tolist() == [True, True, False]


def test_pool_history_is_one_history_frame_per_seed() -> None:
    cfg = TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60, data_seed=5)
    history, versions = pools.pool_history(cfg, 2, 20)
    assert sorted(versions) == [5, 6] and history.shape[0] == 2 * 3 * len(POOLS)  # 60 / 20 = 3 steps
    pp = PriorityPool(generate_dataset(dataclasses.replace(cfg, data_seed=6)).topology)
    pp.run(generate_dataset(dataclasses.replace(cfg, data_seed=6)).instances, window=20)
    again = history[history.data_seed == 6].drop(columns="data_seed").reset_index(drop=True)
    pd.testing.assert_frame_equal(again, pools.history_frame(pp))
    assert versions[6] == pp.version
    with pytest.raises(PoolingError, match="seeds = 0"):
        pools.pool_history(cfg, 0, 20)


def _toy_history() -> pd.DataFrame:
    # two seeds, pool H at 10 instances: size 2 and 4, W 0.5 and 1.5, alpha 0 and 1
    return pd.DataFrame({"data_seed": [0, 1], "pool": ["H", "H"], "instances": [10, 10], "size": [2, 4],
                         "W": [0.5, 1.5], "alpha": [0.0, 1.0]})


def test_pool_curves_average_over_seeds() -> None:
    curves = pools.pool_curves(_toy_history(), 0.95)
    assert curves.quantity.tolist() == ["size", "W", "alpha"]
    assert curves["mean"].tolist() == pytest.approx([3.0, 1.0, 0.5]) and curves["n"].tolist() == [2, 2, 2]
    assert (curves["low"] < curves["mean"]).all() and (curves["mean"] < curves["high"]).all()


def test_late_means_use_the_second_half_of_the_steps() -> None:
    # steps 1-4: the second half is steps 3 and 4; H has alpha = step, M alpha 0
    history = pd.DataFrame([{"step": s, "pool": p, "size": s if p == "H" else 1, "W": 2.0 * s if p == "H" else 0.0,
                             "alpha": float(s) if p == "H" else 0.0} for s in (1, 2, 3, 4) for p in ("H", "M")])
    table, alpha_late = pools.late_means(history)
    assert table.loc["H"].tolist() == pytest.approx([3.5, 7.0, 3.5])
    assert table.loc["M"].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert list(table.columns) == ["mean size, second half", "mean W, second half", "mean alpha, second half"]
    assert alpha_late == pytest.approx((3 + 4 + 0 + 0) / 4)


def test_pool_order_weight_matrix_and_top_pairs(step1) -> None:
    snap = pool_snapshot(step1, **HEAD)
    # H (G1, S1, S3, S4: all 2/13, kept in node order), M (G2), L (S2), then S5 in no pool
    assert pools.pool_order(snap).tolist() == [0, 2, 4, 5, 1, 3, 6]
    w_c = pools.weight_matrix_frame(snap)
    assert list(w_c.columns) == ["G1", "S1", "S3", "S4", "G2", "S2", "S5"] and w_c.columns.name == "node"
    assert list(w_c.index) == ["P_H", "P_M", "P_L"]
    assert w_c.loc["P_H"].tolist() == pytest.approx([4 / 7, 1 / 7, 1 / 7, 1 / 7, 0, 0, 0])
    assert w_c.loc["P_M", "G2"] == pytest.approx(3 / 7) and w_c.loc["P_L", "S2"] == pytest.approx(1 / 7)
    top = pools.top_pairs(snap, count=1)
    assert list(top.index) == ["H", "M", "L", "none"]
    assert top.v.tolist() == ["('G1', 3)", "('G2', 2)", "('S2', 'G1')", "('S5', 'G2')"]


def test_order_heads_follow_the_training_orders(step1) -> None:
    heads = pools.order_heads(step1, step1.instances, seed=0, **HEAD)
    assert list(heads.columns) == ["priority", "weight", "random"] and list(heads.index) == list(range(1, 9))
    # priority: the five P_H instances (S1 twice), then G2 (M), then S2 twice (L)
    assert sorted(heads.priority[:5]) == ["G1 (H)", "S1 (H)", "S1 (H)", "S3 (H)", "S4 (H)"]
    assert heads.priority.tolist()[5:] == ["G2 (M)", "S2 (L)", "S2 (L)"]
    assert heads.weight.iloc[0] == "G1 (H)"  # W_H is the largest and G1 has the largest w_i in it
    pool_of = dict(zip(IDS, ["H", "M", "H", "L", "H", "H", "-"]))
    rnd = training_order(step1, step1.instances, by="random", seed=0, **HEAD)
    assert heads.random.tolist() == [f"{i.node_id} ({pool_of[i.node_id]})" for i in rnd]


def test_draw_priorities_and_curves(step1) -> None:
    snap = pool_snapshot(step1, **HEAD)
    fig, ax = plt.subplots()
    pools.draw_priorities(ax, snap.table(), snap, title="t")
    assert [line.get_xdata()[0] for line in ax.lines] == pytest.approx([6 / 104, 9 / 104])  # Avg/2, 3Avg/4
    assert [t.get_text() for t in ax.texts] == [" Avg/2", " 3Avg/4"] and ax.get_title() == "t"
    plt.close(fig)
    fig, axes = plt.subplots(1, 3)
    history = pd.concat([_toy_history().assign(pool=p) for p in POOLS], ignore_index=True)
    pools.draw_curves(axes, pools.pool_curves(history, 0.95))
    assert [len(ax.lines) for ax in axes] == [3, 3, 3]
    assert [ax.get_ylabel() for ax in axes] == list(pools.CURVES.values())
    assert axes[0].get_legend() is not None
    plt.close(fig)

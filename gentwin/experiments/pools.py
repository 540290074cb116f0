"""The pooling chapter's tables, curves and figures: Priority Pooling on the book's data, over the log and by reading."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import networkx as nx
import numpy as np
import pandas as pd

from ..checks import check_int
from ..pooling import (BANDS, ORDERS, POOL_WEIGHTS, POOLS, RELATION_OWNERS, PoolingError, PoolSnapshot, PriorityPool,
                       checked_seen, pool_snapshot, training_order)
from ..stats import summarise
from ..topology import DataSet, Instance, Topology, generate_dataset

__all__ = ["CURVES", "snapshot_counts", "priority_extremes", "tie_share", "tie_shares",
           "band_table", "centrality_gap", "pool_weight_table", "history_frame", "pool_history", "pool_curves",
           "late_means", "pool_order", "weight_matrix_frame", "top_pairs", "order_heads", "draw_priorities",
           "draw_curves"]

#: The curves of :func:`pool_curves`, with the axis label each is drawn with.
CURVES = {"size": "nodes in pool", "W": "pool weight W_p (eq. 6)", "alpha": "update trigger α (eq. 7)"}


def snapshot_counts(dataset: DataSet, snapshot: PoolSnapshot):
    """The sizes behind a snapshot: device nodes n, M, log instances and nodes seen (one ``count`` column)."""
    return pd.Series({"device nodes n": snapshot.n, "relations of S and Gw (M)": snapshot.n_relations,
                      "log instances": len(dataset.instances), "nodes seen in the log": int(snapshot.seen.sum())},
                     name="count").to_frame()


def priority_extremes(table, top: int = 4, bottom: int = 3):
    """The ``top`` highest and ``bottom`` lowest priorities of a :meth:`~gentwin.pooling.PoolSnapshot.table`."""
    ranked = table.sort_values("p", ascending=False)
    return pd.concat([ranked.head(top), ranked.tail(bottom)])[["node", "kind", "instances", "presence", "N",
                                                                 "p"]].set_index("node")


def tie_share(priority_values, seen=None) -> float:
    """Share of the seen nodes whose eq. (3) priority equals that of another seen node (0 with none seen): what
    the seeded tie-break of :func:`gentwin.pooling.training_order` decides."""
    p, s = checked_seen("priority", priority_values, seen)
    if not s.any():
        return 0.0
    _, inverse, counts = np.unique(p[s], return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean())


def tie_shares(dataset: DataSet, instances: Sequence[Instance], **readings: str) -> dict[str, float]:
    """:func:`tie_share` of the pools of ``instances`` alone, under each ``relation_owner`` reading."""
    items = DataSet(dataset.topology, list(instances))
    snaps = {owner: pool_snapshot(items, **{**readings, "relation_owner": owner}) for owner in RELATION_OWNERS}
    return {owner: tie_share(s.priority, s.seen) for owner, s in snaps.items()}


def band_table(dataset: DataSet, **readings: str):
    """Pool sizes under both eq. (4) bands on the same priorities: the three pools, the seen nodes in no pool
    (the printed band's gap) and the nodes never seen."""
    both = {b: pool_snapshot(dataset, **{**readings, "band": b}) for b in BANDS}
    out = pd.DataFrame({b: {**s.sizes(), "no pool (seen)": int((s.seen & (s.pool_codes < 0)).sum()),
                            "never seen": int((~s.seen).sum())} for b, s in both.items()})
    out.index.name = "nodes in"
    return out


def centrality_gap(snapshot: PoolSnapshot, topology: Topology) -> float:
    """Largest ``|w_i - (n-1)/n * c_i|`` between the eq. (5) weights and networkx's degree centrality c_i on the
    graph of sensor-gateway connections."""
    g = nx.Graph([(s.id, s.gateway) for s in topology.sensors()])
    g.add_nodes_from(snapshot.node_ids)
    centrality = nx.degree_centrality(g)
    c = np.array([centrality[i] for i in snapshot.node_ids])
    return float(np.abs(snapshot.weights - (snapshot.n - 1) / snapshot.n * c).max())


def pool_weight_table(dataset: DataSet, **readings: str):
    """W_p (eq. 6) under each ``pool_weight`` reading beside the pool sizes (which no eq. (6) reading moves)."""
    snaps = {pw: pool_snapshot(dataset, **{**readings, "pool_weight": pw}) for pw in POOL_WEIGHTS}
    return (pd.DataFrame({pw: s.pool_weight_values for pw, s in snaps.items()})
            .assign(nodes=snaps[POOL_WEIGHTS[0]].sizes()).rename_axis("pool"))


def history_frame(pool: PriorityPool):
    """The history of ``pool``, one row per step and pool: step, upto, instances, pool, size, W (eq. 6), alpha
    (eq. 7), version, updated."""
    return pd.DataFrame([
        {"step": s.step, "upto": s.upto, "instances": s.n_instances, "pool": lab, "size": s.sizes()[lab],
         "W": s.pool_weight_values[lab], "alpha": (s.alpha or {}).get(lab, 0.0), "version": s.version,
         "updated": s.updated}
        for s in pool.history for lab in POOLS
    ])


def pool_history(topology_config, seeds: int, window: int, **readings: str):
    """Algorithm 1 over the logs of ``seeds`` data sets (data seeds ``data_seed``, ``data_seed + 1``, ...): every
    seed's :func:`history_frame` with a ``data_seed`` column, and the final version per seed."""
    frames, versions = [], {}
    for k in range(check_int("seeds", seeds, low=1, error=PoolingError)):
        seed = topology_config.data_seed + k
        ds = generate_dataset(dataclasses.replace(topology_config, data_seed=seed))
        pp = PriorityPool(ds.topology, **readings)
        pp.run(ds.instances, window=window)
        frames.append(history_frame(pp).assign(data_seed=seed))
        versions[seed] = pp.version
    return pd.concat(frames, ignore_index=True), versions


def pool_curves(history, confidence: float):
    """Mean and confidence interval over the data seeds of each :data:`CURVES` quantity, per pool and instances
    consumed (the :func:`gentwin.stats.summarise` columns and ``quantity``)."""
    return pd.concat([summarise(history, ["pool", "instances"], col, confidence).assign(quantity=col)
                      for col in CURVES], ignore_index=True)


def late_means(history) -> tuple[Any, float]:
    """Mean size, W and α per pool over the steps of the second half of the log, and α's mean over those rows."""
    late = history[history.step > history.step.max() // 2]
    table = late.groupby("pool")[list(CURVES)].mean().rename(columns=lambda c: f"mean {c}, second half")
    return table, float(late.alpha.mean())


def pool_order(snapshot: PoolSnapshot) -> np.ndarray:
    """Node positions ordered by pool (H, M, L, then none) and, within a pool, by priority descending."""
    return np.lexsort((-snapshot.priority, np.where(snapshot.pool_codes >= 0, snapshot.pool_codes, len(POOLS))))


def weight_matrix_frame(snapshot: PoolSnapshot):
    """W_C (eq. 6) as a frame: rows ``P_H``, ``P_M``, ``P_L``, one column per node in :func:`pool_order`."""
    order = pool_order(snapshot)
    return pd.DataFrame(snapshot.weight_matrix[:, order], index=[f"P_{p}" for p in POOLS],
                        columns=pd.Index([snapshot.node_ids[k] for k in order], name="node"))


def top_pairs(snapshot: PoolSnapshot, count: int = 4):
    """The first ``count`` nodes of each pool in :func:`pool_order`: their (k, v) pair (eq. 2), p and w."""
    table = snapshot.table().iloc[pool_order(snapshot)]
    return table.groupby("pool", sort=False).head(count)[["pool", "k", "v", "p", "w"]].set_index("pool")


def order_heads(dataset: DataSet, instances: Sequence[Instance], seed: int, count: int = 8, **readings: str):
    """The first ``count`` instances of each training order as "node (pool)", with the pools of ``instances``
    alone (as :func:`gentwin.pooling.training_order` pools them)."""
    items = list(instances)
    snap = pool_snapshot(DataSet(dataset.topology, items), **readings)
    pool_of = dict(zip(snap.node_ids, snap.pool))
    return pd.DataFrame({by: [f"{i.node_id} ({pool_of[i.node_id] or '-'})"
                              for i in training_order(dataset, items, by=by, seed=seed, **readings)[:count]]
                         for by in ORDERS}, index=pd.RangeIndex(1, count + 1, name="position"))


def draw_priorities(ax: Any, table, snapshot: PoolSnapshot, title: str) -> None:
    """Histogram of the seen nodes' priorities by kind, with the eq. (4) boundaries and the shaded band between
    them (P_M when corrected, no pool as printed)."""
    import seaborn as sns

    half, three_q = snapshot.thresholds
    sns.histplot(data=table[snapshot.seen], x="p", hue="kind", multiple="stack", bins=40, ax=ax, palette="colorblind")
    for x, label, style in ((half, "Avg/2", "--"), (three_q, "3Avg/4", "-")):
        ax.axvline(x, color="0.2", linestyle=style, linewidth=1)
        ax.text(x, ax.get_ylim()[1] * 0.95, f" {label}", va="top", fontsize=8)
    ax.axvspan(half, three_q, color="tab:red", alpha=0.12)
    ax.set(xlabel="priority p_i (eq. 3, dimensionless)", ylabel="seen nodes", title=title)


def draw_curves(axes: Sequence[Any], curves) -> None:
    """One panel per :data:`CURVES` quantity: each pool's mean over the log with its confidence band."""
    import seaborn as sns

    colors = dict(zip(POOLS, sns.color_palette("colorblind", 3)))
    for ax, (col, ylabel) in zip(axes, CURVES.items()):
        s = curves[curves.quantity == col]
        for pool in POOLS:
            sub = s[s["pool"] == pool]
            ax.plot(sub["instances"], sub["mean"], color=colors[pool], label=f"P_{pool}")
            ax.fill_between(sub["instances"], sub["low"], sub["high"], color=colors[pool], alpha=0.2, linewidth=0)
        ax.set(xlabel="log instances consumed", ylabel=ylabel)
    axes[0].legend(frameon=False)

"""Plain-Python oracles for gentwin.pooling: per-node loops over eqs. (1), (3)-(7), written without numpy.

They are independent of the vectorised functions so that tests/test_pooling.py
and benchmarks/pooling.py can check that both give identical pools.  The
hand-worked example topology and its two logs (worked through in the comments
of tests/test_pooling.py) are built here too, for the chapter's tables in
tests/experiments/test_pools.py.
"""

from __future__ import annotations

import math
from typing import Sequence

from gentwin.topology import DataSet, Instance, Node, Relation, Topology

NO_POOL = -1  # the code of a node in no pool, as in gentwin.pooling

#: Device nodes of the hand topology in ``topology.devices()`` order.
IDS = ["G1", "G2", "S1", "S2", "S3", "S4", "S5"]
#: The hand log: (node, present) per instance; step 1 = instances 0-7, step 2 = instance 8; S5 never appears.
LOG = [("S1", True), ("G1", True), ("S2", True), ("G2", True), ("S3", True), ("S1", True), ("S4", True),
       ("S2", False), ("S1", False)]
#: The relation_owner log: every node once, present, then S3 absent; step 2: S3 returns.
OWNER_LOG = [("G1", True), ("G2", True), ("S1", True), ("S2", True), ("S3", True), ("S4", True), ("S5", True),
             ("S3", False), ("S3", True)]
#: The hand examples are worked with N_i = the relations a node is the head of (relation_owner "head").
HEAD = {"relation_owner": "head"}


def hand_topology() -> Topology:
    """G1 <- S1, S2, S3 and G2 <- S4, S5 in one service AQ, fog link G1 -> G2: M = 13, n = 7."""
    nodes = {
        "CITY": Node("CITY", "city"),
        "AQ": Node("AQ", "service"),
        "G1": Node("G1", "gateway", service="AQ"),
        "G2": Node("G2", "gateway", service="AQ"),
    }
    for s, g in (("S1", "G1"), ("S2", "G1"), ("S3", "G1"), ("S4", "G2"), ("S5", "G2")):
        nodes[s] = Node(s, "sensor", service="AQ", gateway=g)
    rels = [Relation("AQ", "IN", "CITY"), Relation("G1", "SERVES_IN", "AQ"), Relation("G2", "SERVES_IN", "AQ"),
            Relation("G1", "CONNECTED_TO", "G2")]
    for s in ("S1", "S2", "S3", "S4", "S5"):
        rels.append(Relation(s, "CONNECTED_TO", nodes[s].gateway))
        rels.append(Relation(s, "SERVES_IN", "AQ"))
    return Topology(nodes=nodes, relations=rels)


def _dataset(log) -> DataSet:
    inst = [Instance(index=k, timestamp=2.0 * k, node_id=nid, present=pres, split="train")
            for k, (nid, pres) in enumerate(log)]
    return DataSet(topology=hand_topology(), instances=inst)


def hand_dataset() -> DataSet:
    """The hand topology with :data:`LOG` (every instance in the training split)."""
    return _dataset(LOG)


def owner_dataset() -> DataSet:
    """The hand topology with :data:`OWNER_LOG` (every instance in the training split)."""
    return _dataset(OWNER_LOG)


def reference_pools(
    node_index: Sequence[int],
    present: Sequence[bool],
    kinds: Sequence[str],
    degree: Sequence[int],
    owned: Sequence[int],
    n_relations: int,
    band: str = "corrected",
    pool_weight: str = "degree",
    relation_count: str = "unique",
) -> dict:
    """Plain per-node Python loops over eqs. (1), (3)-(6): the cross-check.

    Written independently of the vectorised functions (no numpy) so that tests
    and ``benchmarks/pooling.py`` can compare both; it must give identical pools.
    """
    n = len(kinds)
    counts = [0] * n
    last = [0] * n
    for k, i in enumerate(node_index):  # eq. (1): latest presence wins
        counts[i] += 1
        last[i] = 1 if present[k] else 0
    prio = [0.0] * n
    for i in range(n):  # eq. (3)
        if counts[i] == 0:
            N = 0
        elif relation_count == "unique":
            N = owned[i]
        else:
            N = owned[i] * counts[i]
        prio[i] = (last[i] * N) / float(n_relations)
    seen_p = [prio[i] for i in range(n) if counts[i] > 0]
    avg = math.fsum(seen_p) / len(seen_p) if seen_p else 0.0
    half, three_q = avg / 2.0, 3.0 * avg / 4.0
    pools = [NO_POOL] * n
    for i in range(n):  # eq. (4)
        if counts[i] == 0:
            continue
        if prio[i] > three_q:
            pools[i] = 0
        elif prio[i] <= half:
            pools[i] = 2
        elif band == "corrected":
            pools[i] = 1
    W = [0.0, 0.0, 0.0]
    wc = [[0.0] * n for _ in range(3)]
    weights = [0.0] * n
    for i in range(n):  # eqs. (5)-(6)
        d = degree[i] if kinds[i] == "gateway" else 0
        weights[i] = (1.0 if kinds[i] == "sensor" else float(d)) / n
        u = weights[i] if pool_weight == "sum_w" else (1.0 + d) / n
        if pools[i] >= 0:
            W[pools[i]] += u
            wc[pools[i]][i] = u
    return {"presence": last, "observations": counts, "priority": prio, "pools": pools, "weights": weights,
            "pool_weights": W, "weight_matrix": wc}


def reference_alpha(previous: Sequence[Sequence[float]], new: Sequence[Sequence[float]],
                     reading: str = "nodes") -> list[float]:
    """Eq. (7) with plain loops over the rows of two W_C matrices (the cross-check)."""
    out = []
    for row_a, row_b in zip(previous, new):
        if reading == "pool":
            out.append(abs(sum(row_a) - sum(row_b)))
        else:
            total = 0.0
            for x, y in zip(row_a, row_b):
                total += abs(x - y)
            out.append(total)
    return out


"""Tests of gentwin.pooling: eqs. (1)-(7), Algorithm 1 lines 1-8, training orders."""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gentwin.config import resolve
from gentwin.pooling import (
    POOLS,
    PoolingError,
    PriorityPool,
    alpha,
    assign_pools,
    key_value_pairs,
    node_weights,
    observation_counts,
    pool_arrays,
    pool_bounds,
    pool_contributions,
    pool_snapshot,
    pool_weights,
    presence,
    priority,
    relation_counts,
    topology_arrays,
    training_order,
    update_trigger,
    weight_matrix,
)
from gentwin.topology import DataSet, Instance, Node, Topology, generate_dataset
from pooling_oracle import HEAD, IDS, hand_dataset, hand_topology, owner_dataset, reference_alpha, reference_pools

# ---------------------------------------------------------------------------
# The hand-worked example: 2 gateways, 5 sensors, one service
# ---------------------------------------------------------------------------
#
#   G1 <- S1, S2, S3   (d_G1 = 3)      G2 <- S4, S5   (d_G2 = 2)      fog link G1 -> G2
#
# Relations of S and Gw (head is a device):
#   S1..S5 CONNECTED_TO their gateway       5
#   S1..S5 SERVES_IN AQ                     5
#   G1, G2 SERVES_IN AQ                     2
#   G1 CONNECTED_TO G2                      1
#                                       M = 13    (AQ IN CITY has a service as head: not counted)
# Own relations (head): S_i 2 each, G1 2 (SERVES_IN + fog link), G2 1.   2*5 + 2 + 1 = 13 = M.
# n = 7 device nodes.
#
# Log (index: node present):  0:S1 T  1:G1 T  2:S2 T  3:G2 T  4:S3 T  5:S1 T  6:S4 T  7:S2 F | 8:S1 F
# S5 never appears.  Step 1 = instances 0-7, step 2 = instance 8.

# (built by pooling_oracle.hand_topology and hand_dataset, shared with tests/experiments/test_pools.py)


def _by_id(snap, values):
    return dict(zip(snap.node_ids, np.asarray(values).tolist()))


def test_hand_example_structure():
    arr = topology_arrays(hand_topology(), **HEAD)
    assert list(arr.node_ids) == IDS
    assert arr.n_relations == 13  # M: 5 + 5 + 2 + 1
    assert arr.owned.tolist() == [2, 1, 2, 2, 2, 2, 2]  # G1, G2, S1..S5
    assert arr.degree.tolist() == [3, 2, 0, 0, 0, 0, 0]  # d_i
    # eq. (2): sensors -> [:s] {id, gateway}; gateways -> [:gw] {id, d_i}
    assert key_value_pairs(arr.node_ids, arr.kinds, arr.gateway_of, arr.degree) == [
        ("[:gw]", ("G1", 3)), ("[:gw]", ("G2", 2)), ("[:s]", ("S1", "G1")), ("[:s]", ("S2", "G1")),
        ("[:s]", ("S3", "G1")), ("[:s]", ("S4", "G2")), ("[:s]", ("S5", "G2")),
    ]


def test_hand_example_eqs_1_to_6_step_1():
    snap = pool_snapshot(hand_dataset(), upto=8, **HEAD)
    assert snap.n_relations == 13 and snap.n == 7 and snap.n_instances == 8
    # eq. (1): latest presence; S2's latest (index 7) is absent, S5 never seen
    assert _by_id(snap, snap.presence) == {"G1": 1, "G2": 1, "S1": 1, "S2": 0, "S3": 1, "S4": 1, "S5": 0}
    assert _by_id(snap, snap.observations) == {"G1": 1, "G2": 1, "S1": 2, "S2": 2, "S3": 1, "S4": 1, "S5": 0}
    # eq. (3), "unique": N_i = own relations once seen; p = presence * N / 13
    assert _by_id(snap, snap.relations) == {"G1": 2, "G2": 1, "S1": 2, "S2": 2, "S3": 2, "S4": 2, "S5": 0}
    expect_p = {"G1": 2 / 13, "G2": 1 / 13, "S1": 2 / 13, "S2": 0.0, "S3": 2 / 13, "S4": 2 / 13, "S5": 0.0}
    assert _by_id(snap, snap.priority) == pytest.approx(expect_p)
    # eq. (4): Avg over the 6 seen nodes = (2+1+2+0+2+2)/13/6 = 9/78 = 3/26
    #          Avg/2 = 3/52 = 6/104,  3Avg/4 = 9/104;  2/13 = 16/104 > 9/104 -> H
    #          G2: 1/13 = 8/104 in (6/104, 9/104] -> M;  S2: 0 -> L;  S5 unseen -> no pool
    assert snap.avg == pytest.approx(3 / 26)
    assert snap.thresholds == pytest.approx((6 / 104, 9 / 104))
    assert _by_id(snap, snap.pool) == {"G1": "H", "G2": "M", "S1": "H", "S2": "L", "S3": "H", "S4": "H", "S5": None}
    assert [nid for nid, p in zip(snap.node_ids, snap.pool) if p == "H"] == ["G1", "S1", "S3", "S4"]
    assert snap.sizes() == {"H": 4, "M": 1, "L": 1}
    # eq. (5): w = 1/7 per sensor, d_i/7 per gateway -> G1 3/7, G2 2/7
    assert _by_id(snap, snap.weights) == pytest.approx(
        {"G1": 3 / 7, "G2": 2 / 7, "S1": 1 / 7, "S2": 1 / 7, "S3": 1 / 7, "S4": 1 / 7, "S5": 1 / 7})
    # eq. (6) "degree": W_p = (1/7) sum (1 + d_i)
    #   W_H = (1+3) + 1 + 1 + 1 = 7 -> 7/7 = 1;  W_M = (1+2)/7 = 3/7;  W_L = 1/7
    assert snap.pool_weight_values == pytest.approx({"H": 1.0, "M": 3 / 7, "L": 1 / 7})
    # W_C rows sum to W_p; column of S5 (no pool) is zero
    assert snap.weight_matrix.sum(axis=1) == pytest.approx([1.0, 3 / 7, 1 / 7])
    assert snap.weight_matrix[:, IDS.index("S5")].tolist() == [0.0, 0.0, 0.0]
    assert snap.weight_matrix[0, IDS.index("G1")] == pytest.approx(4 / 7)
    # eq. (6) "sum_w": W_H = 3/7 + 3 * 1/7 = 6/7;  W_M = 2/7;  W_L = 1/7
    sw = pool_snapshot(hand_dataset(), upto=8, pool_weight="sum_w", **HEAD)
    assert sw.pool_weight_values == pytest.approx({"H": 6 / 7, "M": 2 / 7, "L": 1 / 7})


def test_hand_example_occurrences_reading():
    snap = pool_snapshot(hand_dataset(), upto=8, relation_count="occurrences", **HEAD)
    # N = own relations * instances: S1 2*2 = 4, S2 2*2 = 4, others 2*1 or 1*1
    assert _by_id(snap, snap.relations) == {"G1": 2, "G2": 1, "S1": 4, "S2": 4, "S3": 2, "S4": 2, "S5": 0}
    # p*13: G1 2, G2 1, S1 4, S2 0 (absent), S3 2, S4 2 -> sum 11, Avg = 11/78
    # 3Avg/4 = 11/104 (2/13 = 16/104 -> H), Avg/2 = 11/156 (1/13 = 12/156 -> M)
    assert snap.avg == pytest.approx(11 / 78)
    assert _by_id(snap, snap.pool) == {"G1": "H", "G2": "M", "S1": "H", "S2": "L", "S3": "H", "S4": "H", "S5": None}


def test_hand_example_paper_band_leaves_g2_in_no_pool():
    snap = pool_snapshot(hand_dataset(), upto=8, band="paper", **HEAD)
    # as printed, P_M = {9/104 <= p < 6/104} is empty; G2 (8/104) satisfies no condition
    assert _by_id(snap, snap.pool)["G2"] is None
    assert snap.sizes() == {"H": 4, "M": 0, "L": 1}
    assert snap.pool_weight_values == pytest.approx({"H": 1.0, "M": 0.0, "L": 1 / 7})


def test_hand_example_eq_7_and_algorithm_steps():
    ds = hand_dataset()
    pp = PriorityPool(ds.topology, **HEAD)
    s1 = pp.step(ds.instances[:8])
    # line 1 starts from empty pools: α = the row sums of W_C = W_p
    assert s1.alpha == pytest.approx({"H": 1.0, "M": 3 / 7, "L": 1 / 7})
    assert (s1.step, s1.version, s1.updated) == (1, 1, True)
    s2 = pp.step(ds.instances[8:])
    # S1 drops: p*13 = G1 2, G2 1, S3 2, S4 2 -> Avg = 7/78, 3Avg/4 = 7/104 < 1/13 = 8/104 -> G2 moves M -> H
    assert _by_id(s2, s2.pool) == {"G1": "H", "G2": "H", "S1": "L", "S2": "L", "S3": "H", "S4": "H", "S5": None}
    # W_H = (4 + 3 + 1 + 1)/7 = 9/7, W_M = 0, W_L = 2/7
    assert s2.pool_weight_values == pytest.approx({"H": 9 / 7, "M": 0.0, "L": 2 / 7})
    # eq. (7) "nodes": H loses S1 (1/7) and gains G2 (3/7) -> 4/7; M loses G2 -> 3/7; L gains S1 -> 1/7
    assert s2.alpha == pytest.approx({"H": 4 / 7, "M": 3 / 7, "L": 1 / 7})
    assert alpha(s1, s2) == pytest.approx(s2.alpha)
    # eq. (7) "pool": |1 - 9/7| = 2/7, |3/7 - 0| = 3/7, |1/7 - 2/7| = 1/7
    assert alpha(s1, s2, reading="pool") == pytest.approx({"H": 2 / 7, "M": 3 / 7, "L": 1 / 7})
    assert (s2.version, s2.updated) == (2, True)
    # nothing new: α = 0, version stays
    s3 = pp.step([])
    assert s3.alpha == {"H": 0.0, "M": 0.0, "L": 0.0}
    assert (s3.version, s3.updated) == (2, False)
    # stepping reaches the same state as the snapshot of the whole prefix
    whole = pool_snapshot(ds, **HEAD)
    assert whole.pool == s3.pool and np.array_equal(whole.priority, s3.priority)


def test_eq_7_readings_differ_on_a_swap():
    # two sensors of equal weight swap pools H <-> L: W_p unchanged, contents changed
    before = weight_matrix([0, 2], [0.5, 0.5])
    after = weight_matrix([2, 0], [0.5, 0.5])
    assert update_trigger(before, after, "pool").tolist() == [0.0, 0.0, 0.0]
    assert update_trigger(before, after, "nodes").tolist() == [1.0, 0.0, 1.0]


def test_alpha_matches_nodes_by_id_across_topologies():
    ds = hand_dataset()
    s1 = pool_snapshot(ds, upto=8, **HEAD)
    # delete S4 from the topology (and its instance): it leaves P_H
    topo = hand_topology()
    del topo.nodes["S4"]
    topo.relations = [r for r in topo.relations if r.head != "S4"]
    topo.validate()
    ds2 = DataSet(topology=topo, instances=[i for i in ds.instances[:8] if i.node_id != "S4"])
    s2 = pool_snapshot(ds2, **HEAD)
    a = alpha(s1, s2)
    assert a["H"] > 0
    assert alpha(s1, s1) == {"H": 0.0, "M": 0.0, "L": 0.0}
    with pytest.raises(PoolingError, match="pool_weight"):
        alpha(s1, pool_snapshot(ds, upto=8, pool_weight="sum_w", **HEAD))


# ---------------------------------------------------------------------------
# Eq. (3), whose relation it is: relation_owner "head" against "incident" (worked by hand)
# ---------------------------------------------------------------------------
#
# The same topology as above (g1 serves s1, s2, s3, belongs to AQ and has the fog link g1 -> g2; g2 serves s4, s5
# and belongs to AQ; M = 13, n = 7).  New log: every node once, present, then s3 absent; later s3 returns.
#
#   0:G1 T  1:G2 T  2:S1 T  3:S2 T  4:S3 T  5:S4 T  6:S5 T  7:S3 F  | step 2:  8:S3 T
#
# N_i ("unique": all seen, so N_i = owned_i):
#   head:      G1 2 (SERVES_IN, fog link)  G2 1 (SERVES_IN)                            S_i 2 (CONNECTED_TO, SERVES_IN)
#   incident:  G1 5 (+ S1, S2, S3 links)   G2 4 (SERVES_IN, fog link tail, S4, S5)      S_i 2 (their tails G/AQ: the
#              gateway tail is counted for the gateway, AQ is no device)          sum 19 = 13 + 6 device-tail relations
# Priorities in units of 1/364 (364 = 13 * 28, so k/13 = 28k/364); w: G1 3/7, G2 2/7, sensors 1/7;
# eq. (6) "degree" terms u = (1 + d)/7: G1 4/7, G2 3/7, sensors 1/7.
#
# head, step 1: p*13 = G1 2, G2 1, S1 2, S2 2, S3 0 (absent), S4 2, S5 2 -> sum 11, Avg = 11/91 = 44/364
#   Avg/2 = 22/364, 3Avg/4 = 33/364.  2/13 = 56/364 > 33 -> H (G1, S1, S2, S4, S5); G2 1/13 = 28/364 in (22, 33]
#   -> M (corrected) / no pool (paper); S3 0 -> L.  The gateway ranks with (G1) or below (G2) its own sensors.
#   degree: W_H = 4/7 + 4 * 1/7 = 8/7, W_M = 3/7, W_L = 1/7 (paper: 8/7, 0, 1/7)
#   sum_w:  W_H = 3/7 + 4/7 = 1,       W_M = 2/7, W_L = 1/7 (paper: 1, 0, 1/7)
#   ties: five nodes share 2/13 -> 5/7 (tests/experiments/test_pools.py).
# head, step 2 (S3 back): sum 13, Avg = 52/364, Avg/2 = 26, 3Avg/4 = 39: S3 56 -> H, G2 28 stays M (paper: none).
#   alpha "nodes", degree: H gains S3 (1/7), M unchanged 0, L loses S3 1/7 -> (1/7, 0, 1/7), both bands.
#
# incident, step 1: p*13 = G1 5, G2 4, S1 2, S2 2, S3 0, S4 2, S5 2 -> sum 17, Avg = 68/364, Avg/2 = 34, 3Avg/4 = 51
#   G1 140, G2 112, sensors 56 > 51 -> all active nodes H; S3 -> L; M empty (paper band: the same, no gap node).
#   degree: W_H = 4/7 + 3/7 + 4/7 = 11/7, W_M = 0, W_L = 1/7;  sum_w: W_H = 3/7 + 2/7 + 4/7 = 9/7, 0, 1/7.
#   ties: four sensors share 2/13 -> 4/7 (tests/experiments/test_pools.py).
# incident, step 2: sum 19, Avg = 76/364, Avg/2 = 38, 3Avg/4 = 57: sensors 56 in (38, 57] -> M (paper: no pool);
#   G1, G2 stay H; L empty.
#   corrected, degree: W = (1, 5/7, 0); alpha "nodes": H loses S1, S2, S4, S5 (4/7), M gains five sensors (5/7),
#   L loses S3 (1/7).  paper, degree: W = (1, 0, 0); alpha: H 4/7, M 0, L 1/7.

# (the log is pooling_oracle.OWNER_LOG, built by owner_dataset)

# per reading: N, p*13 at step 1, Avg at step 1, pools (corrected, paper) at steps 1 and 2,
# W_p (degree, sum_w) at step 1 per band, alpha ("nodes", degree) at step 2 per band
OWNER_CASES = {
    "head": dict(
        N={"G1": 2, "G2": 1, "S1": 2, "S2": 2, "S3": 2, "S4": 2, "S5": 2},
        p13={"G1": 2, "G2": 1, "S1": 2, "S2": 2, "S3": 0, "S4": 2, "S5": 2}, avg=11 / 91,
        pools1={"corrected": "HMHHLHH", "paper": "H-HHLHH"}, pools2={"corrected": "HMHHHHH", "paper": "H-HHHHH"},
        W1={("corrected", "degree"): (8 / 7, 3 / 7, 1 / 7), ("paper", "degree"): (8 / 7, 0, 1 / 7),
            ("corrected", "sum_w"): (1, 2 / 7, 1 / 7), ("paper", "sum_w"): (1, 0, 1 / 7)},
        alpha2={"corrected": (1 / 7, 0, 1 / 7), "paper": (1 / 7, 0, 1 / 7)},
    ),
    "incident": dict(
        N={"G1": 5, "G2": 4, "S1": 2, "S2": 2, "S3": 2, "S4": 2, "S5": 2},
        p13={"G1": 5, "G2": 4, "S1": 2, "S2": 2, "S3": 0, "S4": 2, "S5": 2}, avg=17 / 91,
        pools1={"corrected": "HHHHLHH", "paper": "HHHHLHH"}, pools2={"corrected": "HHMMMMM", "paper": "HH-----"},
        W1={("corrected", "degree"): (11 / 7, 0, 1 / 7), ("paper", "degree"): (11 / 7, 0, 1 / 7),
            ("corrected", "sum_w"): (9 / 7, 0, 1 / 7), ("paper", "sum_w"): (9 / 7, 0, 1 / 7)},
        alpha2={"corrected": (4 / 7, 5 / 7, 1 / 7), "paper": (4 / 7, 0, 1 / 7)},
    ),
}


def _pools_string(snap) -> str:  # pools in IDS order (G1, G2, S1..S5), "-" for no pool
    codes = _by_id(snap, snap.pool_codes)
    return "".join("HML"[codes[i]] if codes[i] >= 0 else "-" for i in IDS)


@pytest.mark.parametrize("owner", ["head", "incident"])
@pytest.mark.parametrize("band", ["corrected", "paper"])
def test_relation_owner_worked_by_hand(owner, band):
    case, ds = OWNER_CASES[owner], owner_dataset()
    s1 = pool_snapshot(ds, upto=8, band=band, relation_owner=owner)
    assert _by_id(s1, s1.relations) == case["N"]
    assert _by_id(s1, s1.priority) == pytest.approx({k: v / 13 for k, v in case["p13"].items()})
    assert s1.avg == pytest.approx(case["avg"])
    assert _pools_string(s1) == case["pools1"][band]
    for pw in ("degree", "sum_w"):
        w = pool_snapshot(ds, upto=8, band=band, pool_weight=pw, relation_owner=owner).pool_weight_values
        assert [w[p] for p in POOLS] == pytest.approx(case["W1"][(band, pw)])
    # s3 returns: Algorithm 1's step 2 against the pools of step 1
    pp = PriorityPool(ds.topology, band=band, relation_owner=owner)
    pp.step(ds.instances[:8])
    s2 = pp.step(ds.instances[8:])
    assert _pools_string(s2) == case["pools2"][band]
    assert [s2.alpha[p] for p in POOLS] == pytest.approx(case["alpha2"][band])
    assert s2.relation_owner == owner and pp.arrays.relation_owner == owner


def test_relation_owner_incident_counts_tails_and_threads_through():
    head, inc = topology_arrays(hand_topology(), "head"), topology_arrays(hand_topology(), "incident")
    assert head.owned.sum() == head.n_relations == inc.n_relations == 13  # M does not depend on the reading
    assert inc.owned.sum() == 13 + 6  # five sensor links and the fog link end at a device
    ds = owner_dataset()
    a = training_order(ds, ds.instances[:8], by="priority", seed=0, relation_owner="incident")
    # incident: G1 (5/13) then G2 (4/13) lead; head: G1 ties with four sensors, so G2 is never second
    assert [i.node_id for i in a[:2]] == ["G1", "G2"]
    with pytest.raises(PoolingError, match="relation_owner = 'tail'"):
        PriorityPool(ds.topology, relation_owner="tail")
    # the functions' default is the config's, so flipping it there moves every caller
    from gentwin.config import field_spec

    assert pool_snapshot(ds).relation_owner == field_spec("relation_owner").default


# ---------------------------------------------------------------------------
# Training orders
# ---------------------------------------------------------------------------


def test_training_order_hand_example():
    ds = hand_dataset()
    step1 = ds.instances[:8]
    pri = training_order(ds, step1, by="priority", seed=0, **HEAD)
    # H: S1 (0, 5), G1 (1), S3 (4), S4 (6) -- all p = 2/13; then M: G2 (3); then L: S2 (2, 7)
    assert {i.index for i in pri[:5]} == {0, 1, 4, 5, 6}
    assert pri[5].index == 3
    assert {i.index for i in pri[6:]} == {2, 7}
    # ties are shuffled by the seed, reproducibly
    assert [i.index for i in training_order(ds, step1, by="priority", seed=0, **HEAD)] == [i.index for i in pri]
    heads = {tuple(i.index for i in training_order(ds, step1, by="priority", seed=s, **HEAD)[:5]) for s in range(10)}
    assert len(heads) > 1
    # by weight: W_H = 1 > W_M = 3/7 > W_L = 1/7; within H, G1 (w = 3/7) before the sensors (1/7)
    wt = training_order(ds, step1, by="weight", seed=0, **HEAD)
    assert wt[0].node_id == "G1"
    assert {i.index for i in wt[1:5]} == {0, 4, 5, 6} and wt[5].index == 3
    # the printed band: G2 is in no pool and goes last
    paper = training_order(ds, step1, by="priority", seed=0, band="paper", **HEAD)
    assert paper[-1].index == 3
    rnd = training_order(ds, step1, by="random", seed=3, **HEAD)
    assert [i.index for i in rnd] == [step1[k].index for k in np.random.default_rng(3).permutation(8)]
    assert training_order(ds, [], by="priority", seed=0, **HEAD) == []


def test_training_order_uses_only_the_given_instances():
    ds = generate_dataset(resolve("quick").topology)
    train = ds.split("train")
    before = [i.index for i in training_order(ds, train, by="priority", seed=1)]
    # flip every validation/test record: the training order must not move
    flipped = [i if i.split == "train" else dataclasses.replace(i, present=not i.present) for i in ds.instances]
    ds2 = DataSet(topology=ds.topology, instances=flipped)
    after = [i.index for i in training_order(ds2, ds2.split("train"), by="priority", seed=1)]
    assert before == after
    assert sorted(before) == sorted(i.index for i in train)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), data_seed=st.integers(0, 50), by=st.sampled_from(["priority", "weight"]),
       pool_weight=st.sampled_from(["degree", "sum_w"]))
def test_training_order_respects_pools(seed, data_seed, by, pool_weight):
    ds = generate_dataset(dataclasses.replace(resolve("quick").topology, data_seed=data_seed))
    train = ds.split("train")
    snap = pool_snapshot(DataSet(ds.topology, train), pool_weight=pool_weight)
    out = training_order(ds, train, by=by, seed=seed, pool_weight=pool_weight)
    assert sorted(i.index for i in out) == sorted(i.index for i in train)
    pos = {nid: k for k, nid in enumerate(snap.node_ids)}
    if by == "priority":
        rank = [("H", "M", "L", None).index(snap.pool[pos[i.node_id]]) for i in out]
        key = [-snap.priority[pos[i.node_id]] for i in out]
    else:
        def pool_rank(label):  # W_p descending, equal W_p in H, M, L order, no pool last
            return (1, 0.0, 0) if label is None else (0, -snap.pool_weight_values[label], POOLS.index(label))

        rank = [pool_rank(snap.pool[pos[i.node_id]]) for i in out]
        key = [-snap.weights[pos[i.node_id]] for i in out]
    pairs = list(zip(rank, key))
    assert pairs == sorted(pairs)


# ---------------------------------------------------------------------------
# Property tests on random logs (vectorised vs per-node loop, invariants)
# ---------------------------------------------------------------------------


@st.composite
def random_logs(draw):
    n_g = draw(st.integers(1, 5))
    n_s = draw(st.integers(0, 15))
    kinds = ["gateway"] * n_g + ["sensor"] * n_s
    owners = draw(st.lists(st.integers(0, n_g - 1), min_size=n_s, max_size=n_s))
    degree = [owners.count(g) for g in range(n_g)] + [0] * n_s
    owned = [1 + draw(st.integers(0, 3)) for _ in range(n_g)] + [2] * n_s
    n = n_g + n_s
    m = draw(st.integers(0, 3 * n))
    idx = draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m))
    pres = draw(st.lists(st.booleans(), min_size=m, max_size=m))
    return kinds, degree, owned, sum(owned), idx, pres


def _vectorised(kinds, degree, owned, M, idx, pres, **kw):
    n = len(kinds)
    idx = np.asarray(idx, dtype=np.int64)
    return pool_arrays(observation_counts(idx, n), presence(idx, np.asarray(pres, dtype=bool), n), kinds, degree,
                       owned, M, **kw)


@settings(max_examples=150, deadline=None)
@given(log=random_logs(), band=st.sampled_from(["corrected", "paper"]),
       pool_weight=st.sampled_from(["degree", "sum_w"]), relation_count=st.sampled_from(["unique", "occurrences"]))
def test_vectorised_equals_per_node_loop(log, band, pool_weight, relation_count):
    kinds, degree, owned, M, idx, pres = log
    kw = dict(band=band, pool_weight=pool_weight, relation_count=relation_count)
    v = _vectorised(kinds, degree, owned, M, idx, pres, **kw)
    ref = reference_pools(idx, pres, kinds, degree, owned, M, **kw)
    assert v.pools.tolist() == ref["pools"]
    assert v.presence.tolist() == ref["presence"]
    assert v.priority.tolist() == ref["priority"]
    assert v.pool_weights == pytest.approx(ref["pool_weights"])
    assert v.weight_matrix == pytest.approx(np.array(ref["weight_matrix"]).reshape(3, len(kinds)))
    # eq. (7) against the state before the last instance, both readings
    prev = _vectorised(kinds, degree, owned, M, idx[:-1], pres[:-1], **kw)
    prev_ref = reference_pools(idx[:-1], pres[:-1], kinds, degree, owned, M, **kw)
    for reading in ("nodes", "pool"):
        assert update_trigger(prev.weight_matrix, v.weight_matrix, reading) == pytest.approx(
            reference_alpha(prev_ref["weight_matrix"], ref["weight_matrix"], reading))


@settings(max_examples=150, deadline=None)
@given(log=random_logs())
def test_corrected_pools_partition_seen_nodes(log):
    kinds, degree, owned, M, idx, pres = log
    v = _vectorised(kinds, degree, owned, M, idx, pres)
    seen = v.observations > 0
    assert np.all(v.pools[seen] >= 0)  # every seen (so every active) node is in exactly one pool
    assert np.all(v.pools[~seen] == -1)
    assert np.all(v.priority[v.presence == 0] == 0)  # inactive nodes have priority 0
    assert set(np.flatnonzero(v.presence == 1)) <= set(np.flatnonzero(v.pools >= 0))
    # W_p over the partition adds up to the contributions of the seen nodes
    assert v.pool_weights.sum() == pytest.approx(v.contributions[seen].sum())
    # every node in P_H has a higher priority than every node in P_M, and P_M than P_L
    for hi, lo in ((0, 1), (1, 2), (0, 2)):
        if (v.pools == hi).any() and (v.pools == lo).any():
            assert v.priority[v.pools == hi].min() > v.priority[v.pools == lo].max()


@settings(max_examples=150, deadline=None)
@given(log=random_logs())
def test_paper_band_leaves_medium_pool_empty(log):
    kinds, degree, owned, M, idx, pres = log
    v = _vectorised(kinds, degree, owned, M, idx, pres, band="paper")
    c = _vectorised(kinds, degree, owned, M, idx, pres, band="corrected")
    assert not (v.pools == 1).any()
    # the nodes the printed form drops are exactly the corrected P_M
    assert np.array_equal(np.flatnonzero((v.pools == -1) & (v.observations > 0)), np.flatnonzero(c.pools == 1))


@settings(max_examples=100, deadline=None)
@given(log=random_logs(), pool_weight=st.sampled_from(["degree", "sum_w"]))
def test_alpha_zero_when_nothing_changes_positive_when_a_node_drops(log, pool_weight):
    kinds, degree, owned, M, idx, pres = log
    v = _vectorised(kinds, degree, owned, M, idx, pres, pool_weight=pool_weight)
    # nothing changes: same W_C, or the same node re-reporting the same presence ("unique" reading)
    assert update_trigger(v.weight_matrix, v.weight_matrix).tolist() == [0.0, 0.0, 0.0]
    if idx:
        again = _vectorised(kinds, degree, owned, M, idx + [idx[-1]], pres + [pres[-1]], pool_weight=pool_weight)
        assert update_trigger(v.weight_matrix, again.weight_matrix).tolist() == [0.0, 0.0, 0.0]
    # the highest-priority active node drops: it leaves P_H (its p > Avg > 3Avg/4) for P_L
    if (v.priority > 0).any():
        top = int(np.argmax(v.priority))
        dropped = _vectorised(kinds, degree, owned, M, idx + [top], pres + [False], pool_weight=pool_weight)
        assert v.pools[top] == 0 and dropped.pools[top] == 2
        a = update_trigger(v.weight_matrix, dropped.weight_matrix)
        if v.contributions[top] > 0:
            assert a[0] > 0 and a[2] > 0


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_seed=st.integers(0, 100), window=st.integers(1, 25))
def test_stream_steps_equal_snapshots_of_prefixes(data_seed, window):
    ds = generate_dataset(dataclasses.replace(resolve("quick").topology, data_seed=data_seed))
    pp = PriorityPool(ds.topology)
    snaps = pp.run(ds.instances, window=window)
    assert len(snaps) == -(-len(ds.instances) // window)
    prev = None
    for s in snaps:
        ref = pool_snapshot(ds, upto=s.upto)
        assert s.pool == ref.pool and np.array_equal(s.priority, ref.priority)
        if prev is not None:
            assert s.alpha == pytest.approx(alpha(prev, s))
            assert s.version == prev.version + (1 if any(v > 0 for v in s.alpha.values()) else 0)
        prev = s


# ---------------------------------------------------------------------------
# Eq. (5) versus networkx degree centrality
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["hand", "quick", "paper"])
def test_node_weights_are_degree_centrality_times_n_minus_1_over_n(which):
    topo = hand_topology() if which == "hand" else generate_dataset(resolve(which).topology).topology
    arr = topology_arrays(topo)
    g = nx.Graph()
    g.add_nodes_from(arr.node_ids)
    g.add_edges_from((n.id, n.gateway) for n in topo.sensors())  # the sensor-gateway connections
    dc = nx.degree_centrality(g)  # degree / (n - 1)
    n = len(arr.node_ids)
    w = node_weights(arr.kinds, arr.degree)
    assert w == pytest.approx([dc[i] * (n - 1) / n for i in arr.node_ids], abs=1e-15)
    if which == "hand":
        assert dc["G1"] == pytest.approx(3 / 6) and w[0] == pytest.approx(3 / 7)


def test_degree_and_sum_w_readings_differ_by_one_over_n_per_gateway():
    arr = topology_arrays(hand_topology(), **HEAD)
    diff = pool_contributions(arr.kinds, arr.degree, "degree") - pool_contributions(arr.kinds, arr.degree, "sum_w")
    assert diff == pytest.approx([1 / 7, 1 / 7, 0, 0, 0, 0, 0])


# ---------------------------------------------------------------------------
# Bad input: clear errors, never a silent NaN
# ---------------------------------------------------------------------------


def test_lengths_that_disagree():
    with pytest.raises(PoolingError, match=r"len\(relations\) = 3, len\(presence\) = 2"):
        priority([1, 2, 3], [1, 0], 5)
    with pytest.raises(PoolingError, match="lengths disagree"):
        presence([0, 1], [True], 2)
    with pytest.raises(PoolingError, match="lengths disagree"):
        pool_weights([0, 1], [0.5])
    with pytest.raises(PoolingError, match="shape"):
        update_trigger(np.zeros((3, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("bad, match", [(-1, r"relations\[1\] = -1"), (np.nan, r"relations\[1\] = nan"),
                                        (np.inf, r"relations\[1\] = inf")])
def test_negative_or_nan_counts(bad, match):
    with pytest.raises(PoolingError, match=match):
        priority([1.0, bad], [1, 1], 5)


def test_negative_counts_elsewhere():
    with pytest.raises(PoolingError, match=r"observations\[0\] = -2"):
        relation_counts([1], [-2])
    with pytest.raises(PoolingError, match=r"degree\[1\] = -1"):
        node_weights(["sensor", "gateway"], [0, -1])
    with pytest.raises(PoolingError, match=r"priority\[0\] = nan"):
        assign_pools([np.nan, 0.1])
    with pytest.raises(PoolingError, match=r"presence\[0\] = 2"):
        priority([1], [2], 3)
    with pytest.raises(PoolingError, match=r"degree\[0\] = 2: a sensor"):
        node_weights(["sensor"], [2])


def test_m_zero():
    with pytest.raises(PoolingError, match=r"n_relations \(M\) = 0"):
        priority([0, 0], [1, 1], 0)
    topo = Topology(nodes={"G1": Node("G1", "gateway")}, relations=[])
    with pytest.raises(PoolingError, match="M = 0"):
        topology_arrays(topo)


def test_empty_topology():
    with pytest.raises(PoolingError, match="topology: has no device nodes"):
        PriorityPool(Topology(nodes={"CITY": Node("CITY", "city")}, relations=[]))
    with pytest.raises(PoolingError, match="n = 0"):
        node_weights([], [])


def test_unknown_kinds():
    with pytest.raises(PoolingError, match=r"kinds\[1\] = 'service'"):
        node_weights(["sensor", "service"], [0, 0])
    with pytest.raises(PoolingError, match=r"kinds\[0\] = 'router'"):
        key_value_pairs(["X"], ["router"], [None], [0])
    ds = hand_dataset()
    bad = Instance(index=99, timestamp=0.0, node_id="AQ", present=True, split="train")
    with pytest.raises(PoolingError, match="node_id = 'AQ' is not a sensor or gateway"):
        training_order(ds, [bad], by="priority", seed=0)


def test_unknown_choices_and_stream_order():
    ds = hand_dataset()
    with pytest.raises(PoolingError, match="by = 'fastest'"):
        training_order(ds, ds.instances, by="fastest", seed=0)
    with pytest.raises(PoolingError, match="band = 'wide'"):
        pool_snapshot(ds, band="wide")
    with pytest.raises(PoolingError, match="upto = -1"):
        pool_snapshot(ds, upto=-1)
    pp = PriorityPool(ds.topology)
    pp.step(ds.instances[3:5])
    with pytest.raises(PoolingError, match="index 0 comes after index 4"):
        pp.step(ds.instances[:1])
    with pytest.raises(PoolingError, match="window = 0"):
        PriorityPool(ds.topology).run(ds.instances, window=0)


def test_no_seen_node_gives_no_nan():
    snap = pool_snapshot(hand_dataset(), upto=0)
    assert snap.avg == 0.0 and set(snap.pool) == {None}
    assert not np.isnan(snap.priority).any()
    assert snap.pool_weight_values == {"H": 0.0, "M": 0.0, "L": 0.0}
    assert pool_bounds([0.0, 0.0], [False, False]) == (0.0, 0.0, 0.0)
    # all seen nodes inactive: Avg = 0, everyone in P_L with p = 0, still no NaN
    assert assign_pools([0.0, 0.0]).tolist() == [2, 2]


def test_snapshot_arrays_are_read_only():
    snap = pool_snapshot(hand_dataset())
    with pytest.raises(ValueError):
        snap.priority[0] = 1.0
    assert list(snap.table().columns[:4]) == ["node", "kind", "k", "v"]


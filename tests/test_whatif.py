"""Tests of gentwin.whatif: the what-if city's scenarios, the two twins, response-time rows (Algorithm 1 lines 15-21)."""

from __future__ import annotations

import math

import pytest

from gentwin.config import TopologyConfig
from gentwin.graph import NetworkxStore, TwinRequirement, twin_from_topology
from gentwin.topology import CITY_ID, generate_dataset
from gentwin.whatif import (
    WHATIF_SCENARIOS,
    EventDrivenTwin,
    GenTwin,
    IncrementalTwin,
    TraditionalTwin,
    WhatIfCity,
    WhatIfError,
    changes_for_rate,
    kv_pairs,
    respond,
)

CFG = TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60)


@pytest.fixture(scope="module")
def dataset():
    return generate_dataset(CFG)


def truth(state):
    return twin_from_topology(state.topology, state.presence)


def check_consistent(space: WhatIfCity) -> None:
    """The space's own indices agree with its topology and log."""
    st = space.state()  # Topology(...) validates dangling references
    assert {g: len(m) for g, m in space.members.items()} == st.topology.gateway_degrees() == st.degrees
    ids = set(st.topology.nodes)
    assert all(i.node_id in ids for i in st.instances)
    for nid, present in st.presence.items():
        last = [i for i in st.instances if i.node_id == nid][-1]
        assert last.present == present


# ---------------------------------------------------------------------------
# Rate mapping and scenarios
# ---------------------------------------------------------------------------


def test_changes_for_rate_by_hand():
    assert [changes_for_rate(r, 30) for r in (0.2, 0.4, 0.6, 0.8, 1.0)] == [6, 12, 18, 24, 30]
    assert changes_for_rate(0.001, 300) == 1
    for bad in (0.0, 1.5, -0.1, float("nan"), True):
        with pytest.raises(WhatIfError, match="rate = "):
            changes_for_rate(bad, 30)
    with pytest.raises(WhatIfError, match="n_devices = 0"):
        changes_for_rate(0.5, 0)


def test_sensor_churn_keeps_size_and_logs_presence(dataset):
    space = WhatIfCity(dataset, seed=1)
    n0 = {k: len(space.state().topology.of_kind(k)) for k in ("sensor", "gateway")}
    before = dict(space.presence)
    ep = space.apply("sensor_churn", 0.2)
    assert ep.size == 6 and ep.kind == "sensor_churn"
    st = space.state()
    assert {k: len(st.topology.of_kind(k)) for k in ("sensor", "gateway")} == n0
    went_dark = [s for s in ep.changed if s in before and before[s] and s in st.presence and not st.presence[s]]
    replaced = [s for s in ep.changed if s in before and not before[s] and s not in st.topology.nodes]
    new = [s for s in ep.changed if s not in before]
    assert len(went_dark) + len(replaced) == 6 and len(new) == len(replaced)
    assert all(st.presence[s] for s in new)
    for g in ep.requirement.seeds:
        assert st.topology.nodes[g].kind == "gateway"
    check_consistent(space)


def test_gateway_failure_moves_sensors_to_active_gateways(dataset):
    space = WhatIfCity(dataset, seed=2)
    ep = space.apply("gateway_failure", 0.1)
    st = space.state()
    failed = [g for g in ep.changed if st.topology.nodes[g].kind == "gateway" and not st.presence[g]]
    assert failed
    for g in failed:
        service = st.topology.nodes[g].service
        others = [x for x in st.degrees if x != g and st.topology.nodes[x].service == service and st.presence[x]]
        if others:
            assert st.degrees[g] == 0  # every sensor left the failed gateway
    for s in ep.changed:
        node = st.topology.nodes[s]
        if node.kind == "sensor":
            assert st.presence[node.gateway] and st.topology.nodes[node.gateway].service == node.service
    check_consistent(space)


def test_gateway_failure_uses_the_random_failover_policy():
    """The first failing gateway's sensors go where topology.failover_random sends them with the same draws."""
    import copy

    import numpy as np

    from gentwin.topology import failover_random

    space = WhatIfCity(generate_dataset(TopologyConfig(n_gateways=12, n_sensors=48, n_gateway_links=6, n_instances=60)), seed=4)
    rng = np.random.default_rng(4)
    gateways = sorted(space.members)
    first = gateways[int(rng.permutation(len(gateways))[0])]  # the draw apply() makes first
    service = space.nodes[first].service
    targets = sorted(g for g in space.members if g != first and space.nodes[g].service == service and space.presence[g])
    moving = sorted(space.members[first])
    assert moving and len(targets) > 1  # a choice to make, so the test can fail
    expected = failover_random(moving, targets, copy.deepcopy(rng))
    space.apply("gateway_failure", 1 / space.n_devices0)  # m = 1: only the first gateway fails
    assert [space.nodes[s].gateway for s in moving] == expected


def test_service_added_then_removed(dataset):
    space = WhatIfCity(dataset, seed=3)
    ids0 = set(space.state().topology.nodes)
    ep = space.apply("service_added", 0.5)  # m = 15: 2 gateways + 13 sensors + the service
    st = space.state()
    added = set(st.topology.nodes) - ids0
    assert added == set(ep.changed) and len(added) == 16
    new_service = [n for n in added if st.topology.nodes[n].kind == "service"]
    assert len(new_service) == 1 and ep.requirement.seeds == tuple(new_service)
    assert sum(1 for n in added if st.topology.nodes[n].kind == "gateway") == 2
    back = space.apply("service_added", 0.5)
    assert set(space.state().topology.nodes) == ids0 and back.requirement.seeds == (CITY_ID,)
    check_consistent(space)


def test_scenarios_are_seeded(dataset):
    a, b = WhatIfCity(dataset, seed=5), WhatIfCity(dataset, seed=5)
    for kind in WHATIF_SCENARIOS:
        assert a.apply(kind, 0.3) == b.apply(kind, 0.3)
    with pytest.raises(WhatIfError, match="kind = 'flood'"):
        a.apply("flood", 0.3)


def test_kv_pairs_follow_eq2(dataset):
    st = WhatIfCity(dataset, seed=0).state()
    s = st.topology.sensors()[0]
    g = st.topology.gateways()[0]
    assert kv_pairs(st, [s.id, g.id, "AQ", "nope"]) == [
        ("[:s]", (s.id, s.gateway)), ("[:gw]", (g.id, st.topology.sensor_count(g.id)))]


# ---------------------------------------------------------------------------
# The twins
# ---------------------------------------------------------------------------


def test_gentwin_tracks_the_network_except_what_it_defers(dataset):
    space = WhatIfCity(dataset, seed=7)
    g = GenTwin(NetworkxStore("g"), space.state())
    for k in range(9):
        ep = space.apply(WHATIF_SCENARIOS[k % 3], 0.3)
        st = space.state()
        info = g.update(st, ep.changed)
        nodes, rels = truth(st)
        latest = g.store.request()
        fresh = set(nodes) - g.pending
        assert {i: latest.nodes.get(i) for i in fresh} == {i: nodes[i] for i in fresh}
        assert {r for r in latest.relations if r.head in fresh} == {r for r in rels if r.head in fresh}
        assert info.stale == len(g.pending)
        assert set(info.fired) <= {"H", "M", "L", "S"} and info.alpha.keys() == {"H", "M", "L"}
        if info.version is not None:
            assert g.store.latest().parts == info.fired


def test_gentwin_writes_nothing_without_a_change(dataset):
    space = WhatIfCity(dataset, seed=8)
    g = GenTwin(NetworkxStore("g"), space.state())
    info = g.update(space.state(), [])
    assert (info.version, info.n_written) == (None, 0)
    assert info.alpha == {"H": 0.0, "M": 0.0, "L": 0.0} and [v.number for v in g.store.versions()] == [1]


def test_gentwin_pools_under_the_relation_owner_it_is_given(dataset):
    from gentwin.pooling import pool_snapshot

    st = WhatIfCity(dataset, seed=7).state()
    default, head = GenTwin(NetworkxStore("a"), st), GenTwin(NetworkxStore("b"), st, relation_owner="head")
    assert head.snapshot.relation_owner == "head" and default.snapshot.relation_owner == "incident"
    # a gateway's N_i counts its sensors' links only when the relations are "incident"
    assert head.snapshot.relations.tolist() == pool_snapshot(st.dataset, relation_owner="head").relations.tolist()
    assert head.snapshot.relations.sum() < default.snapshot.relations.sum()


def test_gentwin_defers_pools_whose_alpha_did_not_fire(dataset):
    space = WhatIfCity(dataset, seed=9)
    g = GenTwin(NetworkxStore("g"), space.state(), alpha_threshold=1e9)  # no pool can fire
    ep = space.apply("sensor_churn", 0.2)
    info = g.update(space.state(), ep.changed)
    devices = set(ep.changed)  # churn touches only sensors and gateways, all of them in pools
    assert info.stale == len(devices) > 0 and info.version is None and info.fired == ()
    assert g.store.request().same_content(g.store.request(version="initial"))  # the twin is stale
    g.alpha_threshold = 0.0
    ep2 = space.apply("gateway_failure", 0.1)
    st = space.state()
    g.update(st, ep2.changed)  # now the deferred changes go out with this version
    nodes, _ = truth(st)
    latest = g.store.request()
    assert all(latest.nodes.get(i) == nodes.get(i) for i in devices - g.pending)
    with pytest.raises(WhatIfError, match="alpha_threshold = -1"):
        GenTwin(NetworkxStore("x"), st, alpha_threshold=-1)


def test_gentwin_gate_holds_changes_back_until_alpha_accumulates(dataset):
    """A pool fires when its alpha summed since its last version exceeds the threshold; then it restarts."""
    space = WhatIfCity(dataset, seed=21)
    thr = 0.5
    g = GenTwin(NetworkxStore("g"), space.state(), alpha_threshold=thr)
    since = {"H": 0.0, "M": 0.0, "L": 0.0}
    stale_gated = 0
    for k in range(12):
        ep = space.apply(WHATIF_SCENARIOS[k % 3], 0.1)
        info = g.update(space.state(), ep.changed)
        acc = {p: since[p] + a for p, a in info.alpha.items()}
        fired = {p for p, a in acc.items() if a > thr}
        assert set(info.fired) - {"S"} <= fired  # a part is written only if its pool fired
        since = {p: 0.0 if p in fired else a for p, a in acc.items()}
        assert g.alpha_since == since
        stale_gated += info.stale
    # the same episodes with the default gate (threshold 0): much less is left out of the twin
    space0 = WhatIfCity(dataset, seed=21)
    g0 = GenTwin(NetworkxStore("g0"), space0.state())
    stale_open = 0
    for k in range(12):
        ep = space0.apply(WHATIF_SCENARIOS[k % 3], 0.1)
        stale_open += g0.update(space0.state(), ep.changed).stale
    assert stale_gated > stale_open and stale_gated > 0


def test_all_arms_reach_the_same_graph(dataset):
    space = WhatIfCity(dataset, seed=22)
    st = space.state()
    arms = [GenTwin(NetworkxStore("g"), st), IncrementalTwin(NetworkxStore("i"), st),
            EventDrivenTwin(NetworkxStore("e"), st), TraditionalTwin(NetworkxStore("t", keep_versions=1), st)]
    for k in range(9):
        ep = space.apply(WHATIF_SCENARIOS[k % 3], 0.5)
        st = space.state()
        rows = [respond(t, st, ep)[0] for t in arms]
        nodes, rels = truth(st)
        for t, row in zip(arms[1:], rows[1:]):  # the writers without a gate are never stale
            latest = t.store.request()
            assert dict(latest.nodes) == nodes and latest.relations == rels and row["stale"] == 0, t.name
        assert rows[1]["n_written"] == rows[2]["n_written"]  # same records, in one or in many transactions
        assert rows[1]["transactions"] == 1 and rows[3]["transactions"] == 1
        for row in rows:
            assert math.isclose(row["response_ms"], row["update_ms"] + row["read_ms"], rel_tol=1e-9, abs_tol=1e-9)


def test_event_driven_twin_writes_one_transaction_per_entity(dataset):
    space = WhatIfCity(dataset, seed=23)
    e = EventDrivenTwin(NetworkxStore("e"), space.state())
    for kind in WHATIF_SCENARIOS:
        before = len(e.store.versions())
        ep = space.apply(kind, 0.4)
        info = e.update(space.state(), ep.changed)
        after = e.store.versions()
        assert info.transactions == len(after) - before > 1  # one version per entity event
        assert sum(v.n_written for v in after[before:]) == info.n_written
        assert info.version == after[-1].number
    ep = space.apply("sensor_churn", 0.2)  # the mirror is right: an unchanged entity writes nothing
    e.update(space.state(), ep.changed)
    assert e.update(space.state(), ep.changed).transactions == 0


def test_traditional_twin_is_rebuilt_every_time(dataset):
    space = WhatIfCity(dataset, seed=10)
    t = TraditionalTwin(NetworkxStore("t", keep_versions=1), space.state())
    for kind in WHATIF_SCENARIOS:
        ep = space.apply(kind, 0.3)
        st = space.state()
        info = t.update(st, ep.changed)
        nodes, rels = truth(st)
        latest = t.store.request()
        assert dict(latest.nodes) == nodes and latest.relations == rels
        assert info.fired == ("ALL",) and info.pooling_s == 0.0
        assert info.n_written >= 2 * len(nodes)  # every record ended and opened again (minus none)
    assert len(t.store.versions()) == 1


def test_respond_times_the_whole_answer_and_both_twins_agree(dataset):
    space = WhatIfCity(dataset, seed=11)
    st = space.state()
    g = GenTwin(NetworkxStore("g"), st)
    t = TraditionalTwin(NetworkxStore("t", keep_versions=1), st)
    ep = space.apply("gateway_failure", 0.3)
    st = space.state()
    row_g, sub_g = respond(g, st, ep)
    row_t, sub_t = respond(t, st, ep)
    for row in (row_g, row_t):
        assert row["response_ms"] >= row["pooling_ms"] + row["write_ms"] - 1e-9 and row["request_ms"] >= 0
        assert row["kv_pairs"] == len(ep.requirement.seeds)
    assert sub_g.same_content(sub_t) and row_g["stale"] == 0
    assert sub_g.same_content(g.store.request(TwinRequirement(seeds=ep.requirement.seeds)))
    assert row_g["n_written"] < row_t["n_written"]
    assert math.isnan(row_t["alpha_max"]) and row_g["alpha_max"] > 0


@pytest.mark.neo4j
def test_gentwin_answers_the_same_on_neo4j(dataset, neo4j_env, monkeypatch):
    from gentwin.graph import Neo4jStore

    space_a, space_b = WhatIfCity(dataset, seed=12), WhatIfCity(dataset, seed=12)
    neo = Neo4jStore(neo4j_env["uri"], neo4j_env["user"], neo4j_env["password"], twin="whatif-parity")
    neo.drop()
    try:
        ga, gb = GenTwin(NetworkxStore("a"), space_a.state()), GenTwin(neo, space_b.state())
        for kind in WHATIF_SCENARIOS:
            ea, eb = space_a.apply(kind, 0.3), space_b.apply(kind, 0.3)
            _, sa = respond(ga, space_a.state(), ea)
            _, sb = respond(gb, space_b.state(), eb)
            assert sa.same_content(sb) and sa.version == sb.version
    finally:
        neo.drop()
        neo.close()

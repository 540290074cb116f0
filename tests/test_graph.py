"""Tests of gentwin.graph: the schema, versions and the two twin stores.

The store suite (``store`` fixture) runs on both backends: the embedded
networkx store and a real Neo4j server (``neo4j_env``, started by the test
session; those cases are marked ``neo4j``).
"""

from __future__ import annotations

import json
import os
import socket
import uuid

import numpy as np
import pytest

from gentwin.config import TopologyConfig
from gentwin.graph import (
    ALLOWED_RELATIONS,
    LABELS,
    ChangeSet,
    Neo4jStore,
    NetworkxStore,
    SchemaError,
    Subgraph,
    TwinNode,
    TwinRequirement,
    TwinStoreError,
    VersionError,
    choose_backend,
    label_for,
    open_store,
    relation_type_for,
    twin_from_topology,
)
from gentwin.graph.schema import _Plan
from gentwin.topology import Relation, generate_topology

R = Relation

#: Ids and metadata shaped like Cypher injection: they must be stored literally and harm nothing.
HOSTILE_IDS = (
    "}) MATCH (n) DETACH DELETE n //",
    "x' OR 1=1 //",
    'q"uote',
    "`Sensor`) DETACH DELETE (n",
    "{id: 'a'}",
    "$uid",
    "DETACH DELETE",
    "a/b\\c\nnewline",
)
HOSTILE_META = {
    "name": "'; MATCH (n) DETACH DELETE n; //",
    "}) MATCH (n) DETACH DELETE n //": "key shaped as injection",
    "back`tick": "`) RETURN 1 //",
    "brace{": "{x: 1}",
    "quote'": 'd"q',
    "n": 1,
    "f": 2.5,
    "b": False,
}


def small_graph() -> tuple[dict[str, TwinNode], set[Relation]]:
    """City <- service <- gateways <- sensors; hand-countable."""
    nodes = {
        "CITY": TwinNode("CITY", "city", {"name": "smart city"}),
        "AQ": TwinNode("AQ", "service", {"name": "air quality"}),
        "GW1": TwinNode("GW1", "gateway", {"service": "AQ", "n_sensors": 2, "active": True}),
        "GW2": TwinNode("GW2", "gateway", {"service": "AQ", "n_sensors": 1, "active": True}),
        "S1": TwinNode("S1", "sensor", {"category": "PM2.5 sensor", "active": True, "latitude": 41.38}),
        "S2": TwinNode("S2", "sensor", {"category": "NO2 sensor", "active": True}),
        "S3": TwinNode("S3", "sensor", {"category": "PM10 sensor", "active": False}),
    }
    rels = {
        R("AQ", "IN", "CITY"),
        R("GW1", "SERVES_IN", "AQ"),
        R("GW2", "SERVES_IN", "AQ"),
        R("GW1", "CONNECTED_TO", "GW2"),
        R("S1", "CONNECTED_TO", "GW1"),
        R("S2", "CONNECTED_TO", "GW1"),
        R("S3", "CONNECTED_TO", "GW2"),
        R("S1", "SERVES_IN", "AQ"),
        R("S2", "SERVES_IN", "AQ"),
        R("S3", "SERVES_IN", "AQ"),
    }
    return nodes, rels


#: The order in which both backends write an update (ended relations, ended states, new states, new relations).
WRITE_STEPS = ("relations-ended", "nodes-deleted", "nodes-written", "relations-written")


def written_before(plan: _Plan, step: str) -> _Plan:
    """The part of ``plan`` a backend has written when it fails right after ``step``."""
    k = WRITE_STEPS.index(step)
    return _Plan(end_relations=plan.end_relations, delete_nodes=plan.delete_nodes if k >= 1 else [],
                 states=plan.states if k >= 2 else [], new_relations=plan.new_relations if k >= 3 else [])


class FailingNetworkxStore(NetworkxStore):
    """Test double: writes an update up to ``fail_at`` and fails there ("journal": the journal append fails)."""

    fail_at: str | None = None

    def _apply(self, plan, v, undo):
        if self.fail_at not in WRITE_STEPS:
            return super()._apply(plan, v, undo)
        super()._apply(written_before(plan, self.fail_at), v, undo)
        raise RuntimeError(f"injected failure at {self.fail_at}")

    def _append(self, record):
        if self.fail_at == "journal":
            raise OSError("disk full")
        super()._append(record)


class FailingNeo4jStore(Neo4jStore):
    """Test double: runs an update's statements up to ``fail_at`` inside the transaction, then fails."""

    fail_at: str | None = None

    def _tx_write(self, tx, plan, v, *, new_ids, end_states=True):
        if self.fail_at is None:
            return super()._tx_write(tx, plan, v, new_ids=new_ids, end_states=end_states)
        super()._tx_write(tx, written_before(plan, self.fail_at), v, new_ids=new_ids, end_states=end_states)
        raise RuntimeError(f"injected failure at {self.fail_at}")


@pytest.fixture(params=["networkx", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def make_store(request, tmp_path):
    """A factory of fresh, uniquely named twins on one backend; dropped afterwards.

    ``failing=True`` gives the backend's test double that fails an update at its ``fail_at`` step.
    """
    made = []

    def make(twin: str | None = None, *, failing: bool = False, **kwargs):
        name = twin or f"t-{uuid.uuid4().hex[:12]}"
        if request.param == "networkx":
            cls = FailingNetworkxStore if failing else NetworkxStore
            s = cls(name, path=tmp_path / f"{name}.jsonl", durable=False, **kwargs)
        else:
            env = request.getfixturevalue("neo4j_env")
            cls = FailingNeo4jStore if failing else Neo4jStore
            s = cls(env["uri"], env["user"], env["password"], twin=name, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.fail_at = None
        s.drop()
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------


def test_labels_cover_the_paper_schema():
    assert [label_for(k) for k in ("sensor", "gateway", "service", "city")] == [
        "Sensor", "Gateway", "Service", "SmartCity"]
    assert [relation_type_for(t) for t in ("CONNECTED_TO", "SERVES_IN", "IN")] == ["CONNECTED_TO", "SERVES_IN", "IN"]


@pytest.mark.parametrize("bad", ["Sensor", "sensor`) DETACH DELETE (n", "", None])
def test_label_allow_list_rejects_anything_else(bad):
    with pytest.raises(SchemaError, match="kind = "):
        label_for(bad)


@pytest.mark.parametrize("bad", ["connected_to", "IN]->() DETACH DELETE n //", "HAS_STATE", 3])
def test_relation_allow_list_rejects_anything_else(bad):
    with pytest.raises(SchemaError, match="relation type = "):
        relation_type_for(bad)


def test_twin_node_normalises_and_validates_metadata():
    a = TwinNode("S", "sensor", {"b": 1, "a": "x"})
    b = TwinNode("S", "sensor", (("a", "x"), ("b", 1)))
    assert a == b and hash(a) == hash(b) and a.meta == (("a", "x"), ("b", 1))
    with pytest.raises(SchemaError, match=r"node 'S': metadata 'x' = \[1\]"):
        TwinNode("S", "sensor", {"x": [1]})
    with pytest.raises(SchemaError, match="metadata 'x' = nan"):
        TwinNode("S", "sensor", {"x": float("nan")})
    with pytest.raises(SchemaError, match="integers must fit in 64 bits"):
        TwinNode("S", "sensor", {"x": 2**70})
    with pytest.raises(SchemaError, match="kind = 'robot'"):
        TwinNode("S", "robot")
    with pytest.raises(SchemaError, match="node id = ''"):
        TwinNode("", "sensor")
    with pytest.raises(SchemaError, match="metadata key 'twin' is reserved"):
        TwinNode("S", "sensor", {"twin": "other"})


def test_change_set_rejects_contradictions():
    with pytest.raises(SchemaError, match="'S1' is also in upsert_nodes"):
        ChangeSet(upsert_nodes=(TwinNode("S1", "sensor"),), delete_nodes=("S1",))
    with pytest.raises(SchemaError, match="node id 'S1' appears twice"):
        ChangeSet(upsert_nodes=(TwinNode("S1", "sensor"), TwinNode("S1", "sensor")))
    with pytest.raises(SchemaError, match="both upserted and deleted"):
        ChangeSet(upsert_relations=(R("a", "IN", "b"),), delete_relations=(R("a", "IN", "b"),))
    with pytest.raises(SchemaError, match="uses node 'b', which is deleted"):
        ChangeSet(upsert_relations=(R("a", "IN", "b"),), delete_nodes=("b",))
    with pytest.raises(SchemaError, match="delete_nodes = 'abc': must be a sequence"):
        ChangeSet(delete_nodes="abc")


def test_requirement_validation():
    assert TwinRequirement(seeds=("a", "a", "b")).seeds == ("a", "b")
    with pytest.raises(SchemaError, match="hops = -1"):
        TwinRequirement(seeds=("a",), hops=-1)
    with pytest.raises(SchemaError, match="seeds = 'abc'"):
        TwinRequirement(seeds="abc")
    with pytest.raises(SchemaError, match="relation type = 'KNOWS'"):
        TwinRequirement(relation_types=("KNOWS",))


def test_twin_from_topology_counts_and_metadata():
    cfg = TopologyConfig(n_gateways=6, n_sensors=6, n_gateway_links=1, n_instances=12)
    topo = generate_topology(cfg)
    nodes, rels = twin_from_topology(topo, presence={"AQ-S001": False})
    # 1 city + 3 services + 6 gateways + 6 sensors; 3 IN + 6 gateway SERVES_IN + 6*2 sensor relations + 1 link
    assert (len(nodes), len(rels)) == (16, 22)
    assert nodes["AQ-S001"].get("active") is False and nodes["AQ-S002"].get("active") is True
    assert nodes["CITY"].get("active") is None  # presence is for devices only
    for gw in topo.gateways():
        assert nodes[gw.id].get("n_sensors") == topo.sensor_count(gw.id)
    assert {n.label for n in nodes.values()} == set(LABELS.values())


def test_self_loops_are_rejected_by_name():
    with pytest.raises(SchemaError, match=r"upsert_relations: \(GW1, CONNECTED_TO, GW1\): head = tail = 'GW1'"):
        ChangeSet(upsert_relations=(R("GW1", "CONNECTED_TO", "GW1"),))
    with pytest.raises(SchemaError, match=r"delete_relations: \(S1, SERVES_IN, S1\): head = tail = 'S1'"):
        ChangeSet(delete_relations=(R("S1", "SERVES_IN", "S1"),))


@pytest.mark.parametrize("head, rel_type, tail, field, value, kind", [
    ("S1", "CONNECTED_TO", "S2", "tail", "S2", "sensor"),  # a sensor uplinks to a gateway, never a sensor
    ("GW1", "CONNECTED_TO", "AQ", "tail", "AQ", "service"),
    ("AQ", "SERVES_IN", "AQ2", "head", "AQ", "service"),  # a service is IN the city, it does not serve in one
    ("GW1", "IN", "CITY", "head", "GW1", "gateway"),
    ("S1", "SERVES_IN", "CITY", "tail", "CITY", "city"),
])
def test_relations_the_schema_does_not_allow_are_rejected(store, head, rel_type, tail, field, value, kind):
    nodes, rels = small_graph()
    nodes["AQ2"] = TwinNode("AQ2", "service")
    bad = R(head, rel_type, tail)
    message = rf"\({head}, {rel_type}, {tail}\): {field} = '{value}' is a {kind}; {rel_type} links a "
    with pytest.raises(SchemaError, match="relations: " + message):
        store.rebuild(nodes.values(), [*rels, bad])
    assert store.versions() == []  # nothing was written
    store.rebuild(nodes.values(), rels)
    before = store.request()
    with pytest.raises(SchemaError, match="upsert_relations: " + message):
        store.commit(ChangeSet(upsert_relations=(bad,)))
    assert len(store.versions()) == 1 and store.request().same_content(before)
    # the kinds of nodes upserted in the same change count too
    with pytest.raises(SchemaError, match=r"upsert_relations: \(S9, CONNECTED_TO, S1\): tail = 'S1' is a sensor"):
        store.commit(ChangeSet(upsert_nodes=(TwinNode("S9", "sensor"),), upsert_relations=(R("S9", "CONNECTED_TO", "S1"),)))


def test_every_relation_of_a_generated_city_is_allowed():
    topo = generate_topology(TopologyConfig(n_gateways=6, n_sensors=30, n_gateway_links=2, n_instances=40))
    nodes, rels = twin_from_topology(topo)
    assert rels and all((nodes[r.head].kind, r.type, nodes[r.tail].kind) in ALLOWED_RELATIONS for r in rels)
    assert {r.type for r in rels} == {"CONNECTED_TO", "SERVES_IN", "IN"}


def test_choose_backend_precedence():
    assert choose_backend("auto", {}) == "networkx"
    assert choose_backend("auto", {"NEO4J_URI": "bolt://h:1"}) == "neo4j"
    assert choose_backend("networkx", {"NEO4J_URI": "bolt://h:1"}) == "networkx"
    assert choose_backend("neo4j", {"NEO4J_URI": "bolt://h:1"}) == "neo4j"
    with pytest.raises(TwinStoreError, match="needs NEO4J_URI"):
        choose_backend("neo4j", {})
    with pytest.raises(SchemaError, match="store = 'sqlite'"):
        choose_backend("sqlite", {})


# ---------------------------------------------------------------------------
# The store suite: both backends
# ---------------------------------------------------------------------------


def test_rebuild_round_trip(store):
    nodes, rels = small_graph()
    info = store.rebuild(nodes.values(), rels, name="base")
    assert (info.number, info.name, info.n_written) == (1, "base", 7 + 10)
    sub = store.request()
    assert sub.version == 1 and dict(sub.nodes) == nodes and sub.relations == rels
    assert sub.nodes["S1"].get("latitude") == 41.38 and sub.nodes["GW1"].get("n_sensors") == 2
    assert isinstance(sub.nodes["GW1"].get("n_sensors"), int) and sub.nodes["S3"].get("active") is False


def test_empty_twin_answers_version_zero(store):
    sub = store.request(TwinRequirement(seeds=("S1",)))
    assert (sub.version, dict(sub.nodes), sub.missing) == (0, {}, ("S1",))
    assert store.latest() is None


def test_requirement_neighbourhoods(store):
    nodes, rels = small_graph()
    store.rebuild(nodes.values(), rels)
    one = store.request(TwinRequirement(seeds=("GW2",), hops=1))
    assert set(one.nodes) == {"GW2", "GW1", "S3", "AQ"}
    assert one.relations == {
        R("GW2", "SERVES_IN", "AQ"), R("GW1", "SERVES_IN", "AQ"), R("GW1", "CONNECTED_TO", "GW2"),
        R("S3", "CONNECTED_TO", "GW2"), R("S3", "SERVES_IN", "AQ"),
    }
    assert set(store.request(TwinRequirement(seeds=("S3",), hops=0)).nodes) == {"S3"}
    two = store.request(TwinRequirement(seeds=("S3",), hops=2))
    assert set(two.nodes) == {"S3", "GW2", "AQ", "GW1", "S1", "S2", "CITY"}
    conn = store.request(TwinRequirement(seeds=("S3",), hops=2, relation_types=("CONNECTED_TO",)))
    assert set(conn.nodes) == {"S3", "GW2", "GW1"}
    assert conn.relations == {R("S3", "CONNECTED_TO", "GW2"), R("GW1", "CONNECTED_TO", "GW2")}
    miss = store.request(TwinRequirement(seeds=("GW2", "nope")))
    assert miss.missing == ("nope",) and "GW2" in miss.nodes


def test_every_update_is_a_version_and_old_versions_stay(store):
    nodes, rels = small_graph()
    store.rebuild(nodes.values(), rels, name="base")
    s1_off = TwinNode("S1", "sensor", {"category": "PM2.5 sensor", "active": False, "latitude": 41.38})
    v2 = store.commit(ChangeSet(upsert_nodes=(s1_off,)), parts=(p for p in ("H", "L")))  # any iterable, even one pass
    v3 = store.commit(ChangeSet(delete_nodes=("S3",)), name="S3 gone")
    v4 = store.commit(ChangeSet(upsert_nodes=(TwinNode("S4", "sensor"),),
                                upsert_relations=(R("S4", "CONNECTED_TO", "GW2"),)))
    assert [v.number for v in store.versions()] == [1, 2, 3, 4]
    assert [v.name for v in store.versions()] == ["base", None, "S3 gone", None]
    assert store.versions()[1].parts == ("H", "L")
    assert (v2.n_written, v3.n_written, v4.n_written) == (1, 3, 2)  # S3 and its 2 relations end
    base = store.request(version="base")
    assert dict(base.nodes) == nodes and base.relations == rels and base.version == 1
    assert store.request(version=2).nodes["S1"].get("active") is False
    at3 = store.request(version="S3 gone")
    assert "S3" not in at3.nodes and not any("S3" in (r.head, r.tail) for r in at3.relations)
    latest = store.request()
    assert latest.version == 4 and R("S4", "CONNECTED_TO", "GW2") in latest.relations
    assert store.latest().number == 4
    # a seeded request at an old version sees the old neighbourhood
    old = store.request(TwinRequirement(seeds=("GW2",)), version=1)
    assert set(old.nodes) == {"GW2", "GW1", "S3", "AQ"}


def test_unchanged_upsert_writes_nothing_but_is_a_version(store):
    nodes, rels = small_graph()
    store.rebuild(nodes.values(), rels)
    info = store.commit(ChangeSet(upsert_nodes=(nodes["S1"],), upsert_relations=(R("S1", "CONNECTED_TO", "GW1"),)))
    assert (info.number, info.n_written) == (2, 0)
    assert store.request(version=2).same_content(store.request(version=1))


def test_bad_updates_are_rejected_and_change_nothing(store):
    nodes, rels = small_graph()
    store.rebuild(nodes.values(), rels, name="base")
    before = store.request()
    with pytest.raises(SchemaError, match="delete_nodes: node 'nope' is not in the latest version"):
        store.commit(ChangeSet(delete_nodes=("nope",)))
    with pytest.raises(SchemaError, match="head 'ghost' is not a node of the twin"):
        store.commit(ChangeSet(upsert_relations=(R("ghost", "CONNECTED_TO", "GW1"),)))
    with pytest.raises(SchemaError, match="node 'S1': kind = 'gateway', but the twin holds it as 'sensor'"):
        store.commit(ChangeSet(upsert_nodes=(TwinNode("S1", "gateway"),)))
    with pytest.raises(SchemaError, match=r"delete_relations: \(S1, IN, CITY\) is not in the latest version"):
        store.commit(ChangeSet(delete_relations=(R("S1", "IN", "CITY"),)))
    with pytest.raises(VersionError, match="name = 'base': version 1 already has this name"):
        store.commit(ChangeSet(), name="base")
    with pytest.raises(SchemaError, match="relations: .*tail 'X' is not one of the nodes"):
        store.rebuild(nodes.values(), [R("S1", "IN", "X")])
    assert [v.number for v in store.versions()] == [1]
    assert store.request().same_content(before)
    assert store.commit(ChangeSet()).number == 2  # no version number was used up


def test_unknown_versions(store):
    nodes, rels = small_graph()
    store.rebuild(nodes.values(), rels)
    with pytest.raises(VersionError, match="version = 7"):
        store.request(version=7)
    with pytest.raises(VersionError, match="version = 'nope'"):
        store.request(version="nope")
    with pytest.raises(VersionError, match="version = 1.5"):
        store.request(version=1.5)
    with pytest.raises(VersionError, match="version = True"):
        store.request(version=True)


@pytest.mark.parametrize("step", WRITE_STEPS)
def test_failure_mid_commit_leaves_previous_version(make_store, step):
    store = make_store(failing=True)
    nodes, rels = small_graph()
    store.rebuild(nodes.values(), rels, name="base")
    before = store.request()
    change = ChangeSet(
        upsert_nodes=(TwinNode("S4", "sensor"), TwinNode("S1", "sensor", {"active": False})),
        delete_nodes=("S3",),
        upsert_relations=(R("S4", "CONNECTED_TO", "GW2"),),
        delete_relations=(R("GW1", "CONNECTED_TO", "GW2"),),
    )
    store.fail_at = step
    with pytest.raises(RuntimeError, match=f"injected failure at {step}"):
        store.commit(change, name="broken")
    store.fail_at = None
    after = store.request()
    assert after.version == 1 and after.same_content(before)
    assert [(v.number, v.name) for v in store.versions()] == [(1, "base")]
    with pytest.raises(VersionError):
        store.request(version="broken")
    ok = store.commit(change, name="broken")  # the same update goes through once the fault is gone
    assert ok.number == 2 and "S4" in store.request().nodes and "S3" not in store.request().nodes


def test_failure_mid_rebuild_leaves_previous_version(make_store):
    store = make_store(failing=True)
    nodes, rels = small_graph()
    store.rebuild(nodes.values(), rels)
    before = store.request()
    store.fail_at = "nodes-written"
    with pytest.raises(RuntimeError, match="injected failure"):
        store.rebuild([nodes["CITY"]], [])
    store.fail_at = None
    assert store.request().same_content(before) and len(store.versions()) == 1


def test_keep_versions_one_keeps_only_the_latest(make_store):
    store = make_store(keep_versions=1)
    nodes, rels = small_graph()
    store.rebuild(nodes.values(), rels, name="first")
    store.rebuild([nodes["CITY"], nodes["AQ"]], [R("AQ", "IN", "CITY")], name="second")
    store.commit(ChangeSet(upsert_nodes=(TwinNode("GW9", "gateway"),),
                           upsert_relations=(R("GW9", "SERVES_IN", "AQ"),)))
    assert [v.number for v in store.versions()] == [3]
    with pytest.raises(VersionError):
        store.request(version="first")
    with pytest.raises(VersionError):
        store.request(version=2)
    sub = store.request()
    assert set(sub.nodes) == {"CITY", "AQ", "GW9"} and len(sub.relations) == 2


def test_twins_are_isolated(make_store):
    a, b = make_store(), make_store()
    nodes, rels = small_graph()
    a.rebuild(nodes.values(), rels)
    b.rebuild([TwinNode("S1", "sensor", {"owner": "b"})], [])
    assert a.request().nodes["S1"] == nodes["S1"]
    assert dict(b.request().nodes) == {"S1": TwinNode("S1", "sensor", {"owner": "b"})}
    b.drop()
    assert a.request().same_content(Subgraph(1, nodes, frozenset(rels)))


def test_injection_shaped_ids_and_metadata_are_stored_literally(make_store):
    canary = make_store()
    nodes, rels = small_graph()
    canary.rebuild(nodes.values(), rels)
    store = make_store()
    hostile = [TwinNode(i, "sensor", HOSTILE_META) for i in HOSTILE_IDS]
    gw = TwinNode("GW `}) DETACH DELETE n //", "gateway", {"name": "MATCH (n) DETACH DELETE n"})
    links = [R(n.id, "CONNECTED_TO", gw.id) for n in hostile]
    store.rebuild([gw, *hostile], links, name="}) MATCH (n) DETACH DELETE n //")
    sub = store.request()
    assert dict(sub.nodes) == {n.id: n for n in [gw, *hostile]}
    assert sub.relations == set(links)
    for n in hostile:  # each id finds exactly itself and its gateway
        one = store.request(TwinRequirement(seeds=(n.id,), hops=1))
        assert set(one.nodes) == {n.id, gw.id} and one.nodes[n.id].metadata == HOSTILE_META
    store.commit(ChangeSet(delete_nodes=(HOSTILE_IDS[0],)), name="' OR 1=1 //")
    assert set(store.request().nodes) == {gw.id, *HOSTILE_IDS[1:]}
    assert store.request(version="}) MATCH (n) DETACH DELETE n //").same_content(sub)
    assert canary.request().same_content(Subgraph(1, nodes, frozenset(rels)))  # nothing else was touched


def test_random_update_sequences_match_a_plain_model(make_store):
    """Property: after any sequence of valid updates, every version reads back as a plain dict model says."""
    store = make_store()
    rng = np.random.default_rng(7)
    kind_of = {f"n{k}": ("service", "service", "gateway", "gateway", "gateway", "sensor", "sensor", "sensor")[k]
               for k in range(8)}  # a node keeps its kind; relations only where the schema allows them
    model_nodes: dict[str, TwinNode] = {}
    model_rels: set[Relation] = set()
    history = []
    for step in range(12):
        ups, dels, rel_up, rel_del = [], [], [], []
        ids = sorted(model_nodes)
        for _ in range(int(rng.integers(1, 4))):
            nid = f"n{int(rng.integers(0, 8))}"
            if nid in ids and rng.random() < 0.3 and nid not in [u.id for u in ups] and nid not in dels:
                dels.append(nid)
            elif nid not in dels and nid not in [u.id for u in ups]:
                ups.append(TwinNode(nid, kind_of[nid], {"x": int(rng.integers(0, 3))}))
        after = (set(ids) - set(dels)) | {u.id for u in ups}
        live = sorted(after)
        allowed = [R(h, t, o) for h in live for o in live for t in ("CONNECTED_TO", "SERVES_IN")
                   if h != o and (kind_of[h], t, kind_of[o]) in ALLOWED_RELATIONS]
        for _ in range(int(rng.integers(0, 3))):
            if allowed:
                r = allowed[int(rng.integers(0, len(allowed)))]
                if r not in rel_up:
                    rel_up.append(r)
        for r in sorted(model_rels):
            if r.head not in dels and r.tail not in dels and r not in rel_up and rng.random() < 0.2:
                rel_del.append(r)
        cs = ChangeSet(tuple(ups), tuple(dels), tuple(rel_up), tuple(rel_del))
        store.commit(cs)
        for d in dels:
            model_nodes.pop(d)
        model_rels = {r for r in model_rels if r.head not in dels and r.tail not in dels} - set(rel_del)
        model_nodes.update({u.id: u for u in ups})
        model_rels |= set(rel_up)
        history.append((dict(model_nodes), set(model_rels)))
    for v, (mn, mr) in enumerate(history, start=1):
        sub = store.request(version=v)
        assert dict(sub.nodes) == mn and sub.relations == mr, f"version {v}"


# ---------------------------------------------------------------------------
# networkx only: the journal
# ---------------------------------------------------------------------------


def test_journal_survives_a_restart(tmp_path):
    path = tmp_path / "twin.jsonl"
    nodes, rels = small_graph()
    with NetworkxStore("city", path=path) as s:
        s.rebuild(nodes.values(), rels, name="base")
        s.commit(ChangeSet(delete_nodes=("S2",)))
        before = [s.request(version=v) for v in (1, 2)]
    again = NetworkxStore("city", path=path)
    assert [v.number for v in again.versions()] == [1, 2]
    assert all(again.request(version=v).same_content(b) for v, b in zip((1, 2), before))
    assert again.commit(ChangeSet()).number == 3


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "twin.jsonl"
    nodes, rels = small_graph()
    s = NetworkxStore("city", path=path)
    s.rebuild(nodes.values(), rels)
    before = s.request()
    good = path.read_bytes()
    with open(path, "ab") as fh:  # a crash in the middle of appending version 2
        fh.write(b'{"op":"commit","version":{"number":2,"name":null,"par')
    again = NetworkxStore("city", path=path)
    assert [v.number for v in again.versions()] == [1] and again.request().same_content(before)
    assert path.read_bytes() == good  # the torn line is gone, so appends start on a clean line
    assert again.commit(ChangeSet(delete_nodes=("S1",))).number == 2
    assert "S1" not in NetworkxStore("city", path=path).request().nodes


def test_corrupt_or_foreign_journal_is_an_error(tmp_path):
    path = tmp_path / "twin.jsonl"
    nodes, rels = small_graph()
    s = NetworkxStore("city", path=path)
    s.rebuild(nodes.values(), rels)
    s.commit(ChangeSet(delete_nodes=("S1",)))
    with pytest.raises(TwinStoreError, match="holds twin 'city', not twin = 'other'"):
        NetworkxStore("other", path=path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", lines[2]]) + "\n")
    with pytest.raises(TwinStoreError, match="line 2 is not valid JSON"):
        NetworkxStore("city", path=path)


def test_failed_journal_write_rolls_back_memory_and_file(tmp_path):
    path = tmp_path / "twin.jsonl"
    nodes, rels = small_graph()
    s = FailingNetworkxStore("city", path=path)
    s.rebuild(nodes.values(), rels)
    size = path.stat().st_size
    s.fail_at = "journal"
    with pytest.raises(OSError, match="disk full"):
        s.commit(ChangeSet(delete_nodes=("S1",)))
    assert path.stat().st_size == size and "S1" in s.request().nodes and len(s.versions()) == 1


def test_compaction_keeps_every_requestable_version(tmp_path):
    path = tmp_path / "twin.jsonl"
    nodes, rels = small_graph()
    s = NetworkxStore("city", path=path, compact_every=2)  # compacts after the 2nd append
    s.rebuild(nodes.values(), rels, name="base")
    s.commit(ChangeSet(delete_nodes=("S1",)))
    s.commit(ChangeSet(upsert_nodes=(TwinNode("S9", "sensor"),)))
    records = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r.get("op") for r in records] == [None, "snapshot", "commit"]
    again = NetworkxStore("city", path=path)
    for v in (1, 2, 3):
        assert again.request(version=v).same_content(s.request(version=v))
    assert again.request(version="base").same_content(Subgraph(1, nodes, frozenset(rels)))


# ---------------------------------------------------------------------------
# Neo4j connection handling
# ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_a_clear_error_without_credentials():
    port = _closed_port()
    with pytest.raises(TwinStoreError, match=rf"server at 127.0.0.1:{port} is unreachable") as err:
        Neo4jStore(f"bolt://127.0.0.1:{port}", "neo4j", "s3cret-pw-do-not-print", connection_timeout_s=2.0)
    assert "s3cret-pw-do-not-print" not in str(err.value) and err.value.__cause__ is None


def test_missing_environment_is_a_clear_error():
    with pytest.raises(TwinStoreError, match="NEO4J_URI is not set"):
        Neo4jStore.from_env(environ={})
    with pytest.raises(TwinStoreError, match="NEO4J_PASSWORD is not set"):
        Neo4jStore.from_env(environ={"NEO4J_URI": "bolt://127.0.0.1:1"})
    with pytest.raises(TwinStoreError, match="NEO4J_URI: must be a URI"):
        Neo4jStore("localhost", "neo4j", "pw")


@pytest.mark.neo4j
def test_wrong_credentials_are_a_clear_error(neo4j_env):
    wrong = neo4j_env["password"] + "-wrong"
    with pytest.raises(TwinStoreError, match="rejected the credentials .*NEO4J_USER and NEO4J_PASSWORD") as err:
        Neo4jStore(neo4j_env["uri"], neo4j_env["user"], wrong)
    assert wrong not in str(err.value) and neo4j_env["password"] not in str(err.value)


@pytest.mark.neo4j
def test_neo4j_schema_is_idempotent_and_secrets_stay_out_of_repr(neo4j_env):
    env = {"NEO4J_URI": neo4j_env["uri"], "NEO4J_USER": neo4j_env["user"], "NEO4J_PASSWORD": neo4j_env["password"]}
    with open_store("neo4j", twin="schema-check", environ=env) as s:
        with s._session() as session:
            first = sorted(r["name"] for r in session.run("SHOW CONSTRAINTS YIELD name"))
            first_idx = sorted(r["name"] for r in session.run("SHOW INDEXES YIELD name"))
        assert neo4j_env["password"] not in repr(s) and "Neo4jStore(twin='schema-check'" in repr(s)
        assert not any(neo4j_env["password"] in str(v) for v in vars(s).values())
    with open_store("neo4j", twin="schema-check", environ=env) as s:  # second time: nothing new, no error
        with s._session() as session:
            assert sorted(r["name"] for r in session.run("SHOW CONSTRAINTS YIELD name")) == first
            assert sorted(r["name"] for r in session.run("SHOW INDEXES YIELD name")) == first_idx
    assert {"gentwin_entity_uid", "gentwin_version_uid", "gentwin_version_name"} <= set(first)


def test_open_store_networkx_and_bad_backend(tmp_path):
    s = open_store("networkx", twin="x", path=tmp_path / "x.jsonl")
    assert isinstance(s, NetworkxStore) and os.path.exists(tmp_path / "x.jsonl")
    with pytest.raises(SchemaError, match="backend = 'sqlite'"):
        open_store("sqlite")
    with pytest.raises(SchemaError, match="twin = 'a b'"):
        NetworkxStore("a b")
    with pytest.raises(SchemaError, match="keep_versions = 0"):
        NetworkxStore("a", keep_versions=0)


class _StagingFailsNeo4jStore(Neo4jStore):
    """Test double: a staged rebuild fails after ``fail_after`` of its record transactions."""

    fail_after: int | None = None

    def _tx_write(self, tx, plan, v, *, new_ids, end_states=True):
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise RuntimeError("injected failure while staging")
            self.fail_after -= 1
        return super()._tx_write(tx, plan, v, new_ids=new_ids, end_states=end_states)


def _twin_counts(store: Neo4jStore) -> dict:
    with store._session() as s:
        return dict(s.run(
            "CALL { MATCH (e:TwinEntity {twin: $t}) RETURN count(e) AS entities } "
            "CALL { MATCH (x:TwinState {twin: $t}) RETURN count(x) AS states } "
            "CALL { MATCH (:TwinEntity {twin: $t})-[r]->() WHERE type(r) <> 'HAS_STATE' RETURN count(r) AS rels } "
            "CALL { MATCH (m:TwinStaging {twin: $t}) RETURN count(m) AS staging } "
            "RETURN entities, states, rels, staging", t=store.twin).single())


@pytest.mark.neo4j
def test_neo4j_staged_rebuild_is_published_whole_or_not_at_all(neo4j_env):
    """A rebuild over ``stage_rows`` records is written in several transactions and published by the last."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s = _StagingFailsNeo4jStore(neo4j_env["uri"], neo4j_env["user"], neo4j_env["password"], twin=name,
                                stage_rows=4, keep_versions=2)
    ref = NetworkxStore("ref", keep_versions=2)
    try:
        nodes, rels = small_graph()
        first = s.rebuild(nodes.values(), rels, name="base")  # 2 x nodes + relations > 4: staged
        ref.rebuild(nodes.values(), rels, name="base")
        assert first.number == 1 and s.request().same_content(ref.request())
        clean = _twin_counts(s)
        assert clean["staging"] == 0 and clean["entities"] == clean["states"] == len(nodes)
        changed = [TwinNode(n.id, n.kind, {**n.metadata, "tag": "v2"}) for n in nodes.values() if n.id != "S3"]
        kept = [r for r in rels if "S3" not in (r.head, r.tail)]
        s.fail_after = 2  # two record transactions land, then the staging fails
        with pytest.raises(RuntimeError, match="injected failure while staging"):
            s.rebuild(changed, kept, name="v2")
        s.fail_after = None
        assert _twin_counts(s) == clean and [v.number for v in s.versions()] == [1]
        assert s.request().same_content(ref.request())
        # a client killed mid-staging: its marker and records stay until a store is opened on the twin
        s.fail_after = 1
        s._undo_staging = lambda: None  # the killed client cleans nothing up
        with pytest.raises(RuntimeError):
            s.rebuild(changed, kept)
        assert _twin_counts(s)["staging"] == 1 and s.request().same_content(ref.request())
        with Neo4jStore(neo4j_env["uri"], neo4j_env["user"], neo4j_env["password"], twin=name) as again:
            assert _twin_counts(again) == clean
        del s._undo_staging
        s.fail_after = None
        second = s.rebuild(changed, kept, name="v2")
        ref.rebuild(changed, kept, name="v2")
        assert second.number == 2 and s.request().same_content(ref.request())
        assert s.request(version="base").same_content(ref.request(version="base"))
        third = s.rebuild(changed, kept)  # keep_versions = 2: version 1 is pruned
        assert [v.number for v in s.versions()] == [2, third.number] == [2, 3]
        assert _twin_counts(s)["states"] == 2 * len(changed)  # v2's states ended at 3 and v3's current ones
    finally:
        s.drop()
        s.close()

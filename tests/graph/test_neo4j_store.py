"""How the Neo4j store writes a small update: one statement, one map parameter, one plan, whole or not at all.

The semantics every backend shares (versions, requests, errors, failures mid-write) are tested on both
stores in ``tests/test_graph.py``; these tests pin down what makes the Neo4j write fast and check that the
one-statement path keeps those semantics, against the networkx store as reference.
"""

from __future__ import annotations

import re
import uuid

import pytest

from gentwin.graph import ChangeSet, Neo4jStore, NetworkxStore, SchemaError, TwinNode
from gentwin.topology import Relation as R

pytestmark = pytest.mark.neo4j


def _graph() -> tuple[list[TwinNode], list[R]]:
    """City <- service <- two gateways <- three sensors (S1, S2 on GW1; S3 on GW2)."""
    nodes = [TwinNode("CITY", "city"), TwinNode("AQ", "service"), TwinNode("GW1", "gateway"),
             TwinNode("GW2", "gateway"), TwinNode("S1", "sensor", {"active": True, "rssi": -70.5}),
             TwinNode("S2", "sensor", {"active": True}), TwinNode("S3", "sensor", {"active": False})]
    rels = [R("AQ", "IN", "CITY"), R("GW1", "SERVES_IN", "AQ"), R("GW2", "SERVES_IN", "AQ"),
            R("GW1", "CONNECTED_TO", "GW2"), R("S1", "CONNECTED_TO", "GW1"), R("S2", "CONNECTED_TO", "GW1"),
            R("S3", "CONNECTED_TO", "GW2")]
    return nodes, rels


class _Recording(Neo4jStore):
    """Test double: records the statements (text and parameters) of each write transaction."""

    fail_after_statement = False

    def _write(self, work):
        self.statements: list[tuple[str, dict]] = []
        outer = self

        class Tx:
            def __init__(self, tx):
                self._tx = tx

            def run(self, query, **params):
                outer.statements.append((query, params))
                return self._tx.run(query, **params)

        return super()._write(lambda tx: work(Tx(tx)))

    def _tx_one_statement(self, tx, changes, parts):
        info = super()._tx_one_statement(tx, changes, parts)
        if self.fail_after_statement:
            raise RuntimeError("injected failure after the statement")
        return info


@pytest.fixture
def pair(neo4j_env):
    """(a fresh Neo4j twin that records its statements, the networkx reference), both holding _graph()."""
    s = _Recording(neo4j_env["uri"], neo4j_env["user"], neo4j_env["password"], twin=f"t-{uuid.uuid4().hex[:12]}")
    ref = NetworkxStore("ref")
    nodes, rels = _graph()
    for st in (s, ref):
        st.rebuild(nodes, rels, name="base")
    yield s, ref
    s.drop()
    s.close()


def _same(s: Neo4jStore, ref: NetworkxStore) -> bool:
    return ([(v.number, v.n_written, v.parts) for v in s.versions()]
            == [(v.number, v.n_written, v.parts) for v in ref.versions()]
            and all(s.request(version=v.number).same_content(ref.request(version=v.number)) for v in ref.versions()))


def test_a_small_update_is_one_statement_with_one_map_parameter(pair):
    s, ref = pair
    changes = [
        ChangeSet(upsert_nodes=(TwinNode("S4", "sensor"), TwinNode("S1", "sensor", {"active": False})),
                  delete_nodes=("S3",), upsert_relations=(R("S4", "CONNECTED_TO", "GW2"),),
                  delete_relations=(R("GW1", "CONNECTED_TO", "GW2"),)),
        ChangeSet(upsert_nodes=(TwinNode("S1", "sensor", {"active": False}),)),  # nothing differs: 0 records
        ChangeSet(delete_nodes=("GW2",)),  # ends GW2's state and both relations it still has
        ChangeSet(upsert_nodes=tuple(TwinNode(f"N{k}", "sensor", {"k": k}) for k in range(12)),
                  upsert_relations=tuple(R(f"N{k}", "CONNECTED_TO", "GW1") for k in range(12))),
    ]
    texts = set()
    for cs in changes:
        info, ref_info = s.commit(cs, parts=("H",)), ref.commit(cs, parts=("H",))
        assert (info.number, info.n_written) == (ref_info.number, ref_info.n_written)
        assert len(s.statements) == 1 and list(s.statements[0][1]) == ["d"]  # every list travels inside $d
        texts.add(s.statements[0][0])
    assert [ref.versions()[k].n_written for k in range(1, 5)] == [6, 0, 3, 24]  # hand-counted
    assert len(texts) == 1  # one text for 1 to 24 rows: the server plans it once
    assert _same(s, ref)


def test_a_failure_after_the_statement_writes_nothing(pair):
    s, ref = pair
    before = s.request()
    s.fail_after_statement = True
    with pytest.raises(RuntimeError, match="injected failure"):
        s.commit(ChangeSet(upsert_nodes=(TwinNode("S9", "sensor"),), delete_nodes=("S2",),
                           upsert_relations=(R("S9", "CONNECTED_TO", "GW1"),)))
    s.fail_after_statement = False
    assert [v.number for v in s.versions()] == [1] and s.request().same_content(before)
    assert s.commit(ChangeSet(upsert_nodes=(TwinNode("S9", "sensor"),))).number == 2  # the counter did not move


@pytest.mark.parametrize("bad, message", [
    (ChangeSet(delete_nodes=("NOPE",)), "node 'NOPE' is not in the latest version"),
    (ChangeSet(upsert_nodes=(TwinNode("S1", "gateway"),)), "kind = 'gateway', but the twin holds it as 'sensor'"),
    (ChangeSet(upsert_relations=(R("S1", "CONNECTED_TO", "GHOST"),)), "tail 'GHOST' is not a node"),
    (ChangeSet(delete_relations=(R("S1", "CONNECTED_TO", "GW2"),)), "is not in the latest version"),
    (ChangeSet(upsert_nodes=(TwinNode("S7", "sensor"),), upsert_relations=(R("S7", "IN", "CITY"),)),
     "IN links a service to a city"),
])
def test_bad_input_raises_as_the_reference_does_and_writes_nothing(pair, bad, message):
    s, ref = pair
    for st in (s, ref):
        with pytest.raises(SchemaError, match=message):
            st.commit(bad)
    assert _same(s, ref) and len(s.versions()) == 1


def test_a_change_the_server_reads_otherwise_takes_the_batched_path(pair):
    s, ref = pair
    # Python holds True == 1 (no new state); Cypher does not: the one statement is rolled back and the
    # batched path (lookup, version, records) writes what _plan says.
    cs = ChangeSet(upsert_nodes=(TwinNode("S1", "sensor", {"active": 1, "rssi": -70.5}), TwinNode("S5", "sensor")))
    info, ref_info = s.commit(cs), ref.commit(cs)
    assert (info.number, info.n_written) == (ref_info.number, ref_info.n_written) == (2, 1)
    assert len(s.statements) > 1 and _same(s, ref)


_SCANS = {"AllNodesScan", "NodeByLabelScan", "NodeIndexScan", "DirectedAllRelationshipsScan",
          "UndirectedAllRelationshipsScan", "DirectedRelationshipTypeScan", "UndirectedRelationshipTypeScan"}


def test_every_statement_of_an_update_finds_its_entities_by_a_seek(pair):
    # While the database is small (or its uid index not yet sampled) every estimate is near 0 and the planner
    # may scan the uid index instead of seeking in it, bare USING INDEX hints included; with replan=skip the
    # plan is kept when the twin has grown (60-220 ms a write at 30,000 nodes).  So every entity a statement
    # finds by uid names its seek (the text check), and no plan made now scans (the EXPLAIN check).
    s, _ = pair
    s.commit(ChangeSet(upsert_nodes=(TwinNode("S8", "sensor"),), upsert_relations=(R("S8", "CONNECTED_TO", "GW1"),)))
    statements = list(s.statements)
    s.commit(ChangeSet(upsert_nodes=(TwinNode("S9", "sensor"),), delete_nodes=("S3",),
                       upsert_relations=(R("S9", "CONNECTED_TO", "GW1"),),
                       delete_relations=(R("GW1", "CONNECTED_TO", "GW2"),)), name="batched")
    statements += s.statements
    assert len(statements) >= 6  # the one statement; the lookup, name check, version and records of the other

    def operators(plan) -> set[str]:
        return {plan["operatorType"].split("@")[0]}.union(*(operators(c) for c in plan.get("children", [])))

    with s._session() as session:
        for query, params in statements:
            for var in re.findall(r"(?<!MERGE )\((\w*):TwinEntity \{uid: ", query):
                assert var and f"USING INDEX SEEK {var}:TwinEntity(uid)" in query, (var, query)
            plan = session.run("EXPLAIN " + query.removeprefix("CYPHER replan=skip "), **params).consume().plan
            found = operators(plan)
            assert "NodeUniqueIndexSeek" in found or "NodeUniqueIndexSeek(Locking)" in found or "Merge" in found, query
            assert not found & _SCANS, (found & _SCANS, query)

"""gentwin.topology: the generated smart-city data set."""

from __future__ import annotations

import pytest

from gentwin.config import TopologyConfig, resolve
from gentwin.topology import (
    DataSet, Node, Relation, Topology, TopologyError, generate_dataset, generate_topology, _split_counts,
)


def test_paper_shape() -> None:
    c = generate_dataset(resolve("paper").topology).counts()
    assert (c["sensors"], c["gateways"], c["device nodes"], c["unique relations"]) == (250, 50, 300, 580)
    assert (c["instances"], c["train instances"], c["validation instances"], c["test instances"]) == (1000, 700, 150, 150)


def test_relation_count_by_hand() -> None:
    # 2 services, 5 sensors, 2 gateways, 1 fog link:
    # CONNECTED_TO sensor->gateway 5 + SERVES_IN sensor 5 + SERVES_IN gateway 2 + fog link 1 = 13
    cfg = TopologyConfig(n_services=2, n_sensors=5, n_gateways=2, n_gateway_links=0, n_instances=7)
    with pytest.raises(TopologyError, match="n_gateway_links = 1: at most 0 links"):
        # one gateway per service: no pair of gateways shares a service
        generate_topology(TopologyConfig(n_services=2, n_sensors=5, n_gateways=2, n_gateway_links=1, n_instances=7))
    assert len(generate_topology(cfg).device_relations()) == 2 * 5 + 2
    cfg = TopologyConfig(n_services=1, n_sensors=5, n_gateways=2, n_gateway_links=1, n_instances=7)
    topo = generate_topology(cfg)
    assert len(topo.device_relations()) == 13
    # the Service -IN-> SmartCity relation is in the graph but not among the device relations
    assert len(topo.relations) == 14


def test_same_seed_same_data_other_seed_other_data() -> None:
    cfg = resolve("quick").topology
    a, b = generate_dataset(cfg), generate_dataset(cfg)
    assert a.topology.nodes == b.topology.nodes and a.topology.relations == b.topology.relations
    assert a.instances == b.instances
    c = generate_dataset(resolve("quick", data_seed=1).topology)
    assert c.instances != a.instances or c.topology.relations != a.topology.relations


def test_structure_invariants() -> None:
    topo = generate_topology(resolve("paper").topology)
    for s in topo.sensors():
        links = [r for r in topo.relations_of(s.id) if r.type == "CONNECTED_TO"]
        assert len(links) == 1 and links[0].tail == s.gateway
        assert topo.nodes[s.gateway].service == s.service
    for r in topo.device_relations():
        if r.type == "CONNECTED_TO" and topo.nodes[r.head].kind == "gateway":
            assert topo.nodes[r.head].service == topo.nodes[r.tail].service and r.head < r.tail
    degrees = topo.gateway_degrees()
    assert sum(degrees.values()) == 250 and min(degrees.values()) >= 1
    assert len(set(degrees.values())) > 1  # uneven d_i, so the pools have something to rank


def test_fewer_sensors_than_gateways_leaves_some_gateways_idle() -> None:
    topo = generate_topology(resolve("paper", n_sensors=30).topology)
    degrees = topo.gateway_degrees()
    assert sum(degrees.values()) == 30 and sum(1 for d in degrees.values() if d == 0) == 20


def test_split_has_no_leakage_and_exact_sizes() -> None:
    ds = generate_dataset(resolve("paper").topology)
    split_of: dict[str, set[str]] = {}
    for inst in ds.instances:
        split_of.setdefault(inst.node_id, set()).add(inst.split)
    assert all(len(s) == 1 for s in split_of.values())
    assert set(split_of) == {n.id for n in ds.topology.devices()}  # every device appears in the log
    for name in ("train", "validation", "test"):
        kinds = {ds.topology.nodes[i.node_id].kind for i in ds.split(name)}
        assert kinds == {"sensor", "gateway"}
    assert [i.timestamp for i in ds.instances] == sorted(i.timestamp for i in ds.instances)


def test_split_counts_sum_to_total() -> None:
    assert _split_counts(1000, (0.7, 0.15, 0.15)) == [700, 150, 150]
    assert _split_counts(7, (0.7, 0.15, 0.15)) == [5, 1, 1]
    assert sum(_split_counts(61, (0.7, 0.15, 0.15))) == 61


def test_dangling_and_duplicate_relations_and_bad_kinds_are_rejected() -> None:
    nodes = {"G": Node("G", "gateway", service="AQ"), "S": Node("S", "sensor", service="AQ", gateway="G")}
    with pytest.raises(TopologyError, match="tail 'X' is not a known node"):
        Topology(nodes=dict(nodes), relations=[Relation("S", "CONNECTED_TO", "X")])
    with pytest.raises(TopologyError, match="appears twice"):
        Topology(nodes=dict(nodes), relations=[Relation("S", "CONNECTED_TO", "G")] * 2)
    with pytest.raises(TopologyError, match="kind = 'router'"):
        Node("R", "router")
    with pytest.raises(TopologyError, match="type = 'LIKES'"):
        Relation("S", "LIKES", "G")
    with pytest.raises(TopologyError, match="gateway = 'Z' is not a known node"):
        Topology(nodes={"S": Node("S", "sensor", gateway="Z")}, relations=[])


def test_unknown_split_name() -> None:
    ds = DataSet(topology=Topology(nodes={}, relations=[]))
    with pytest.raises(ValueError, match="split = 'dev'"):
        ds.split("dev")

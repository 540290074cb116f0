"""gentwin.topology: the seeded smart-city generator, its invariants and its errors."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gentwin.config import TopologyConfig
from gentwin.config import split_counts
from gentwin.topology import (
    Instance,
    Node,
    Relation,
    Topology,
    TopologyError,
    generate_dataset,
    generate_instances,
    generate_topology,
    DataSet,
    failover_least_loaded,
    failover_random,
    gateway_degrees,
)


@pytest.fixture(scope="module")
def paper_ds():
    return generate_dataset(TopologyConfig())


def _small(**kw) -> TopologyConfig:
    base = dict(n_services=2, n_gateways=4, n_sensors=7, n_gateway_links=2, n_instances=30)
    base.update(kw)
    return TopologyConfig(**base)


# ---------------------------------------------------------------------------
# Counts
# ---------------------------------------------------------------------------


def test_paper_defaults_give_the_papers_data_set_shape(paper_ds):
    c = paper_ds.counts()
    assert (c["sensors"], c["gateways"], c["device nodes"]) == (250, 50, 300)
    assert c["unique relations"] == 580
    assert c["instances"] == 1000
    assert (c["train instances"], c["validation instances"], c["test instances"]) == (700, 150, 150)
    assert c["services"] == 3


def test_580_is_two_per_sensor_one_per_gateway_and_30_fog_links(paper_ds):
    topo = paper_ds.topology
    kinds = {nid: n.kind for nid, n in topo.nodes.items()}
    by_type = Counter((r.type, kinds[r.head], kinds[r.tail]) for r in topo.device_relations())
    assert by_type == {
        ("CONNECTED_TO", "sensor", "gateway"): 250,
        ("SERVES_IN", "sensor", "service"): 250,
        ("SERVES_IN", "gateway", "service"): 50,
        ("CONNECTED_TO", "gateway", "gateway"): 30,
    }
    # Service -IN-> city relations exist in the graph but are not relations of S or Gw
    assert sum(1 for r in topo.relations if r.type == "IN") == 3
    assert len(topo.relations) == 583


def test_one_service_five_sensors_two_gateways_one_link():
    topo = generate_topology(
        TopologyConfig(n_services=1, n_sensors=5, n_gateways=2, n_gateway_links=1, n_instances=7)
    )
    c = topo.counts()
    assert (c["sensors"], c["gateways"], c["services"], c["device nodes"]) == (5, 2, 1, 7)
    assert c["unique relations"] == 2 * 5 + 2 + 1
    assert len(topo.nodes) == 5 + 2 + 1 + 1  # plus the service and the city


def test_one_gateway_per_service_leaves_no_room_for_fog_links():
    # 2 services, 5 sensors, 2 gateways: each service has a single gateway, so no pair shares a service
    cfg = TopologyConfig(n_services=2, n_sensors=5, n_gateways=2, n_gateway_links=0, n_instances=7)
    assert generate_topology(cfg).counts()["unique relations"] == 2 * 5 + 2
    with pytest.raises(TopologyError, match="n_gateway_links = 1: at most 0 links"):
        generate_topology(dataclasses.replace(cfg, n_gateway_links=1))


def test_two_services_share_sensors_and_gateways_evenly():
    topo = generate_topology(_small())
    per_service = Counter((n.service, n.kind) for n in topo.devices())
    # 7 sensors over 2 services: 4 + 3 (larger first); 4 gateways: 2 + 2
    assert per_service == {("AQ", "sensor"): 4, ("TR", "sensor"): 3, ("AQ", "gateway"): 2, ("TR", "gateway"): 2}
    assert topo.counts()["unique relations"] == 2 * 7 + 4 + 2
    assert {s.id for s in topo.services()} == {"AQ", "TR"}


def test_fewer_sensors_than_gateways_leaves_gateways_without_sensors():
    # 30 sensors, 50 gateways: per service 10/10/10 sensors over 17/17/16 gateways
    topo = generate_topology(TopologyConfig(n_sensors=30))
    degrees = topo.gateway_degrees()
    assert sum(degrees.values()) == 30
    assert sum(1 for d in degrees.values() if d == 0) == 50 - 30
    assert max(degrees.values()) == 1


def test_every_gateway_serves_a_sensor_when_sensors_suffice(paper_ds):
    degrees = paper_ds.topology.gateway_degrees()
    assert len(degrees) == 50
    assert min(degrees.values()) >= 1
    assert sum(degrees.values()) == 250
    assert len(set(degrees.values())) > 1  # uneven d_i: something for the pools to rank


@settings(max_examples=30, deadline=None)
@given(
    n_services=st.integers(1, 3),
    extra_gw=st.integers(0, 6),
    n_sensors=st.integers(1, 40),
    links_fraction=st.floats(0, 1),
    seed=st.integers(0, 10_000),
)
def test_relation_count_formula_holds_for_any_config(n_services, extra_gw, n_sensors, links_fraction, seed):
    n_gateways = n_services + extra_gw
    per_service = [n_gateways // n_services + (1 if k < n_gateways % n_services else 0) for k in range(n_services)]
    max_links = sum(g * (g - 1) // 2 for g in per_service)
    links = int(links_fraction * max_links)
    cfg = TopologyConfig(
        n_services=n_services, n_gateways=n_gateways, n_sensors=n_sensors, n_gateway_links=links,
        n_instances=n_sensors + n_gateways, data_seed=seed,
    )
    topo = generate_topology(cfg)
    assert topo.counts()["unique relations"] == 2 * n_sensors + n_gateways + links
    assert len(topo.devices()) == n_sensors + n_gateways


# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------


def test_same_seed_gives_the_same_data_set():
    a, b = generate_dataset(_small(data_seed=3)), generate_dataset(_small(data_seed=3))
    assert a.topology.nodes == b.topology.nodes
    assert a.topology.relations == b.topology.relations
    assert a.instances == b.instances


def test_different_seed_gives_a_different_data_set():
    a, b = generate_dataset(TopologyConfig(data_seed=0)), generate_dataset(TopologyConfig(data_seed=1))
    assert a.counts() == b.counts()  # same shape ...
    gw_a = {s.id: s.gateway for s in a.topology.sensors()}
    gw_b = {s.id: s.gateway for s in b.topology.sensors()}
    assert gw_a != gw_b  # ... different wiring
    assert [i.node_id for i in a.instances] != [i.node_id for i in b.instances]


# ---------------------------------------------------------------------------
# Split without leakage
# ---------------------------------------------------------------------------


def _split_nodes(ds):
    out: dict[str, set[str]] = {"train": set(), "validation": set(), "test": set()}
    for inst in ds.instances:
        out[inst.split].add(inst.node_id)
    return out


def test_split_has_no_node_in_two_parts(paper_ds):
    parts = _split_nodes(paper_ds)
    assert not parts["train"] & parts["validation"]
    assert not parts["train"] & parts["test"]
    assert not parts["validation"] & parts["test"]
    # every device node is observed somewhere
    assert set().union(*parts.values()) == {n.id for n in paper_ds.topology.devices()}


def test_split_has_sensors_and_gateways_in_every_part(paper_ds):
    kinds = {nid: n.kind for nid, n in paper_ds.topology.nodes.items()}
    for name, ids in _split_nodes(paper_ds).items():
        assert {kinds[i] for i in ids} == {"sensor", "gateway"}, name


def test_split_instance_counts_are_exact_for_other_sizes():
    ds = generate_dataset(_small(n_instances=50))
    # largest remainder of 50 x (0.7, 0.15, 0.15) = 35, 7.5, 7.5 -> 35, 8, 7
    assert [len(ds.split(name)) for name in ("train", "validation", "test")] == [35, 8, 7]
    assert sorted(i.index for i in ds.instances) == list(range(50))


@pytest.mark.parametrize(
    "total, expected", [(1000, [700, 150, 150]), (50, [35, 8, 7]), (7, [5, 1, 1]), (61, [43, 9, 9]), (3, [2, 1, 0])]
)
def test_split_counts_by_largest_remainder(total, expected):
    # 61 x (0.7, 0.15, 0.15) = 42.7, 9.15, 9.15: floors 42, 9, 9, the one left goes to the largest remainder (0.7);
    # 3 x (0.7, 0.15, 0.15) = 2.1, 0.45, 0.45: floors 2, 0, 0, a tie of remainders goes to the earlier part
    assert split_counts(total, (0.7, 0.15, 0.15)) == expected
    assert sum(expected) == total


def test_split_name_is_checked(paper_ds):
    with pytest.raises(ValueError, match="split = 'dev'"):
        paper_ds.split("dev")
    with pytest.raises(ValueError, match="split = 'dev'"):
        DataSet(topology=Topology(nodes={}, relations=[])).split("dev")


def test_a_split_without_nodes_is_an_error():
    # 2 sensors and 1 gateway cannot fill three parts: the validation part gets no node
    cfg = TopologyConfig(n_services=1, n_gateways=1, n_sensors=2, n_gateway_links=0, n_instances=10)
    with pytest.raises(TopologyError, match="validation split gets no node"):
        generate_dataset(cfg)


def test_instances_are_time_stamped_and_carry_presence():
    cfg = _small(instance_period_s=2.0, p_inactive=0.0)
    ds = generate_dataset(cfg)
    assert [i.timestamp for i in ds.instances[:3]] == [0.0, 2.0, 4.0]
    assert [i.timestamp for i in ds.instances] == sorted(i.timestamp for i in ds.instances)
    assert all(i.present for i in ds.instances)
    some_off = generate_dataset(_small(p_inactive=0.5, n_instances=200))
    assert 0 < sum(not i.present for i in some_off.instances) < 200


# ---------------------------------------------------------------------------
# Invariants of the generated graph
# ---------------------------------------------------------------------------


def test_each_sensor_has_exactly_one_gateway_of_its_own_service(paper_ds):
    topo = paper_ds.topology
    for s in topo.sensors():
        links = [r for r in topo.relations_of(s.id) if r.type == "CONNECTED_TO"]
        assert len(links) == 1, s.id
        gw = topo.nodes[links[0].tail]
        assert gw.kind == "gateway" and gw.id == s.gateway and gw.service == s.service
        assert [r.tail for r in topo.relations_of(s.id) if r.type == "SERVES_IN"] == [s.service]


def test_gateway_links_stay_within_a_service_and_are_stored_once(paper_ds):
    topo = paper_ds.topology
    links = [r for r in topo.relations if r.type == "CONNECTED_TO" and topo.nodes[r.head].kind == "gateway"]
    assert len(links) == 30
    for r in links:
        assert topo.nodes[r.tail].kind == "gateway"
        assert topo.nodes[r.head].service == topo.nodes[r.tail].service
        assert r.head < r.tail
    assert len({frozenset((r.head, r.tail)) for r in links}) == len(links)


def test_no_dangling_references_and_no_duplicates(paper_ds):
    topo = paper_ds.topology
    assert all(r.head in topo.nodes and r.tail in topo.nodes for r in topo.relations)
    assert len(set(topo.relations)) == len(topo.relations)
    assert all(i.node_id in topo.nodes for i in paper_ds.instances)


def test_sensor_metadata_follows_its_service(paper_ds):
    for s in paper_ds.topology.sensors():
        assert s.category and s.sdm_type and s.controlled_property
        assert s.id.startswith(s.service + "-S")
    sdm = {s.service: s.sdm_type for s in paper_ds.topology.sensors()}
    assert sdm == {"AQ": "AirQualityObserved", "TR": "TrafficFlowObserved", "WM": "WasteContainer"}


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def _tiny_nodes() -> dict[str, Node]:
    return {
        "CITY": Node("CITY", "city"),
        "AQ": Node("AQ", "service"),
        "GW": Node("GW", "gateway", service="AQ"),
        "S1": Node("S1", "sensor", service="AQ", gateway="GW"),
    }


def test_dangling_relation_is_an_error_naming_the_end():
    with pytest.raises(TopologyError, match=r"tail 'GW9' is not a known node"):
        Topology(_tiny_nodes(), [Relation("S1", "CONNECTED_TO", "GW9")])
    with pytest.raises(TopologyError, match=r"head 'S7' is not a known node"):
        Topology(_tiny_nodes(), [Relation("S7", "CONNECTED_TO", "GW")])


def test_duplicate_relation_is_an_error():
    rel = Relation("S1", "CONNECTED_TO", "GW")
    with pytest.raises(TopologyError, match=r"\(S1, CONNECTED_TO, GW\) appears twice"):
        Topology(_tiny_nodes(), [rel, Relation("S1", "CONNECTED_TO", "GW")])


def test_bad_node_kind_and_relation_type_are_errors():
    with pytest.raises(TopologyError, match="kind = 'robot'"):
        Node("R1", "robot")
    with pytest.raises(TopologyError, match="type = 'LIKES'"):
        Relation("S1", "LIKES", "GW")


def test_sensor_pointing_at_a_non_gateway_is_an_error():
    nodes = _tiny_nodes()
    nodes["S1"] = Node("S1", "sensor", service="AQ", gateway="AQ")
    with pytest.raises(TopologyError, match="sensor 'S1': gateway = 'AQ' is not a gateway"):
        Topology(nodes, [])


def test_sensor_with_an_unknown_gateway_is_an_error():
    with pytest.raises(TopologyError, match="sensor 'S': gateway = 'Z' is not a known node"):
        Topology(nodes={"S": Node("S", "sensor", gateway="Z")}, relations=[])


def test_too_many_gateway_links_is_an_error_naming_the_field():
    # one service with 3 gateways has 3 possible pairs
    cfg = TopologyConfig(n_services=1, n_gateways=3, n_sensors=5, n_gateway_links=4, n_instances=8)
    with pytest.raises(TopologyError, match=r"n_gateway_links = 4: at most 3"):
        generate_topology(cfg)
    assert generate_topology(TopologyConfig(n_services=1, n_gateways=3, n_sensors=5, n_gateway_links=3,
                                            n_instances=8)).counts()["unique relations"] == 10 + 3 + 3


def test_instances_only_from_their_topology():
    ds = generate_dataset(_small())
    again = generate_instances(ds.topology, _small())
    assert again == ds.instances
    assert isinstance(again[0], Instance)


# ---------------------------------------------------------------------------
# d_i and gateway fail-over
# ---------------------------------------------------------------------------


def test_gateway_degrees_count_sensors_per_gateway_by_hand():
    assert gateway_degrees([1, 1, 3], 5).tolist() == [0, 2, 0, 1, 0]
    assert gateway_degrees([], 2).tolist() == [0, 0]
    with pytest.raises(TopologyError, match="assignment"):
        gateway_degrees([0, 2], 2)


def test_topology_gateway_degrees_agree_with_sensor_lists(paper_ds):
    topo = paper_ds.topology
    deg = topo.gateway_degrees()
    by_hand = Counter(n.gateway for n in topo.sensors())
    assert deg == {g.id: by_hand.get(g.id, 0) for g in topo.gateways()}
    assert sum(deg.values()) == 250
    g = topo.gateways()[0].id
    assert topo.sensor_count(g) == by_hand[g]
    assert topo.sensor_count(topo.sensors()[0].id) == 0


def test_least_loaded_fail_over_picks_fewest_sensors_first_on_ties():
    assert failover_least_loaded([7, 3, 5], [2, 0, 1]) == 3
    assert failover_least_loaded(["A", "B", "C"], [1, 1, 1]) == "A"
    with pytest.raises(TopologyError, match="candidates"):
        failover_least_loaded([], [])
    with pytest.raises(TopologyError, match="candidates"):
        failover_least_loaded(["A", "B"], [1])


def test_random_fail_over_draws_once_per_sensor_like_the_whatif_loop():
    # the what-if scenario's original loop: one rng.integers(0, len(targets)) per sensor, in order
    sensors, targets = [f"S{k}" for k in range(40)], ["GW1", "GW2", "GW3"]
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    picks = failover_random(sensors, targets, rng_a)
    expected = []
    for _ in sensors:
        expected.append(targets[int(rng_b.integers(0, len(targets)))])
    assert picks == expected
    assert rng_a.random() == rng_b.random()  # no extra draw
    assert set(picks) == set(targets)  # 40 uniform draws over 3 reach every gateway (fails with p < 1e-6)
    assert failover_random([], targets, rng_a) == []
    with pytest.raises(TopologyError, match="candidates"):
        failover_random(sensors, [], rng_a)


def test_node_properties_take_part_in_equality_not_in_the_hash():
    kept = {"batteryLevel": 0.75, "serialNumber": "A-77"}
    a = Node("S1", "sensor", gateway="G", properties=kept)
    plain = Node("S1", "sensor", gateway="G")
    assert a != plain and a == Node("S1", "sensor", gateway="G", properties=dict(kept))
    assert len({a, plain}) == 2 and hash(a) == hash(plain)  # hashable although a dict is not
    assert plain.properties is None  # the generator's nodes carry none, so its topologies compare as before
    topo = Topology({"G": Node("G", "gateway"), "S1": a}, [Relation("S1", "CONNECTED_TO", "G")])
    assert topo.to_networkx().nodes["S1"]["properties"] == kept
    assert all(n.properties is None for n in generate_topology(TopologyConfig()).nodes.values())

"""Tests for gentwin.ingest: NGSI-LD entities and sensor logs into one relational form."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gentwin.ingest as ingest
from gentwin.config import TopologyConfig, resolve
from gentwin.ingest import (
    FORMS,
    IngestError,
    book_dataset,
    format_log,
    parse_log,
    read_entities,
    read_graph,
    read_log,
    to_entities,
    write_entities,
    write_log,
)
from gentwin.topology import DataSet, Instance, Node, Relation, Topology, TopologyError, generate_dataset

DATA = Path(__file__).parent / "data"
NORMALIZED = DATA / "city_normalized.json"
KEYVALUES = DATA / "city_keyvalues.json"
LOG = DATA / "city.log"

# What the hand-written example files say, worked out by hand from them.
EXPECTED_NODES = {
    "TOWN": Node("TOWN", "city", name="example town"),
    "AQ": Node("AQ", "service", name="air quality"),
    "WM": Node("WM", "service", name="waste management"),
    "AQ-GW01": Node("AQ-GW01", "gateway", service="AQ", name="roof gateway", latitude=41.39, longitude=2.17),
    "AQ-GW02": Node("AQ-GW02", "gateway", service="AQ"),
    "WM-GW01": Node("WM-GW01", "gateway", service="WM"),
    "AQ-S001": Node(
        "AQ-S001", "sensor", service="AQ", gateway="AQ-GW01", category="PM2.5 sensor",
        sdm_type="AirQualityObserved", controlled_property="pm25", latitude=-12.25, longitude=-3.5,
        name="PM2.5 sensor", properties={"batteryLevel": 0.75, "serialNumber": "A-77"},  # kept SDM attributes
    ),
    "AQ-S002": Node("AQ-S002", "sensor", service="AQ", gateway="AQ-GW02", controlled_property="no2"),
    "WM-S001": Node("WM-S001", "sensor", service="WM", gateway="WM-GW01"),
    "WM-S002": Node("WM-S002", "sensor", service="WM", gateway="WM-GW01", name="fill-level sensor"),
}
EXPECTED_RELATIONS = [  # in reading order: service -> city; each device's uplink and service, by node; gateway links
    Relation("AQ", "IN", "TOWN"),
    Relation("WM", "IN", "TOWN"),
    Relation("AQ-GW01", "SERVES_IN", "AQ"),
    Relation("AQ-GW02", "SERVES_IN", "AQ"),
    Relation("WM-GW01", "SERVES_IN", "WM"),
    Relation("AQ-S001", "CONNECTED_TO", "AQ-GW01"),
    Relation("AQ-S001", "SERVES_IN", "AQ"),
    Relation("AQ-S002", "CONNECTED_TO", "AQ-GW02"),
    Relation("AQ-S002", "SERVES_IN", "AQ"),
    Relation("WM-S001", "CONNECTED_TO", "WM-GW01"),  # stated by WM-GW01's controlledAsset and WM-S001's refGateway
    Relation("WM-S001", "SERVES_IN", "WM"),
    Relation("WM-S002", "CONNECTED_TO", "WM-GW01"),
    Relation("WM-S002", "SERVES_IN", "WM"),
    Relation("AQ-GW01", "CONNECTED_TO", "AQ-GW02"),
]
EXPECTED_LOG = [
    Instance(0, 0.0, "AQ-S001", True, "train"),
    Instance(1, 2.0, "AQ-GW01", True, "train"),
    Instance(2, 4.5, "WM-S002", False, "validation"),
    Instance(3, 6.0, "AQ-S002", True, "test"),
    Instance(4, 10.0, "AQ-S001", False, "train"),
]


def assert_identical_dataset(a: DataSet, b: DataSet) -> None:
    """A generated data set reads back identical: same nodes, same relation list (order included), same log."""
    assert a.topology == b.topology and a.topology.relations == b.topology.relations
    assert a.instances == b.instances


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_round_trip_default_dataset(tmp_path, form):
    ds = generate_dataset()
    write_entities(ds.topology, tmp_path / "entities.json", form=form)
    write_log(ds.instances, tmp_path / "log.txt", ds.topology)
    topology = read_entities(tmp_path / "entities.json")
    back = DataSet(topology, read_log(tmp_path / "log.txt", topology))
    assert_identical_dataset(ds, back)
    c = back.counts()
    assert (c["device nodes"], c["unique relations"], c["instances"]) == (300, 580, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entities.json", "log.txt"]  # no temporary file left


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n_services", [2, 3])
def test_round_trip_quick_dataset(tmp_path, form, n_services):
    ds = generate_dataset(resolve("quick", n_services=n_services).topology)
    write_entities(ds.topology, tmp_path / "e.json", form=form)
    write_log(ds.instances, tmp_path / "log.txt", topology=ds.topology)
    back = DataSet(read_entities(tmp_path / "e.json"), read_log(tmp_path / "log.txt", ds.topology))
    assert_identical_dataset(ds, back)
    # reading with the form forced gives the same as detecting it
    assert read_entities(tmp_path / "e.json", form=form).nodes == ds.topology.nodes


@settings(max_examples=12, deadline=None)
@given(
    n_services=st.integers(1, 3),
    n_gateways=st.integers(6, 10),  # >= 2 per service, so one fog link always fits
    n_sensors=st.integers(7, 20),  # enough devices that every split gets one
    data_seed=st.integers(0, 10_000),
    form=st.sampled_from(FORMS),
)
def test_round_trip_any_small_topology(n_services, n_gateways, n_sensors, data_seed, form):
    cfg = TopologyConfig(
        n_services=n_services, n_gateways=n_gateways, n_sensors=n_sensors, n_gateway_links=1,
        n_instances=2 * (n_gateways + n_sensors), data_seed=data_seed,
    )
    ds = generate_dataset(cfg)
    back = DataSet(read_entities(to_entities(ds.topology, form)), parse_log(format_log(ds.instances), ds.topology))
    assert_identical_dataset(ds, back)


def test_exported_entities_have_the_ngsi_ld_shapes(tmp_path):
    ds = generate_dataset(resolve("quick").topology)
    sensor = ds.topology.sensors()[0]
    write_entities(ds.topology, tmp_path / "n.json", form="normalized")
    write_entities(ds.topology, tmp_path / "k.json", form="keyValues")
    strict = dict(parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    norm = {e["id"]: e for e in json.loads((tmp_path / "n.json").read_text(), **strict)}
    kv = {e["id"]: e for e in json.loads((tmp_path / "k.json").read_text(), **strict)}
    urn = f"urn:ngsi-ld:Device:{sensor.id}"
    n, k = norm[urn], kv[urn]
    assert n["type"] == k["type"] == "Device"
    assert n["deviceCategory"] == {"type": "Property", "value": ["sensor"]}
    assert k["deviceCategory"] == ["sensor"]
    assert n["controlledProperty"] == {"type": "Property", "value": [sensor.controlled_property]}
    point = {"type": "Point", "coordinates": [sensor.longitude, sensor.latitude]}  # GeoJSON: lon first
    assert n["location"] == {"type": "GeoProperty", "value": point} and k["location"] == point
    assert n["refGateway"] == {"type": "Relationship", "object": f"urn:ngsi-ld:Device:{sensor.gateway}"}
    assert k["refService"] == f"urn:ngsi-ld:SmartCityService:{sensor.service}"
    assert kv["urn:ngsi-ld:SmartCityService:AQ"]["refSmartCity"] == "urn:ngsi-ld:SmartCity:CITY"
    assert kv["urn:ngsi-ld:SmartCity:CITY"]["type"] == "SmartCity"
    # a gateway with several fog links lists them all under one refGateway
    linked = [g for g in ds.topology.gateways() if len([r for r in ds.topology.relations_of(g.id)
                                                         if r.type == "CONNECTED_TO"]) > 1]
    for g in linked:
        assert isinstance(norm[f"urn:ngsi-ld:Device:{g.id}"]["refGateway"]["object"], list)


# ---------------------------------------------------------------------------
# Hand-written examples
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [NORMALIZED, KEYVALUES], ids=["normalized", "keyValues"])
def test_hand_written_example_parses_to_the_expected_graph(path):
    topo = read_entities(path)
    assert topo.nodes == EXPECTED_NODES
    assert list(topo.nodes) == list(EXPECTED_NODES)
    assert topo.relations == EXPECTED_RELATIONS
    assert topo.gateway_degrees() == {"AQ-GW01": 1, "AQ-GW02": 1, "WM-GW01": 2}


def test_entities_can_come_from_several_files(tmp_path):
    entities = json.loads(KEYVALUES.read_text())
    (tmp_path / "city.json").write_text(json.dumps(entities[:3]))
    (tmp_path / "devices.json").write_text(json.dumps(entities[3:]))
    topo = read_entities([tmp_path / "city.json", tmp_path / "devices.json"])
    assert topo.nodes == EXPECTED_NODES and topo.relations == EXPECTED_RELATIONS
    with pytest.raises(IngestError, match="dangling"):
        read_entities(tmp_path / "devices.json")  # the services live in the other file


def test_hand_written_log_parses_to_the_expected_instances():
    assert read_log(LOG, read_entities(KEYVALUES)) == EXPECTED_LOG


# ---------------------------------------------------------------------------
# Malformed entities: each message names the file, the entity and the field
# ---------------------------------------------------------------------------


def _by_id(entities, local):
    return next(e for e in entities if e["id"].endswith(":" + local))


def _set(local, name, value):
    def mutate(ents):
        _by_id(ents, local)[name] = value
    return mutate


def _delete(local, name):
    def mutate(ents):
        del _by_id(ents, local)[name]
    return mutate


def _duplicate(local):
    def mutate(ents):
        ents.append(copy.deepcopy(_by_id(ents, local)))
    return mutate


def _append(entity):
    def mutate(ents):
        ents.append(entity)
    return mutate


S1 = "urn:ngsi-ld:Device:AQ-S001"
REL = {"type": "Relationship", "object": "urn:ngsi-ld:Device:AQ-GW01"}
ENTITY_CASES = {
    # name: (base file, mutation, entity named, field named, words in the problem)
    "missing id": (KEYVALUES, _delete("AQ-S001", "id"), "entity #7", "id", "missing"),
    "missing type": (KEYVALUES, _delete("AQ-S001", "type"), f"entity #7 '{S1}'", "type", "missing"),
    "type not a string": (KEYVALUES, _set("AQ-S001", "type", 3), S1, "type", "non-empty string"),
    "dangling reference": (
        KEYVALUES, _set("AQ-S001", "refGateway", "urn:ngsi-ld:Device:AQ-GW99"), S1, "refGateway", "dangling",
    ),
    "dangling in normalized": (
        NORMALIZED, _set("AQ-S001", "refService", {"type": "Relationship", "object": "urn:ngsi-ld:SmartCityService:X"}),
        S1, "refService", "urn:ngsi-ld:SmartCityService:X",
    ),
    "dangling device model": (
        KEYVALUES, _set("AQ-S001", "refDeviceModel", "urn:ngsi-ld:DeviceModel:m"), S1, "refDeviceModel", "dangling",
    ),
    "duplicate id": (KEYVALUES, _duplicate("AQ-S002"), "entity #11 'urn:ngsi-ld:Device:AQ-S002'", "id",
                     "duplicate id (also entity #8 in"),
    "relationship without object": (
        NORMALIZED, _set("AQ-S001", "refGateway", {"type": "Relationship"}), S1, "refGateway", "without its value",
    ),
    "property without value": (
        NORMALIZED, _set("AQ-S001", "name", {"type": "Property"}), S1, "name", "without its value",
    ),
    "ref on the wrong entity": (
        KEYVALUES, _set("AQ-S001", "refSmartCity", "urn:ngsi-ld:SmartCity:TOWN"), S1, "refSmartCity",
        "service entities only",
    ),
    "ref to the wrong kind": (
        KEYVALUES, _set("AQ-S001", "refGateway", "urn:ngsi-ld:SmartCityService:AQ"), S1, "refGateway",
        "must point at a gateway",
    ),
    "model ref to a sensor": (
        KEYVALUES, _set("AQ-S001", "refDeviceModel", "urn:ngsi-ld:Device:AQ-S002"), S1, "refDeviceModel",
        "must point at a model, but 'urn:ngsi-ld:Device:AQ-S002' is a sensor",
    ),
    "gateway is its own gateway": (
        KEYVALUES, _set("AQ-GW01", "refGateway", "urn:ngsi-ld:Device:AQ-GW01"), "urn:ngsi-ld:Device:AQ-GW01",
        "refGateway", "self-loop",
    ),
    "gateway controls itself": (
        NORMALIZED, _set("WM-GW01", "controlledAsset", {"type": "Relationship", "object": "urn:ngsi-ld:Device:WM-GW01"}),
        "urn:ngsi-ld:Device:WM-GW01", "controlledAsset", "self-loop",
    ),
    "sensor without gateway": (KEYVALUES, _delete("AQ-S001", "refGateway"), S1, "refGateway", "needs a gateway"),
    "sensor with two gateways": (
        KEYVALUES, _set("AQ-S001", "refGateway", ["urn:ngsi-ld:Device:AQ-GW01", "urn:ngsi-ld:Device:AQ-GW02"]),
        S1, "refGateway", "at most one gateway",
    ),
    "device with two services": (
        KEYVALUES, _set("AQ-S001", "refService", ["urn:ngsi-ld:SmartCityService:AQ", "urn:ngsi-ld:SmartCityService:WM"]),
        S1, "refService", "at most one service",
    ),
    "latitude out of range": (
        KEYVALUES, _set("AQ-S001", "location", {"type": "Point", "coordinates": [2.0, -95.0]}), S1, "location",
        "[2.0, -95.0] is outside",
    ),
    "longitude out of range": (
        KEYVALUES, _set("AQ-S001", "location", {"type": "Point", "coordinates": [-200.0, 41.0]}), S1, "location",
        "is outside",
    ),
    "coordinates wrong length": (
        KEYVALUES, _set("AQ-S001", "location", {"type": "Point", "coordinates": [2.0]}), S1, "location",
        "[longitude, latitude]",
    ),
    "coordinates not numbers": (
        KEYVALUES, _set("AQ-S001", "location", {"type": "Point", "coordinates": [True, 41.0]}), S1, "location",
        "finite numbers",
    ),
    "location not a geometry": (
        NORMALIZED, _set("AQ-S001", "location", {"type": "GeoProperty", "value": {"type": "Polygon"}}), S1,
        "location", "GeoJSON geometry",
    ),
    "ref list with a number": (KEYVALUES, _set("AQ-S001", "refService", ["urn:x", 3]), S1, "refService",
                               "non-empty string"),
    "entity not an object": (KEYVALUES, _append(["not", "an", "entity"]), "entity #11", None, "JSON object"),
}


@pytest.mark.parametrize("case", list(ENTITY_CASES))
def test_malformed_entities_are_named(tmp_path, case):
    base, mutate, entity, field, words = ENTITY_CASES[case]
    entities = json.loads(base.read_text())
    mutate(entities)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(entities, indent=2))
    with pytest.raises(IngestError) as info:
        read_entities(path)
    msg = str(info.value)
    assert str(path) in msg
    assert entity in msg
    if field is not None:
        assert f"field {field!r}" in msg and info.value.field == field
    assert words in msg
    assert info.value.position is not None  # every entity error says where the entity sits in its file
    assert isinstance(info.value, TopologyError) and isinstance(info.value, ValueError)


# What used to be refused and is valid NGSI-LD / Smart Data Models: each now reads, and the attribute is kept.
ACCEPTED_CASES = {
    # name: (base file, mutation, node, where the value lands: ("field"|"property", name, value))
    "id not a urn": (KEYVALUES, _set("AQ-S001", "id", "AQ-S001"), "AQ-S001", ("field", "name", "PM2.5 sensor")),
    "id type segment differs": (KEYVALUES, _set("AQ-S002", "id", "urn:ngsi-ld:device:AQ-S002"), "AQ-S002",
                                ("field", "controlled_property", "no2")),
    "two controlled properties": (KEYVALUES, _set("AQ-S001", "controlledProperty", ["fillingLevel", "temperature"]),
                                  "AQ-S001", ("property", "controlledProperty", ["fillingLevel", "temperature"])),
    "unknown ref property": (KEYVALUES, _set("AQ-S001", "refThing", "urn:ngsi-ld:Thing:t"), "AQ-S001",
                             ("property", "refThing", ["urn:ngsi-ld:Thing:t"])),  # kept as a list of ids
    "unknown relationship": (NORMALIZED, _set("AQ-S001", "owner", REL), "AQ-S001",
                             ("property", "owner", ["urn:ngsi-ld:Device:AQ-GW01"])),
    "ref as a Property": (NORMALIZED, _set("AQ-S002", "refGateway", {"type": "Property", "value": REL["object"]}),
                          "AQ-S002", ("field", "gateway", "AQ-GW01")),
    "mixed encodings in one entity": (NORMALIZED, _set("AQ-S001", "name", "plain"), "AQ-S001",
                                      ("field", "name", "plain")),
    "device category missing": (KEYVALUES, _delete("AQ-S002", "deviceCategory"), "AQ-S002",
                                 ("field", "kind", "sensor")),
    "gateway by role": (KEYVALUES, _delete("AQ-GW01", "deviceCategory"), "AQ-GW01", ("field", "kind", "gateway")),
    "network and sensor": (KEYVALUES, _set("AQ-GW02", "deviceCategory", ["sensor", "network"]), "AQ-GW02",
                           ("field", "kind", "gateway")),
    "language property": (NORMALIZED, _set("AQ-S001", "description", {"type": "LanguageProperty",
                                                                      "languageMap": {"en": "kiosk"}}),
                          "AQ-S001", ("property", "description", {"en": "kiosk"})),
    "vocab property": (NORMALIZED, _set("AQ-S001", "status", {"type": "VocabProperty", "vocab": "ok"}), "AQ-S001",
                       ("property", "status", "ok")),
    "list property": (NORMALIZED, _set("AQ-S001", "readings", {"type": "ListProperty", "valueList": [1, 2]}),
                      "AQ-S001", ("property", "readings", [1, 2])),
    "json property": (NORMALIZED, _set("AQ-S001", "raw", {"type": "JsonProperty", "json": {"a": [1]}}), "AQ-S001",
                      ("property", "raw", {"a": [1]})),
    "list relationship": (NORMALIZED, _set("AQ-S001", "seeAlso", {"type": "ListRelationship", "objectList": [
        {"object": "urn:a"}, {"object": "urn:b"}]}), "AQ-S001", ("property", "seeAlso", ["urn:a", "urn:b"])),
    "multi-attribute datasetId": (NORMALIZED, _set("AQ-S001", "temperature", [
        {"type": "Property", "value": 20.5, "datasetId": "urn:ngsi-ld:Dataset:b"},
        {"type": "Property", "value": 21.0}]), "AQ-S001", ("property", "temperature", 21.0)),
    "polygon location": (KEYVALUES, _set("WM", "location", {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 1],
                                                                                               [0, 0]]]}),
                         "WM", ("property", "location", {"type": "Polygon",
                                                         "coordinates": [[[0, 0], [1, 0], [0, 1], [0, 0]]]})),
    "name not a string": (KEYVALUES, _set("AQ-S001", "name", 7), "AQ-S001", ("property", "name", 7)),
}


@pytest.mark.parametrize("case", list(ACCEPTED_CASES))
def test_valid_ngsi_ld_is_accepted_and_kept(case):
    base, mutate, node_id, (where, name, value) = ACCEPTED_CASES[case]
    entities = json.loads(base.read_text())
    mutate(entities)
    graph = read_graph(entities)
    node = graph.nodes[node_id]
    if where == "property":
        assert node.properties[name] == value
    elif name == "kind":
        assert node.kind == value
    else:
        topo = read_entities(entities)
        assert getattr(topo.nodes[node_id], name) == value
        assert name not in node.properties  # what the topology carries is not also a property


def test_a_file_may_hold_one_entity_an_array_or_a_graph(tmp_path):
    city = {"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity", "name": "c"}
    service = {"id": "urn:ngsi-ld:SmartCityService:S", "type": "SmartCityService",
               "refSmartCity": {"type": "Relationship", "object": "urn:ngsi-ld:SmartCity:C"}}
    (tmp_path / "a.json").write_text(json.dumps(city))
    (tmp_path / "b.jsonld").write_text(json.dumps({"@context": list(ingest.CONTEXT), "@graph": [service]}))
    (tmp_path / "notes.txt").write_text("not read")
    topo = read_entities(tmp_path)
    assert list(topo.nodes) == ["C", "S"] and topo.relations == [Relation("S", "IN", "C")]
    assert read_entities([tmp_path / "b.jsonld", tmp_path / "a.json"]).relations == [Relation("S", "IN", "C")]
    assert read_entities(city).nodes == {"C": Node("C", "city", name="c")}


def test_shared_local_ids_keep_their_full_ids():
    entities = [{"id": "urn:ngsi-ld:Device:X", "type": "Device", "deviceCategory": ["network"],
                 "refDeviceModel": "urn:ngsi-ld:DeviceModel:X"},
                {"id": "urn:ngsi-ld:DeviceModel:X", "type": "DeviceModel"}]
    graph = read_graph(entities)
    assert list(graph.nodes) == ["urn:ngsi-ld:Device:X", "urn:ngsi-ld:DeviceModel:X"]
    assert [r.as_text() for r in graph.relations] == ["(urn:ngsi-ld:Device:X, HAS_MODEL, urn:ngsi-ld:DeviceModel:X)"]


# ---------------------------------------------------------------------------
# JSON-level problems: file, line and column (and entity and field where one is open)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('[\n  {"id": "urn:ngsi-ld:SmartCity:C",\n   "type": "SmartCity"\n   "name": "x"}\n]\n', 4,
         "invalid JSON at column 4"),
        ('[\n{"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity",\n', 3, "invalid JSON"),
        ("", 1, "invalid JSON"),
    ],
)
def test_invalid_json_names_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(IngestError) as info:
        read_entities(path)
    assert f"{path}, line {line}:" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize(
    "text, words, position, field",
    [
        ('7', "not a JSON int", None, None),
        ('[{"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity", "batteryLevel": NaN}]', "NaN is not a JSON number",
         1, "batteryLevel"),
        ('[{"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity"},\n {"id": "urn:ngsi-ld:SmartCity:D", '
         '"type": "SmartCity", "location": {"type": "Point", "coordinates": [-Infinity, 1.0]}}]',
         "Infinity is not a JSON number", 2, "location"),
        ('[{"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity", "size": 1e999}]', "overflows a float", 1, "size"),
        ('[{"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity", "size": ' + "9" * 5000 + '}]',
         "a number of 5000 characters (limit MAX_NUMBER_CHARS = 100)", 1, "size"),
        ('{"@graph": [{"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity"}, {"id": "urn:ngsi-ld:SmartCity:D", '
         '"type": "SmartCity", "deep": ' + "[" * 100_000 + "]" * 100_000 + '}]}',
         "nesting deeper than MAX_DEPTH = 64", 2, "deep"),
        ('[{"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity", "deep": "' + "[" * 100 + '"}]', None, None, None),
    ],
    ids=["not an entity", "NaN", "-Infinity", "float overflow", "5000 digits", "1e5 brackets", "brackets in a string"],
)
def test_structural_json_problems_are_named(tmp_path, text, words, position, field):
    path = tmp_path / "odd.json"
    path.write_text(text)
    if words is None:  # brackets inside a string are not nesting
        assert read_graph(path).nodes["C"].properties == {"deep": "[" * 100}
        return
    with pytest.raises(IngestError) as info:
        read_entities(path)
    assert str(path) in str(info.value) and words in str(info.value)
    assert info.value.position == position and info.value.field == field
    if position is not None:
        assert f"entity #{position}" in str(info.value) and info.value.line is not None


def test_nesting_at_the_limit_is_fine_and_escaped_brackets_do_not_count(tmp_path):
    inner = "[" * (ingest.MAX_DEPTH - 2) + "]" * (ingest.MAX_DEPTH - 2)  # + the array and the entity object
    path = tmp_path / "deep.json"
    path.write_text('[{"id": "a\\"[[", "type": "SmartCity", "deep": ' + inner + "}]")
    assert read_graph(path).nodes['a"[['].kind == "city"
    path.write_text('[{"id": "a", "type": "SmartCity", "deep": [' + inner + "]}]")
    with pytest.raises(IngestError, match="nesting deeper"):
        read_graph(path)


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[\n{"id": "urn:ngsi-ld:SmartCity:C",\n "type": "SmartCity", "name": "M\xfcnster"}]')
    with pytest.raises(IngestError, match=r"line 3: not UTF-8"):
        read_entities(path)


def test_in_memory_entities_are_named_as_such():
    with pytest.raises(IngestError, match=r"^<entities>, entity #1, field 'id': missing"):
        read_entities([{"type": "SmartCity"}])


# ---------------------------------------------------------------------------
# Malformed logs: each message names the file, the line and the field
# ---------------------------------------------------------------------------

LOG_CASES = {
    # name: (bad line, field named, words in the problem)
    "too few fields": ("5 12.0 AQ-S001 1", "line", "has 4 fields, expected 5"),
    "too many fields": ("5 12.0 AQ-S001 1 train extra", "line", "has 6 fields"),
    "bad index": ("x5 12.0 AQ-S001 1 train", "index", "'x5'"),
    "repeated index": ("2 12.0 AQ-S001 1 train", "index", "already used on line 6"),
    "bad timestamp": ("5 noon AQ-S001 1 train", "timestamp_s", "'noon'"),
    "nan timestamp": ("5 nan AQ-S001 1 train", "timestamp_s", "'nan'"),
    "negative timestamp": ("5 -2.0 AQ-S001 1 train", "timestamp_s", ">= 0"),
    "unknown node": ("5 12.0 AQ-S999 1 train", "node_id", "'AQ-S999' is not a node"),
    "not a device": ("5 12.0 AQ 1 train", "node_id", "is a service"),
    "bad presence": ("5 12.0 AQ-S001 yes train", "presence", "'yes'"),
    "presence out of range": ("5 12.0 AQ-S001 2 train", "presence", "1 (active) or 0 (inactive)"),
    "bad split": ("5 12.0 AQ-S001 1 training", "split", "'training'"),
    "node in two splits": ("5 12.0 AQ-S001 1 test", "split", "line 3 puts this node in 'train'"),
}


@pytest.mark.parametrize("case", list(LOG_CASES))
def test_malformed_log_lines_are_named(tmp_path, case):
    bad, field, words = LOG_CASES[case]
    path = tmp_path / "bad.log"
    path.write_text(LOG.read_text() + bad + "\n")  # city.log has 8 lines; the bad one is line 9
    with pytest.raises(IngestError) as info:
        read_log(path, read_entities(KEYVALUES))
    msg = str(info.value)
    assert msg.startswith(f"{path}, line 9, ")
    assert f"field {field!r}" in msg and info.value.line == 9 and info.value.field == field
    assert words in msg


# ---------------------------------------------------------------------------
# Writing: bad objects are refused, and nothing partial is ever left behind
# ---------------------------------------------------------------------------


def _tiny() -> Topology:
    return read_entities(KEYVALUES)


def test_relation_without_an_ngsi_property_is_refused(tmp_path):
    topo = _tiny()
    topo.relations.append(Relation("AQ-S001", "CONNECTED_TO", "AQ-S002"))  # sensor -> sensor has no property
    path = tmp_path / "e.json"
    path.write_text("old")
    with pytest.raises(IngestError) as info:
        write_entities(topo, path)
    assert info.value.entity == "urn:ngsi-ld:Device:AQ-S001" and info.value.field == "CONNECTED_TO"
    assert str(path) in str(info.value)
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["e.json"]


def test_node_field_that_would_not_read_back_is_refused(tmp_path):
    topo = _tiny()
    topo.nodes["AQ-GW02"] = Node("AQ-GW02", "gateway", service="AQ", gateway="AQ-GW01")  # gateways carry no gateway
    with pytest.raises(IngestError) as info:
        write_entities(topo, tmp_path / "e.json", form="keyValues")
    assert info.value.field == "gateway" and "would read back as None" in str(info.value)
    assert not (tmp_path / "e.json").exists()


def test_invalid_instances_are_refused(tmp_path):
    path = tmp_path / "log.txt"
    with pytest.raises(IngestError) as info:
        write_log([Instance(0, float("nan"), "AQ-S001", True, "train")], path)
    assert info.value.field == "timestamp_s" and str(path) in str(info.value)
    with pytest.raises(IngestError, match="field 'node_id'"):
        write_log([Instance(0, 0.0, "AQ S001", True, "train")], path)
    with pytest.raises(IngestError, match=r"line 3, entity 'X1', field 'node_id'"):  # line 3: after the 2-line header
        write_log([Instance(0, 0.0, "X1", True, "train")], path, topology=_tiny())
    assert not path.exists()


def test_an_error_mid_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "e.json"
    write_entities(_tiny(), path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(ingest.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_entities(generate_dataset(resolve("quick").topology).topology, path, form="keyValues")
    with pytest.raises(OSError, match="disk full"):
        write_log(EXPECTED_LOG, tmp_path / "log.txt")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["e.json"]  # no temporary file left, no partial log


def test_an_error_mid_book_dataset_write_leaves_no_folder(tmp_path, monkeypatch):
    cfg = resolve("quick").topology
    calls = []
    real = os.fsync

    def fail_on_second(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file of the new folder
            raise OSError("disk full")
        real(fd)

    monkeypatch.setattr(ingest.os, "fsync", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        book_dataset(cfg, tmp_path / "city")
    assert os.listdir(tmp_path) == []  # neither a partial folder nor a temporary one
    monkeypatch.setattr(ingest.os, "fsync", real)
    assert book_dataset(cfg, tmp_path / "city").topology == generate_dataset(cfg).topology


def test_write_log_checks_the_log_against_the_topology(tmp_path):
    with pytest.raises(IngestError, match=r"log\.txt, line 3, entity 'AQ', field 'node_id'"):  # a service in the log
        write_log([Instance(0, 0.0, "AQ", True, "train")], tmp_path / "log.txt", _tiny())
    assert os.listdir(tmp_path) == []


def test_form_is_validated():
    with pytest.raises(ValueError, match="form = 'compact'"):
        to_entities(_tiny(), form="compact")
    with pytest.raises(ValueError, match="form = 'compact'"):
        read_entities(KEYVALUES, form="compact")


# ---------------------------------------------------------------------------
# Smart Data Models files: mixed types and encodings (tests/data/sdm, written to the SDM schemas' shapes)
# ---------------------------------------------------------------------------

SDM_DIR = DATA / "sdm"
# Worked out by hand from the five files (read in name order: assets, devices, gateway, models, observations).
SDM_KINDS = {
    "bin-12": "asset", "lamp-3": "asset", "main-st-1": "asset", "main-st-1-p4": "asset", "main-st-1-side": "asset",
    "aq-01": "sensor", "device-fill-07": "sensor", "cam-02": "sensor", "lamp-ctl-3": "actuator",
    "gw-plaza": "gateway", "aq-model-2": "model", "gw-model-x": "model", "sl-led-40": "model",
    "kiosk-2025-01-07T10": "observation", "main-st-0800": "observation", "waste-obs-1": "observation",
}
SDM_RELATIONS = {
    ("aq-01", "CONNECTED_TO", "gw-plaza"), ("device-fill-07", "CONNECTED_TO", "gw-plaza"),
    ("cam-02", "CONNECTED_TO", "gw-plaza"), ("lamp-ctl-3", "CONNECTED_TO", "gw-plaza"),  # gateway's controlledAsset
    ("aq-01", "HAS_MODEL", "aq-model-2"), ("gw-plaza", "HAS_MODEL", "gw-model-x"),
    ("lamp-3", "HAS_MODEL", "sl-led-40"),
    ("device-fill-07", "ATTACHED_TO", "bin-12"),  # stated twice: the sensor's controlledAsset, the bin's refDevice
    ("lamp-ctl-3", "ATTACHED_TO", "lamp-3"),
    ("kiosk-2025-01-07T10", "OBSERVED_BY", "aq-01"), ("main-st-0800", "OBSERVED_BY", "cam-02"),
    ("waste-obs-1", "OBSERVED_BY", "device-fill-07"),
    ("main-st-0800", "LOCATED_ON", "main-st-1"), ("main-st-1-side", "LOCATED_ON", "main-st-1"),
    ("main-st-1-p4", "PART_OF", "main-st-1-side"),
}


def test_a_folder_of_sdm_files_loads_with_the_right_nodes_and_relations():
    graph = read_graph(SDM_DIR)
    assert {nid: n.kind for nid, n in graph.nodes.items()} == SDM_KINDS
    assert list(graph.nodes) == list(SDM_KINDS)
    assert {(r.head, r.type, r.tail) for r in graph.relations} == SDM_RELATIONS
    assert len(graph.relations) == len(SDM_RELATIONS)  # the doubly stated ATTACHED_TO is kept once
    # attributes gentwin does not use are kept, in whichever encoding they came
    assert graph.nodes["kiosk-2025-01-07T10"].properties["no2"] == 22.5  # the default instance (no datasetId)
    assert graph.nodes["gw-model-x"].properties["name"] == {"en": "gateway X", "es": "pasarela X"}
    assert graph.nodes["sl-led-40"].properties == {"powerConsumption": 40, "lampTechnology": "LED"}
    assert graph.nodes["waste-obs-1"].properties["seeAlso"] == ["urn:ngsi-ld:Report:r1"]  # outside the allow-list
    assert graph.nodes["aq-01"].properties["controlledProperty"] == ["no2", "temperature"]
    assert graph.nodes["main-st-1"].properties["location"]["type"] == "LineString"
    assert graph.nodes["bin-12"].type == "WasteContainer" and graph.nodes["bin-12"].urn.startswith("urn:ngsi-ld:waste")
    assert graph.counts()["OBSERVED_BY"] == 3


def test_the_sdm_folder_projects_onto_a_topology():
    topo = read_entities(SDM_DIR)
    assert list(topo.nodes) == ["aq-01", "device-fill-07", "cam-02", "gw-plaza"]  # the kinds a Topology holds
    assert set(topo.relations) == {Relation(s, "CONNECTED_TO", "gw-plaza") for s in ("aq-01", "device-fill-07",
                                                                                      "cam-02")}
    assert topo.gateway_degrees() == {"gw-plaza": 3}
    aq = topo.nodes["aq-01"]
    assert (aq.gateway, aq.sdm_type, aq.controlled_property, aq.latitude, aq.longitude, aq.name) == (
        "gw-plaza", "AirQualityObserved", None, 37.241, -5.101, "kiosk air sensor")
    assert topo.nodes["device-fill-07"].sdm_type == "WasteObserved"  # from the observation made by it


def test_one_sdm_entity_in_each_encoding_reads_the_same():
    normalized = {"id": "urn:ngsi-ld:WasteContainer:b1", "type": "WasteContainer",
                  "fillingLevel": {"type": "Property", "value": 0.5, "observedAt": "2025-01-01T00:00:00Z"},
                  "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:d1"},
                  "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.0, 41.0]}}}
    concise = {"id": "urn:ngsi-ld:WasteContainer:b1", "type": "WasteContainer", "fillingLevel": {"value": 0.5},
               "refDevice": {"object": "urn:ngsi-ld:Device:d1"}, "location": {"type": "Point", "coordinates": [2.0, 41.0]}}
    key_values = {"id": "urn:ngsi-ld:WasteContainer:b1", "type": "WasteContainer", "fillingLevel": 0.5,
                  "refDevice": "urn:ngsi-ld:Device:d1", "location": {"type": "Point", "coordinates": [2.0, 41.0]}}
    device = {"id": "urn:ngsi-ld:Device:d1", "type": "Device", "deviceCategory": ["sensor"]}
    read = [read_graph([e, device]) for e in (normalized, concise, key_values)]
    for graph in read:
        assert graph.nodes["b1"].properties == {"fillingLevel": 0.5}
        assert (graph.nodes["b1"].fields["latitude"], graph.nodes["b1"].fields["longitude"]) == (41.0, 2.0)
        assert [r.as_text() for r in graph.relations] == ["(d1, ATTACHED_TO, b1)"]


def test_the_shipped_sample_reads_and_shows():
    graph = read_graph(ingest.SDM_SAMPLE)
    counts = graph.counts()
    assert (counts["sensor"], counts["gateway"], counts["actuator"], counts["observation"], counts["model"]) == (
        5, 2, 1, 3, 1)
    assert counts["OBSERVED_BY"] == 3 and counts["HAS_MODEL"] == 2 and counts["ATTACHED_TO"] == 3
    topo = read_entities(ingest.SDM_SAMPLE)
    assert topo.gateway_degrees() == {"rs-gw-north": 3, "rs-gw-south": 2}
    assert Relation("rs-gw-south", "CONNECTED_TO", "rs-gw-north") in topo.relations
    for form in FORMS:  # what reached the topology writes out in gentwin's vocabulary and reads back identical
        assert read_entities(to_entities(topo, form)) == topo
    assert sorted(p.name for p in ingest.SDM_SAMPLE.iterdir()) == [
        "assets.json", "city.json", "device-model.json", "devices.jsonld", "observations.json"]


def test_mapping_table_is_one_table_covering_every_kind_and_relation():
    from gentwin.sdm import GRAPH_KINDS, GRAPH_RELATIONS, SDM_MAPPING, mapping_table

    table = mapping_table()
    assert len(table) == len(SDM_MAPPING)
    rels = table[table.source == "relationship"]
    assert set(rels.gentwin) <= set(GRAPH_RELATIONS)
    assert set(table[table.source != "relationship"].gentwin) <= set(GRAPH_KINDS) | {"device"}
    for name in ("refDevice", "refDeviceModel", "controlledAsset", "refGateway"):
        assert name in set(rels.sdm)
    for sdm_type in ("Device", "DeviceModel", "AirQualityObserved", "WasteContainer", "TrafficFlowObserved",
                     "ParkingSpot", "Streetlight"):
        assert sdm_type in set(table.sdm)
    # the topology's own vocabulary is a subset of the graph's
    from gentwin.topology import NODE_KINDS, RELATION_TYPES
    assert set(NODE_KINDS) <= set(GRAPH_KINDS) and set(RELATION_TYPES) <= set(GRAPH_RELATIONS)


# ---------------------------------------------------------------------------
# The book's data set: written once per settings, always read back through ingest
# ---------------------------------------------------------------------------


def test_book_dataset_writes_once_and_always_reads_back(tmp_path):
    cfg = resolve("quick").topology
    folder = tmp_path / "city"
    ds = book_dataset(cfg, folder)
    generated = generate_dataset(cfg)
    assert ds.topology == generated.topology and ds.instances == generated.instances  # identical, order included
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city"]  # no temporary folder left
    normalized = json.loads((folder / "entities.normalized.jsonld").read_text())
    key_values = json.loads((folder / "entities.keyValues.json").read_text())
    assert normalized[0]["name"] == {"type": "Property", "value": "smart city"} and key_values[0]["name"] == "smart city"
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = book_dataset(cfg, folder)  # present and written from the same settings: reused, not rewritten
    assert again.topology == generated.topology and again.instances == generated.instances
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp
    # ... and still read back every time: a damaged file is caught, not trusted
    (folder / "log.txt").write_text((folder / "log.txt").read_text().replace("\ttrain\n", "\ttest\n", 1))
    with pytest.raises(IngestError, match="log.txt"):  # the edit mixes a node's splits: it was read, not reused blind
        book_dataset(cfg, folder)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != "log.txt"} == {
        k: v for k, v in stamp.items() if k != "log.txt"}


def test_book_dataset_refuses_other_settings_and_foreign_folders(tmp_path):
    cfg = resolve("quick").topology
    book_dataset(cfg, tmp_path / "city")
    other = resolve("quick", data_seed=cfg.data_seed + 1).topology
    with pytest.raises(IngestError, match="other settings.*data_seed"):
        book_dataset(other, tmp_path / "city")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("keep")
    with pytest.raises(IngestError, match="not a book data-set folder"):
        book_dataset(cfg, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.md").read_text() == "keep"
    (tmp_path / "city" / "entities.keyValues.json").unlink()
    with pytest.raises(IngestError, match="lacks entities.keyValues.json"):
        book_dataset(cfg, tmp_path / "city")
    (tmp_path / "city" / "settings.json").write_text("{truncated")
    with pytest.raises(IngestError, match="settings.json: is not readable JSON"):
        book_dataset(cfg, tmp_path / "city")


def test_book_dataset_reads_a_folder_another_run_wrote_meanwhile(tmp_path, monkeypatch):
    cfg = resolve("quick").topology
    book_dataset(cfg, tmp_path / "theirs")

    def late(folder, files):  # another chapter run moves its folder into place first
        import shutil

        shutil.copytree(tmp_path / "theirs", folder)
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(ingest, "atomic_folder", late)
    ds = book_dataset(cfg, tmp_path / "city")
    assert ds.topology == generate_dataset(cfg).topology
    monkeypatch.setattr(ingest, "atomic_folder", lambda folder, files: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(OSError, match="No space"):  # a failure with nothing written is not hidden
        book_dataset(cfg, tmp_path / "other")


def test_book_dataset_checks_both_encodings_agree(tmp_path):
    cfg = resolve("quick").topology
    folder = tmp_path / "city"
    book_dataset(cfg, folder)
    entities = json.loads((folder / "entities.keyValues.json").read_text())
    entities[-1]["name"] = "renamed"
    (folder / "entities.keyValues.json").write_text(json.dumps(entities))
    with pytest.raises(IngestError, match="another topology"):
        book_dataset(cfg, folder)


def test_load_book_dataset_writes_once_then_reads_back_the_same_city(tmp_path):
    from gentwin.config import resolve
    from gentwin.ingest import book_data_folder, load_book_dataset
    from gentwin.topology import generate_dataset

    cfg = resolve("quick").topology
    first = load_book_dataset(cfg, root=tmp_path)
    folder = book_data_folder(cfg, root=tmp_path)
    assert folder.parent == tmp_path / "book" / "executed" / "data"
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    second = load_book_dataset(cfg, root=tmp_path)  # present: read, not rewritten
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp
    expected = generate_dataset(cfg)
    assert first.topology == second.topology == expected.topology
    assert first.instances == expected.instances
    # another city gets another folder, never the first one's files
    other = resolve("quick", n_sensors=30).topology
    assert book_data_folder(other, root=tmp_path) != folder
    assert len(load_book_dataset(other, root=tmp_path).topology.of_kind("sensor")) == 30


# ---------------------------------------------------------------------------
# Every chapter's data set comes through this door
# ---------------------------------------------------------------------------

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: chapters whose own code loads the book's data set
LOADS_IN_CHAPTER = ("setup", "pooling", "prompting", "adapter", "fig8")
#: chapters that get it through a library function: the chapter passes it load_book_dataset's data set,
#: or the function calls load_book_dataset itself
LOADS_THROUGH = {"fig6": "gentwin.experiments.pipeline.setup_twin", "fig7": "gentwin.experiments.pipeline.setup_twin"}
#: chapters that use no data set, or not the book's one, and why
EXCEPTIONS = {
    "table4": "generates one city per Table IV size (a topology per row, none of them the book's data set)",
    "comparison": "reads the results of the other chapters, no data set",
    "equations": "lists the equations and their tests, no data set",
}
#: chapters another helper is switching right now: strict xfail while they still generate their own city
SWITCHED_BY_ANOTHER_HELPER: set[str] = set()


def _chapter_code(name: str) -> str:
    import jupytext

    notebook = jupytext.read(NOTEBOOKS / f"{name}.md")
    return "\n".join(c.source for c in notebook.cells if c.cell_type == "code")


def test_every_chapter_is_classified():
    chapters = {p.stem for p in NOTEBOOKS.glob("*.md")}
    assert chapters == set(LOADS_IN_CHAPTER) | set(LOADS_THROUGH) | set(EXCEPTIONS), (
        "a new chapter: say in tests/test_ingest.py how it gets its data set")


def _chapter_params():
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="switched by another helper"))
            if name in SWITCHED_BY_ANOTHER_HELPER else name for name in (*LOADS_IN_CHAPTER, *LOADS_THROUGH)]


@pytest.mark.parametrize("chapter", _chapter_params())
def test_chapter_data_set_comes_through_ingest(chapter):
    import importlib
    import inspect

    code = _chapter_code(chapter)
    assert "generate_dataset" not in code and "generate_instances" not in code
    if chapter in LOADS_THROUGH and "load_book_dataset(" not in code:
        module, _, function = LOADS_THROUGH[chapter].rpartition(".")
        assert f"{function}(" in code
        code = inspect.getsource(getattr(importlib.import_module(module), function))
        assert "generate_dataset" not in code and "generate_instances" not in code
    assert "load_book_dataset(" in code


def test_a_chapter_run_alone_writes_both_encodings_and_the_log(tmp_path, monkeypatch):
    from gentwin.ingest import BOOK_FILES, book_data_folder, load_book_dataset

    monkeypatch.chdir(tmp_path)  # a chapter runs in the book's root and calls load_book_dataset(settings.topology)
    cfg = resolve("quick").topology
    ds = load_book_dataset(cfg)
    folder = tmp_path / book_data_folder(cfg)
    assert sorted(p.name for p in folder.iterdir()) == sorted(BOOK_FILES.values())
    for form in FORMS:
        entities = json.loads((folder / BOOK_FILES[form]).read_text())
        assert len(entities) == len(ds.topology.nodes)  # one entity per node: 24 + 6 + 3 + 1 in quick
        assert read_entities(folder / BOOK_FILES[form], form=form) == ds.topology
    assert read_log(folder / BOOK_FILES["log"], ds.topology) == ds.instances
    assert len(ds.instances) == cfg.n_instances

"""gentwin.experiments.setup: the set-up chapter's tables, checked against counts worked out by hand."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # tests draw off-screen (the library never picks a backend)

import matplotlib.pyplot as plt
import pytest

from gentwin.config import TopologyConfig, resolve
from gentwin.experiments import setup
from gentwin.topology import generate_dataset, generate_topology


@pytest.fixture(scope="module")
def quick_ds():
    return generate_dataset(resolve("quick").topology)


def test_glued_counts_follow_the_formulas(quick_ds) -> None:
    # quick: 24 sensors, 6 gateways, 3 fog links, 60 instances, 70 % for training
    assert setup.glued_counts(quick_ds) == {
        "dataset_instances": 60.0, "dataset_device_nodes": 24.0 + 6, "dataset_relations": 2 * 24.0 + 6 + 3,
        "dataset_train_instances": 0.7 * 60}


def test_paper_comparison_says_which_counts_differ() -> None:
    paper = setup.paper_comparison(generate_dataset(resolve("paper").topology))
    assert list(paper.index[:2]) == ["IoT sensors", "gateways"]
    assert paper["same as the paper"].all()
    small = setup.paper_comparison(generate_dataset(resolve("paper", n_sensors=30).topology))
    differ = set(small.index[~small["same as the paper"]])
    assert "IoT sensors" in differ and "gateways" not in differ
    assert small.loc["IoT sensors", "this run"] == 30


def test_comparison_note_names_the_counts_and_parameters_that_differ() -> None:
    from gentwin.config import field_spec

    paper = resolve("paper").topology
    assert setup.comparison_note(setup.paper_comparison(generate_dataset(paper)), paper) == (
        "Every count equals the paper's.")
    small = resolve("paper", n_sensors=30).topology
    note = setup.comparison_note(setup.paper_comparison(generate_dataset(small)), small)
    first, second = note.split("\n")
    # the sensors, the device nodes and the relations change with n_sensors; gateways and instances do not
    assert first == "These counts differ from the paper's: IoT sensors, nodes (sensors + gateways), unique relations."
    # only the one changed parameter is named, with the paper profile's value beside it
    assert second == ("This execution changed the data-set parameters: "
                      f"n_sensors = 30 (paper profile: {field_spec('n_sensors').paper})")


def test_relation_formula_adds_up_the_generator_rules(quick_ds) -> None:
    cfg = resolve("quick").topology  # 24 sensors, 6 gateways, 3 fog links: 48 + 6 + 3
    line = setup.relation_formula(setup.relation_makeup(quick_ds.topology), cfg, 57)
    assert line == ("2 x n_sensors + n_gateways + n_gateway_links = 2 x 24 + 6 + 3 = 57; "
                    "counted in the generated graph: 57; unique: 57")


def test_degree_summary_counts_gateways_without_sensors() -> None:
    import pandas as pd

    assert setup.degree_summary(pd.DataFrame({"d_i": [3, 0, 1, 0, 0]})) == (
        "d_i: mean 0.80, min 0, max 3; gateways without any sensor: 3")


def test_relation_makeup_counts_m_first(quick_ds) -> None:
    table = setup.relation_makeup(quick_ds.topology)
    in_m = table[table["counted in M (head is a device)"]]
    assert int(in_m["count"].sum()) == 2 * 24 + 6 + 3
    assert table["counted in M (head is a device)"].tolist() == sorted(
        table["counted in M (head is a device)"], reverse=True)
    assert table.loc[~table["counted in M (head is a device)"], "count"].tolist() == [3]  # service -IN-> city


def test_gateway_degrees_add_up_to_the_sensors(quick_ds) -> None:
    degrees = setup.gateway_degrees(quick_ds.topology)
    assert len(degrees) == 6 and degrees.d_i.sum() == 24
    assert set(degrees.service) == {"AQ", "TR", "WM"}


def test_split_table_and_no_node_in_two_splits(quick_ds) -> None:
    table = setup.split_table(quick_ds, (0.7, 0.15, 0.15))
    assert list(table.index) == ["train", "validation", "test"]
    assert table["instances"].tolist() == [42, 9, 9]
    assert table["share of instances"].sum() == pytest.approx(1.0)
    assert table["sensors"].sum() == 24 and table["gateways"].sum() == 6
    assert setup.nodes_in_two_splits(quick_ds) == 0


def test_draw_topology_draws_every_node() -> None:
    topo = generate_topology(TopologyConfig(n_services=2, n_gateways=4, n_sensors=8, n_gateway_links=2,
                                            n_instances=20))
    fig, ax = plt.subplots()
    setup.draw_topology(topo, ax, "small")
    assert ax.get_title() == "small"
    assert len(ax.texts) == len(topo.nodes)  # one label per node
    plt.close(fig)


# ---------------------------------------------------------------------------
# The data set's files and the Smart Data Models sample
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_folder(tmp_path_factory):
    from gentwin.ingest import book_dataset

    folder = tmp_path_factory.mktemp("book") / "city"
    return folder, book_dataset(resolve("quick").topology, folder)


def test_dataset_files_counts_what_each_file_holds(book_folder) -> None:
    folder, ds = book_folder
    table = setup.dataset_files(folder).set_index("file")
    assert table.loc["entities.normalized.jsonld", "entities"] == table.loc["entities.keyValues.json", "entities"] \
        == 24 + 6 + 3 + 1  # sensors, gateways, services, the city
    assert table.loc["log.txt", "log records"] == 60
    assert table["bytes"].tolist() == [(folder / name).stat().st_size for name in table.index]
    # normalized wraps every value in {"type": ..., "value"/"object": ...}: the larger file
    assert table.loc["entities.normalized.jsonld", "bytes"] > table.loc["entities.keyValues.json", "bytes"]


def test_entity_excerpt_shows_each_encoding(book_folder) -> None:
    folder, ds = book_folder
    sensor = ds.topology.sensors()[0]
    normalized = setup.entity_excerpt(folder, "normalized", sensor)
    key_values = setup.entity_excerpt(folder, "keyValues", sensor)
    assert f'"refGateway": {{"type": "Relationship", "object": "urn:ngsi-ld:Device:{sensor.gateway}"}}' in normalized
    assert f'"refGateway": "urn:ngsi-ld:Device:{sensor.gateway}"' in key_values
    assert "@context" not in normalized and normalized.startswith("{\n") and normalized.endswith("\n}")


def test_encodings_read_back_notices_a_changed_file(book_folder, tmp_path) -> None:
    import json
    import shutil

    folder, ds = book_folder
    assert setup.encodings_read_back(folder, ds.topology) == {"normalized": True, "keyValues": True}
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    entities = json.loads((copy / "entities.keyValues.json").read_text())
    entities[0]["name"] = "renamed city"
    (copy / "entities.keyValues.json").write_text(json.dumps(entities))
    assert setup.encodings_read_back(copy, ds.topology) == {"normalized": True, "keyValues": False}


@pytest.fixture(scope="module")
def sample_graph():
    from gentwin.ingest import SDM_SAMPLE, read_graph

    return read_graph(SDM_SAMPLE)


def test_graph_counts_of_the_sample(sample_graph) -> None:
    nodes, relations = setup.graph_counts(sample_graph)
    # counted by hand in gentwin/data/sdm_sample/
    assert dict(zip(nodes.kind, nodes.nodes)) == {"sensor": 5, "actuator": 1, "gateway": 2, "service": 3, "city": 1,
                                                  "observation": 3, "asset": 5, "model": 1}
    assert nodes.nodes.sum() == len(sample_graph.nodes) and relations["count"].sum() == len(sample_graph.relations)
    by_type = relations.set_index("relation")
    assert by_type.loc["CONNECTED_TO", "from the properties"] == "controlledAsset, refGateway"
    assert by_type.loc["HAS_MODEL", "count"] == 2 and by_type.loc["OBSERVED_BY", "count"] == 3


def test_draw_entity_graph_draws_every_entity(sample_graph) -> None:
    fig, ax = plt.subplots()
    setup.draw_entity_graph(sample_graph, ax, "sample")
    assert len(ax.texts) == len(sample_graph.nodes)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "actuator" in legend and "OBSERVED_BY" in legend and "PART_OF" not in legend  # only what is drawn
    plt.close(fig)


def test_sample_pools_follow_the_relation_counts(sample_graph) -> None:
    topo = sample_graph.to_topology()
    assert [i.node_id for i in setup.sample_log(topo)] == [n.id for n in topo.devices()]
    head = resolve("quick", relation_owner="head").pooling
    table = setup.sample_pools(topo, head).set_index("node")
    # N_i read as the node's own (head) relations: every sensor has CONNECTED_TO and SERVES_IN;
    # rs-gw-south also links to rs-gw-north; M = 5 x 2 + 2 + 1 = 13
    assert table.N.to_dict() == {"rs-gw-north": 1, "rs-gw-south": 2, "rs-no2-01": 2, "rs-pm-01": 2,
                                 "rs-fill-01": 2, "rs-fill-02": 2, "rs-cam-01": 2}
    assert table.p.to_dict() == pytest.approx({k: v / 13 for k, v in table.N.to_dict().items()})
    assert table.loc["rs-gw-north", "v"] == "('rs-gw-north', 3)"  # eq. (2): d_i = 3 sensors
    # read as incident: a gateway also owns its sensors' uplinks and the fog link (north: 1 + 3 + 1, south: 1 + 2 + 1)
    incident = setup.sample_pools(topo, resolve("quick", relation_owner="incident").pooling).set_index("node")
    assert incident.N.to_dict() == {**table.N.to_dict(), "rs-gw-north": 5, "rs-gw-south": 4}
    assert incident.p.to_dict() == pytest.approx({k: v / 13 for k, v in incident.N.to_dict().items()})


def test_small_hand_worked_cases() -> None:
    """Formerly doctests of gentwin.experiments.setup: a 1-service, 2-gateway, 3-sensor topology and two-node logs."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from gentwin.ingest import BOOK_FILES, write_entities
    from gentwin.topology import Node, Relation, Topology

    small = TopologyConfig(n_services=1, n_gateways=2, n_sensors=3, n_gateway_links=1, n_instances=5)
    assert setup.relation_makeup(generate_topology(small))[["relation", "from", "to", "count"]].values.tolist() == [
        ["CONNECTED_TO", "sensor", "gateway", 3], ["SERVES_IN", "sensor", "service", 3],
        ["SERVES_IN", "gateway", "service", 2], ["CONNECTED_TO", "gateway", "gateway", 1], ["IN", "service", "city", 1]]
    differ = pd.DataFrame({"same as the paper": [True, False]}, index=["gateways", "instances"])
    assert setup.comparison_note(differ, TopologyConfig(n_instances=400), TopologyConfig(n_instances=500)) == (
        "These counts differ from the paper's: instances.\n"
        "This execution changed the data-set parameters: n_instances = 400 (paper profile: 500)")
    assert setup.relation_formula(setup.relation_makeup(generate_topology(small)), small, 9) == (
        "2 x n_sensors + n_gateways + n_gateway_links = 2 x 3 + 2 + 1 = 9; counted in the generated graph: 9; unique: 9")
    assert setup.degree_summary(pd.DataFrame({"d_i": [0, 2, 4, 0]})) == (
        "d_i: mean 1.50, min 0, max 4; gateways without any sensor: 2")
    topo = Topology({"G": Node("G", "gateway"), "S": Node("S", "sensor", gateway="G")}, [])
    linked = Topology(topo.nodes, [Relation("S", "CONNECTED_TO", "G")])  # M = 1, owned by its head S
    for owner, expected in (("head", [["G", 0, 0.0], ["S", 1, 1.0]]), ("incident", [["G", 1, 1.0], ["S", 1, 1.0]])):
        pooling = resolve("quick", relation_owner=owner).pooling
        assert setup.sample_pools(linked, pooling)[["node", "N", "p"]].values.tolist() == expected
    assert [(i.index, i.timestamp, i.node_id, i.present, i.split) for i in setup.sample_log(topo)] == [
        (0, 0.0, "G", True, "train"), (1, 1.0, "S", True, "train")]
    city = Topology({"C": Node("C", "city", name="town")}, [])
    with tempfile.TemporaryDirectory() as tmp:
        write_entities(city, Path(tmp) / BOOK_FILES["keyValues"], form="keyValues")
        assert setup.entity_excerpt(tmp, "keyValues", city.nodes["C"]) == (
            '{\n  "id": "urn:ngsi-ld:SmartCity:C",\n  "type": "SmartCity",\n  "name": "town"\n}')

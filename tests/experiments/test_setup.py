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

"""The set-up chapter's tables: the data set's counts beside the paper's, the relation make-up, gateway degrees and the split."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd
from matplotlib.lines import Line2D

from ..config import PROFILES, TopologyConfig, field_spec
from ..ingest import BOOK_FILES, FORMS, read_entities, to_urn
from ..pooling import pool_readings, pool_snapshot
from ..reference import by_key
from ..sdm import GRAPH_KINDS, GRAPH_RELATIONS, EntityGraph
from ..topology import NODE_KINDS, SPLITS, DataSet, Instance, Topology

__all__ = ["GLUED_COUNTS", "glued_counts", "paper_comparison", "comparison_note", "relation_makeup",
           "relation_formula", "gateway_degrees", "degree_summary", "split_table", "nodes_in_two_splits",
           "draw_topology", "dataset_files", "entity_excerpt", "encodings_read_back", "graph_counts",
           "draw_entity_graph", "sample_log", "sample_pools"]

#: glue name -> key of ``gentwin.topology.DataSet.counts``; each name is also a :mod:`gentwin.reference` key
GLUED_COUNTS = {
    "dataset_instances": "instances",
    "dataset_device_nodes": "device nodes",
    "dataset_relations": "unique relations",
    "dataset_train_instances": "train instances",
}


def glued_counts(dataset: DataSet) -> dict[str, float]:
    """The counts the chapter glues, as floats, by glue name."""
    counts = dataset.counts()
    return {name: float(counts[key]) for name, key in GLUED_COUNTS.items()}


def paper_comparison(dataset: DataSet):
    """Our counts beside the paper's (Table III's sensors and gateways, then the Section III.B counts): columns
    ``paper`` (as printed), ``this run``, ``where in the paper`` and ``same as the paper``."""
    counts = dataset.counts()
    rows = [(q, field_spec(f).paper, counts[key], "Table III", float(field_spec(f).paper))
            for q, f, key in (("IoT sensors", "n_sensors", "sensors"), ("gateways", "n_gateways", "gateways"))]
    rows += [(by_key(name).quantity, by_key(name).paper_text, counts[key], by_key(name).where, by_key(name).paper)
             for name, key in GLUED_COUNTS.items()]
    table = pd.DataFrame(rows, columns=["quantity", "paper", "this run", "where in the paper", "paper value"])
    table["same as the paper"] = table["this run"] == table["paper value"]
    return table.drop(columns="paper value").set_index("quantity")


def comparison_note(comparison, config: TopologyConfig, paper: TopologyConfig | None = None) -> str:
    """What :func:`paper_comparison`'s table says: every count equals the paper's, or which differ and which
    data-set parameters of ``config`` differ from ``paper`` (default: the paper profile's)."""
    if comparison["same as the paper"].all():
        return "Every count equals the paper's."
    paper = PROFILES["paper"].topology if paper is None else paper
    return (f"These counts differ from the paper's: {', '.join(comparison.index[~comparison['same as the paper']])}.\n"
            "This execution changed the data-set parameters: " + ", ".join(
                f"{k} = {v} (paper profile: {getattr(paper, k)})" for k, v in vars(config).items()
                if v != getattr(paper, k)))


def relation_makeup(topology: Topology):
    """Relations counted by (type, head kind, tail kind), those counted in eq. (3)'s M first."""
    kind = {nid: node.kind for nid, node in topology.nodes.items()}
    relations = pd.DataFrame([(r.type, kind[r.head], kind[r.tail]) for r in topology.relations],
                             columns=["relation", "from", "to"])
    table = relations.value_counts().rename("count").reset_index()
    table["counted in M (head is a device)"] = table["from"].isin(["sensor", "gateway"])
    return table.sort_values(["counted in M (head is a device)", "count"], ascending=False, ignore_index=True)


def relation_formula(makeup, config: TopologyConfig, unique: int) -> str:
    """The generator's relation count ``2 n_sensors + n_gateways + n_gateway_links`` beside the relations of
    :func:`relation_makeup` counted in M and ``unique``, the data set's unique relations."""
    expected = 2 * config.n_sensors + config.n_gateways + config.n_gateway_links
    counted = int(makeup.loc[makeup["counted in M (head is a device)"], "count"].sum())
    return (f"2 x n_sensors + n_gateways + n_gateway_links = 2 x {config.n_sensors} + {config.n_gateways} + "
            f"{config.n_gateway_links} = {expected}; counted in the generated graph: {counted}; unique: {unique}")


def gateway_degrees(topology: Topology):
    """One row per gateway: its service and d_i, the sensors connected to it (Table II, eq. 2)."""
    return pd.DataFrame([{"gateway": gid, "service": topology.nodes[gid].service, "d_i": d}
                         for gid, d in topology.gateway_degrees().items()])


def degree_summary(degrees) -> str:
    """Mean, least and largest d_i of :func:`gateway_degrees`' table, and how many gateways have no sensor."""
    return (f"d_i: mean {degrees.d_i.mean():.2f}, min {degrees.d_i.min()}, max {degrees.d_i.max()}; "
            f"gateways without any sensor: {(degrees.d_i == 0).sum()}")


def split_table(dataset: DataSet, fractions: tuple[float, ...]):
    """Instances, their share, the configured share, sensors and gateways of each split."""
    log = dataset.table()
    nodes = log.groupby(["split", "kind"]).node_id.nunique().unstack(fill_value=0)
    size = log.groupby("split").size()
    return pd.DataFrame({
        "instances": size, "share of instances": size / len(log), "configured share": dict(zip(SPLITS, fractions)),
        "sensors": nodes["sensor"], "gateways": nodes["gateway"],
    }).reindex(list(SPLITS))


def nodes_in_two_splits(dataset: DataSet) -> int:
    """How many (node, pair of splits) memberships overlap; 0 when the split is by node, as it must be."""
    log = dataset.table()
    members = {name: set(log.loc[log.split == name, "node_id"]) for name in SPLITS}
    return sum(len(members[a] & members[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:])


def _tree_positions(topology: Topology) -> dict[str, tuple[float, int]]:
    """Sensors in a row grouped by gateway, each parent centred over its children, one level per kind."""
    order: dict[str, list[str]] = {"city": [], "service": [], "gateway": [], "sensor": []}
    for node in sorted(topology.nodes.values(), key=lambda n: (n.service or "", n.gateway or "", n.id)):
        order[node.kind].append(node.id)
    x = {sid: float(k) for k, sid in enumerate(order["sensor"])}
    children = {"gateway": lambda n: [s for s in order["sensor"] if topology.nodes[s].gateway == n],
                "service": lambda n: [gw for gw in order["gateway"] if topology.nodes[gw].service == n],
                "city": lambda n: order["service"]}
    for level in ("gateway", "service", "city"):
        for k, nid in enumerate(order[level]):
            kids = [x[c] for c in children[level](nid)]
            x[nid] = sum(kids) / len(kids) if kids else float(k)
    depth = {"city": 3, "service": 2, "gateway": 1, "sensor": 0}
    return {nid: (x[nid], depth[kind]) for kind, ids in order.items() for nid in ids}


def _graph(nodes, relations, ids=None):
    """A networkx DiGraph of ``nodes`` (attribute ``kind``; only ``ids`` when given) and ``relations`` (``type``)."""
    g = nx.DiGraph()
    for nid in nodes if ids is None else ids:
        g.add_node(nid, kind=nodes[nid].kind)
    for r in relations:
        g.add_edge(r.head, r.tail, type=r.type)
    return g


def _finish(g, pos, ax: Any, title: str, node_size: int, colour: dict, handles: list, legend: dict) -> None:
    """Nodes coloured by kind, their labels, the legend and the title of a drawing."""
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=node_size, node_color=[colour[g.nodes[n]["kind"]] for n in g])
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=6)
    ax.legend(handles=handles, frameon=False, **legend)
    ax.set_title(title)
    ax.axis("off")


def draw_topology(topology: Topology, ax: Any, title: str) -> None:
    """Draw a (small) topology as a tree on ``ax``: grey sensor links, a curved fog link, dashed ``SERVES_IN``,
    dotted ``IN``, nodes coloured by kind."""
    import seaborn as sns

    pos = _tree_positions(topology)
    g = _graph(topology.nodes, topology.relations, pos)
    palette = dict(zip(NODE_KINDS, sns.color_palette("colorblind", len(NODE_KINDS))))
    edge_style = {
        "sensor-gateway": dict(style="solid", edge_color="0.45", width=1.4),
        "gateway-gateway": dict(style="solid", edge_color=palette["gateway"], width=2.0,
                                connectionstyle="arc3,rad=0.35"),
        "SERVES_IN": dict(style="dashed", edge_color="0.75", width=0.8),
        "IN": dict(style="dotted", edge_color="0.55", width=1.0),
    }
    for name, style in edge_style.items():
        head, _, tail = name.partition("-")
        edges = [(u, v) for u, v, d in g.edges(data=True) if d["type"] == name or (
            tail and d["type"] == "CONNECTED_TO" and g.nodes[u]["kind"] == head and g.nodes[v]["kind"] == tail)]
        nx.draw_networkx_edges(g, pos, edgelist=edges, ax=ax, arrows=True, arrowsize=8, node_size=1000, **style)
    _finish(g, pos, ax, title, 1000, palette,
            [Line2D([], [], marker="o", linestyle="", color=palette[k], label=k) for k in NODE_KINDS],
            dict(loc="lower left", bbox_to_anchor=(1.0, 0.0), title="node kind"))


def dataset_files(folder: str | os.PathLike):
    """One row per file of a book data-set folder (:data:`gentwin.ingest.BOOK_FILES`): what it holds, its size
    in bytes, and the entities (JSON files) or log records (the log) in it."""
    folder = Path(folder)
    holds = {"normalized": "NGSI-LD entities, normalized", "keyValues": "NGSI-LD entities, keyValues",
             "log": "sensor log", "settings": "settings it was written from"}
    rows = []
    for key, name in BOOK_FILES.items():
        text = (folder / name).read_text(encoding="utf-8")
        entities = len(json.loads(text)) if key in FORMS else None
        records = sum(1 for line in text.splitlines() if line.strip() and not line.startswith("#")) \
            if key == "log" else None
        rows.append((name, holds[key], (folder / name).stat().st_size, entities, records))
    columns = ["file", "holds", "bytes", "entities", "log records"]
    return pd.DataFrame(rows, columns=columns, dtype=object).astype({"bytes": int})  # object: counts stay ints


def entity_excerpt(folder: str | os.PathLike, form: str, node: Any) -> str:
    """One node's entity as the ``form`` file of a book data-set folder holds it, one attribute a line (the
    ``@context`` IRIs left out)."""
    entities = json.loads((Path(folder) / BOOK_FILES[form]).read_text(encoding="utf-8"))
    entity = next(e for e in entities if e["id"] == to_urn(node))
    lines = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in entity.items() if k != "@context"]
    return "{\n" + ",\n".join(lines) + "\n}"


def encodings_read_back(folder: str | os.PathLike, topology: Topology) -> dict[str, bool]:
    """Whether each encoding's file of a book data-set folder reads back to exactly ``topology``."""
    return {form: read_entities(Path(folder) / BOOK_FILES[form]) == topology for form in FORMS}


def graph_counts(graph: EntityGraph) -> tuple[Any, Any]:
    """Nodes by kind (with their NGSI types) and relations by type (with the properties they came from), in
    :data:`gentwin.sdm.GRAPH_KINDS` / :data:`~gentwin.sdm.GRAPH_RELATIONS` order."""
    nodes = pd.DataFrame([(n.kind, n.type) for n in graph.nodes.values()], columns=["kind", "type"])
    rels = pd.DataFrame([(r.type, r.via) for r in graph.relations], columns=["relation", "via"])

    def summary(frame, key, other, order, names):
        rows = [(k, int((frame[key] == k).sum()), ", ".join(sorted(set(frame.loc[frame[key] == k, other]))))
                for k in order if (frame[key] == k).any()]
        return pd.DataFrame(rows, columns=names)

    return (summary(nodes, "kind", "type", GRAPH_KINDS, ["kind", "nodes", "NGSI types"]),
            summary(rels, "relation", "via", GRAPH_RELATIONS, ["relation", "count", "from the properties"]))


def draw_entity_graph(graph: EntityGraph, ax: Any, title: str) -> None:
    """Draw a (small) entity graph on ``ax``: nodes coloured by kind, edges by relation type (a Kamada-Kawai
    layout, which draws nothing at random)."""
    import seaborn as sns

    g = _graph(graph.nodes, graph.relations)
    kinds = [k for k in GRAPH_KINDS if any(n.kind == k for n in graph.nodes.values())]
    types = [t for t in GRAPH_RELATIONS if any(r.type == t for r in graph.relations)]
    node_colour = dict(zip(kinds, sns.color_palette("colorblind", len(kinds))))
    edge_colour = dict(zip(types, sns.color_palette("dark", len(types))))
    pos = nx.kamada_kawai_layout(g.to_undirected())
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=8, node_size=500, width=1.2,
                           edge_color=[edge_colour[d["type"]] for _, _, d in g.edges(data=True)])
    _finish(g, pos, ax, title, 500, node_colour,
            [Line2D([], [], marker="o", linestyle="", color=node_colour[k], label=k) for k in kinds]
            + [Line2D([], [], color=edge_colour[t], label=t) for t in types],
            dict(loc="center left", bbox_to_anchor=(1.0, 0.5), title="node kind / relation", fontsize=8))


def sample_log(topology: Topology) -> list[Instance]:
    """A log for a topology read without one: every sensor and gateway reports once, active, in node order, one
    second apart (all in the training split)."""
    return [Instance(k, float(k), node.id, True, "train") for k, node in enumerate(topology.devices())]


def sample_pools(topology: Topology, pooling: Any):
    """Eqs. (1)-(4) on a topology read without a log (:func:`sample_log`): per sensor and gateway its eq. (2)
    pair, relations N, priority p and pool under the readings of ``pooling`` (a
    :class:`gentwin.config.PoolingConfig`)."""
    table = pool_snapshot(DataSet(topology, sample_log(topology)), **pool_readings(pooling)).table()
    return table[["node", "kind", "k", "v", "N", "p", "pool"]]

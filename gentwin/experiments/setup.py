"""The set-up chapter's tables: the data set's counts beside the paper's, the relation make-up, gateway degrees and the split.

Each function takes a generated :class:`~gentwin.topology.DataSet` (or its
topology) and returns a tidy :class:`pandas.DataFrame`; :func:`draw_topology`
draws a small topology as a tree.  Nothing here is typed from the paper: the
paper's numbers come from :mod:`gentwin.config` (Table III) and
:mod:`gentwin.reference` (Section III.B).
"""

from __future__ import annotations

from typing import Any

from ..config import field_spec
from ..reference import by_key
from ..topology import NODE_KINDS, SPLITS, DataSet, Topology

__all__ = ["GLUED_COUNTS", "glued_counts", "paper_comparison", "relation_makeup", "gateway_degrees",
           "split_table", "nodes_in_two_splits", "draw_topology"]

#: glue name -> key of :meth:`gentwin.topology.DataSet.counts`; each name is also a :mod:`gentwin.reference` key
GLUED_COUNTS = {
    "dataset_instances": "instances",
    "dataset_device_nodes": "device nodes",
    "dataset_relations": "unique relations",
    "dataset_train_instances": "train instances",
}


def glued_counts(dataset: DataSet) -> dict[str, float]:
    """The counts the chapter glues, as floats, by glue name.

    >>> from gentwin.config import resolve
    >>> from gentwin.topology import generate_dataset
    >>> glued_counts(generate_dataset(resolve("quick").topology))
    {'dataset_instances': 60.0, 'dataset_device_nodes': 30.0, 'dataset_relations': 57.0, 'dataset_train_instances': 42.0}
    """
    counts = dataset.counts()
    return {name: float(counts[key]) for name, key in GLUED_COUNTS.items()}


def paper_comparison(dataset: DataSet):
    """Our counts beside the paper's: sensors and gateways (Table III), then the Section III.B counts.

    Columns ``quantity`` (index), ``paper`` (as printed), ``this run`` and
    ``where in the paper``, and ``same as the paper``.
    """
    import pandas as pd

    counts = dataset.counts()
    rows = [("IoT sensors", field_spec("n_sensors").paper, counts["sensors"], "Table III",
             float(field_spec("n_sensors").paper)),
            ("gateways", field_spec("n_gateways").paper, counts["gateways"], "Table III",
             float(field_spec("n_gateways").paper))]
    rows += [(by_key(name).quantity, by_key(name).paper_text, counts[key], by_key(name).where, by_key(name).paper)
             for name, key in GLUED_COUNTS.items()]
    table = pd.DataFrame(rows, columns=["quantity", "paper", "this run", "where in the paper", "paper value"])
    table["same as the paper"] = table["this run"] == table["paper value"]
    return table.drop(columns="paper value").set_index("quantity")


def relation_makeup(topology: Topology):
    """Relations counted by (type, head kind, tail kind), those counted in eq. (3)'s M first.

    >>> from gentwin.config import TopologyConfig
    >>> from gentwin.topology import generate_topology
    >>> t = relation_makeup(generate_topology(TopologyConfig(n_services=1, n_gateways=2, n_sensors=3,
    ...                                                      n_gateway_links=1, n_instances=5)))
    >>> t[["relation", "from", "to", "count"]].values.tolist()  # doctest: +NORMALIZE_WHITESPACE
    [['CONNECTED_TO', 'sensor', 'gateway', 3], ['SERVES_IN', 'sensor', 'service', 3],
     ['SERVES_IN', 'gateway', 'service', 2], ['CONNECTED_TO', 'gateway', 'gateway', 1],
     ['IN', 'service', 'city', 1]]
    """
    import pandas as pd

    kind = {nid: node.kind for nid, node in topology.nodes.items()}
    relations = pd.DataFrame([(r.type, kind[r.head], kind[r.tail]) for r in topology.relations],
                             columns=["relation", "from", "to"])
    table = relations.value_counts().rename("count").reset_index()
    table["counted in M (head is a device)"] = table["from"].isin(["sensor", "gateway"])
    return table.sort_values(["counted in M (head is a device)", "count"], ascending=False, ignore_index=True)


def gateway_degrees(topology: Topology):
    """One row per gateway: its service and d_i, the sensors connected to it (Table II, eq. 2)."""
    import pandas as pd

    return pd.DataFrame([{"gateway": gid, "service": topology.nodes[gid].service, "d_i": d}
                         for gid, d in topology.gateway_degrees().items()])


def split_table(dataset: DataSet, fractions: tuple[float, ...]):
    """Instances, their share, the configured share, sensors and gateways of each split."""
    import pandas as pd

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


def draw_topology(topology: Topology, ax: Any, title: str) -> None:
    """Draw a (small) topology as a tree on ``ax``: grey sensor links, a curved fog link, dashed
    ``SERVES_IN``, dotted ``IN``, nodes coloured by kind."""
    import networkx as nx
    import seaborn as sns
    from matplotlib.lines import Line2D

    pos = _tree_positions(topology)
    g = nx.DiGraph()
    for nid in pos:
        g.add_node(nid, kind=topology.nodes[nid].kind)
    for r in topology.relations:
        g.add_edge(r.head, r.tail, type=r.type)
    palette = dict(zip(NODE_KINDS, sns.color_palette("colorblind", len(NODE_KINDS))))
    edge_style = {
        "sensor-gateway": dict(style="solid", edge_color="0.45", width=1.4),
        "gateway-gateway": dict(style="solid", edge_color=palette["gateway"], width=2.0,
                                connectionstyle="arc3,rad=0.35"),
        "SERVES_IN": dict(style="dashed", edge_color="0.75", width=0.8),
        "IN": dict(style="dotted", edge_color="0.55", width=1.0),
    }
    for name, style in edge_style.items():
        if name in ("SERVES_IN", "IN"):
            edges = [(u, v) for u, v, d in g.edges(data=True) if d["type"] == name]
        else:
            head, tail = name.split("-")
            edges = [(u, v) for u, v, d in g.edges(data=True)
                     if d["type"] == "CONNECTED_TO" and g.nodes[u]["kind"] == head and g.nodes[v]["kind"] == tail]
        nx.draw_networkx_edges(g, pos, edgelist=edges, ax=ax, arrows=True, arrowsize=8, node_size=1000, **style)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=1000, node_color=[palette[g.nodes[n]["kind"]] for n in g.nodes])
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=6)
    ax.legend(handles=[Line2D([], [], marker="o", linestyle="", color=palette[k], label=k) for k in NODE_KINDS],
              loc="lower left", bbox_to_anchor=(1.0, 0.0), frameon=False, title="node kind")
    ax.set_title(title)
    ax.axis("off")

"""The knowledge-graph twin: schema, versions and two interchangeable stores.

Section II.B of the paper stores the adaptive twin models "in the form of
knowledge graphs" in Neo4j (Fig. 4: labelled entities such as gateways,
sensors and smart-city services, linked by typed relations, each entity with
its metadata); the what-if module of Algorithm 1 (lines 15-21) then sends
*version requests* to that database.  This module gives the twin

* a **schema**: node labels ``Sensor``, ``Gateway``, ``Service``, ``SmartCity``
  (one per kind of ``gentwin.topology.NODE_KINDS``), relation types
  ``CONNECTED_TO``, ``SERVES_IN``, ``IN`` and scalar node metadata;
* **versions**: every update (:meth:`TwinStore.commit` or
  :meth:`TwinStore.rebuild`) creates a new numbered (optionally named) version;
  :meth:`TwinStore.request` answers a *version request*, the subgraph a
  scenario needs at the latest or at a chosen version.  An update is atomic: if
  it fails half way the previous version is untouched;
* **two backends** behind one interface: :class:`NetworkxStore` (in process,
  persisted to an append-only journal so a twin survives a restart) and
  :class:`Neo4jStore` (a real Neo4j server through the official driver).

How versions are kept
---------------------
Every entity state and every relation is a *record* valid for the versions
``v_from <= v < v_to`` (``v_to`` open while the record is current).  An update
ends the records it changes and opens new ones, so its cost grows with the
changed part of the graph, not with the whole graph.  ``keep_versions`` limits
the history (``1`` keeps only the latest version, which is what a twin that is
rebuilt from scratch needs).

Examples
--------
>>> from gentwin.topology import Relation
>>> store = NetworkxStore(twin="demo")
>>> v1 = store.commit(ChangeSet(
...     upsert_nodes=(TwinNode("GW1", "gateway", {"name": "gateway 1"}), TwinNode("S1", "sensor")),
...     upsert_relations=(Relation("S1", "CONNECTED_TO", "GW1"),)), name="initial")
>>> v2 = store.commit(ChangeSet(delete_nodes=("S1",)))
>>> (v1.number, v2.number), sorted(store.request().nodes), sorted(store.request(version="initial").nodes)
((1, 2), ['GW1'], ['GW1', 'S1'])
"""

from __future__ import annotations

import abc
import json
import math
import os
import re
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

from .topology import NODE_KINDS, RELATION_TYPES, Node, Relation, Topology

__all__ = [
    "LABELS",
    "RELATION_TYPES",
    "RESERVED_KEYS",
    "ENV_URI",
    "ENV_USER",
    "ENV_PASSWORD",
    "SchemaError",
    "VersionError",
    "TwinStoreError",
    "TwinNode",
    "ChangeSet",
    "VersionInfo",
    "TwinRequirement",
    "Subgraph",
    "TwinStore",
    "NetworkxStore",
    "Neo4jStore",
    "label_for",
    "relation_type_for",
    "twin_from_topology",
    "node_to_twin",
    "diff",
    "choose_backend",
    "open_store",
]

#: Node label of each entity kind (the allow-list: nothing else is ever formatted into Cypher).
LABELS: dict[str, str] = {"sensor": "Sensor", "gateway": "Gateway", "service": "Service", "city": "SmartCity"}
#: Metadata keys the stores use themselves; node metadata may not use them.
RESERVED_KEYS: frozenset[str] = frozenset({"uid", "twin", "id", "kind", "v_from", "v_to"})
#: Environment variables the Neo4j backend reads (their values are never printed or stored).
ENV_URI, ENV_USER, ENV_PASSWORD = "NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD"

_TWIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INT64 = (-(2**63), 2**63 - 1)
Scalar = str | int | float | bool

assert set(LABELS) == set(NODE_KINDS)


class SchemaError(ValueError):
    """A node, relation, metadata entry or change set breaks the twin's schema."""


class VersionError(ValueError):
    """A version that does not exist (or was pruned), or a version name used twice."""


class TwinStoreError(RuntimeError):
    """The store itself failed: server unreachable, credentials rejected, corrupt journal."""


# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------


def label_for(kind: str) -> str:
    """The node label of an entity kind, from the allow-list :data:`LABELS`.

    >>> label_for("city")
    'SmartCity'
    >>> label_for("Sensor) DETACH DELETE (n")
    Traceback (most recent call last):
    ...
    gentwin.graph.SchemaError: kind = 'Sensor) DETACH DELETE (n': must be one of sensor, gateway, service, city
    """
    try:
        return LABELS[kind]
    except (KeyError, TypeError):
        raise SchemaError(f"kind = {kind!r}: must be one of {', '.join(LABELS)}") from None


def relation_type_for(rel_type: str) -> str:
    """A relation type checked against the allow-list ``RELATION_TYPES``.

    >>> relation_type_for("SERVES_IN")
    'SERVES_IN'
    >>> relation_type_for("IN`]->() DETACH DELETE n//")
    Traceback (most recent call last):
    ...
    gentwin.graph.SchemaError: relation type = 'IN`]->() DETACH DELETE n//': must be one of CONNECTED_TO, SERVES_IN, IN
    """
    if not isinstance(rel_type, str) or rel_type not in RELATION_TYPES:
        raise SchemaError(f"relation type = {rel_type!r}: must be one of {', '.join(RELATION_TYPES)}")
    return rel_type


def _check_value(node_id: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or isinstance(value, str):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise SchemaError(f"node {node_id!r}: metadata {key!r} = {value!r}: integers must fit in 64 bits")
        return
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise SchemaError(f"node {node_id!r}: metadata {key!r} = {value!r}: must be a finite number")
        return
    raise SchemaError(
        f"node {node_id!r}: metadata {key!r} = {value!r}: must be a string, integer, float or boolean"
    )


@dataclass(frozen=True)
class TwinNode:
    """One entity state of the knowledge graph: id, kind (label) and scalar metadata.

    ``meta`` may be given as a mapping; it is stored as a sorted tuple of
    ``(key, value)`` pairs so that nodes are hashable and compare by value.
    Ids and metadata are arbitrary strings (they are only ever passed to a
    database as query parameters).

    >>> n = TwinNode("AQ-S001", "sensor", {"category": "PM2.5 sensor", "active": True})
    >>> n.label, n.metadata
    ('Sensor', {'active': True, 'category': 'PM2.5 sensor'})
    >>> TwinNode("x", "sensor", {"v_to": 3})
    Traceback (most recent call last):
    ...
    gentwin.graph.SchemaError: node 'x': metadata key 'v_to' is reserved (reserved: id, kind, twin, uid, v_from, v_to)
    """

    id: str
    kind: str
    meta: Any = ()

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise SchemaError(f"node id = {self.id!r}: must be a non-empty string")
        if self.kind not in LABELS:
            raise SchemaError(f"node {self.id!r}: kind = {self.kind!r}: must be one of {', '.join(LABELS)}")
        items = self.meta.items() if isinstance(self.meta, Mapping) else self.meta
        try:
            pairs = [(k, v) for k, v in items]
        except (TypeError, ValueError):
            raise SchemaError(f"node {self.id!r}: meta = {self.meta!r}: must be a mapping of key to value") from None
        seen: set[str] = set()
        for key, value in pairs:
            if not isinstance(key, str) or not key:
                raise SchemaError(f"node {self.id!r}: metadata key {key!r}: must be a non-empty string")
            if key in RESERVED_KEYS:
                raise SchemaError(
                    f"node {self.id!r}: metadata key {key!r} is reserved (reserved: {', '.join(sorted(RESERVED_KEYS))})"
                )
            if key in seen:
                raise SchemaError(f"node {self.id!r}: metadata key {key!r} appears twice")
            seen.add(key)
            _check_value(self.id, key, value)
        object.__setattr__(self, "meta", tuple(sorted(pairs, key=lambda kv: kv[0])))

    @property
    def label(self) -> str:
        """The node label (``Sensor``, ``Gateway``, ``Service`` or ``SmartCity``)."""
        return LABELS[self.kind]

    @property
    def metadata(self) -> dict[str, Scalar]:
        """The metadata as a dict."""
        return dict(self.meta)

    def get(self, key: str, default: Any = None) -> Any:
        """One metadata value."""
        for k, v in self.meta:
            if k == key:
                return v
        return default


def _as_relation(rel: Any, where: str) -> Relation:
    if isinstance(rel, Relation):
        relation_type_for(rel.type)
        return rel
    raise SchemaError(f"{where}: {rel!r} is not a gentwin.topology.Relation")


@dataclass(frozen=True)
class ChangeSet:
    """What one update changes: nodes to add or update, nodes to delete, relations to add or delete.

    Deleting a node also ends its relations (like Cypher's ``DETACH DELETE``).
    Upserting a node whose id exists replaces its metadata (its kind may not
    change); upserting a relation that exists is a no-op.
    """

    upsert_nodes: tuple[TwinNode, ...] = ()
    delete_nodes: tuple[str, ...] = ()
    upsert_relations: tuple[Relation, ...] = ()
    delete_relations: tuple[Relation, ...] = ()

    def __post_init__(self) -> None:
        for name in ("upsert_nodes", "delete_nodes", "upsert_relations", "delete_relations"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise SchemaError(f"{name} = {value!r}: must be a sequence")
            object.__setattr__(self, name, tuple(value))
        ids: set[str] = set()
        for node in self.upsert_nodes:
            if not isinstance(node, TwinNode):
                raise SchemaError(f"upsert_nodes: {node!r} is not a TwinNode")
            if node.id in ids:
                raise SchemaError(f"upsert_nodes: node id {node.id!r} appears twice")
            ids.add(node.id)
        for nid in self.delete_nodes:
            if not isinstance(nid, str) or not nid:
                raise SchemaError(f"delete_nodes: node id = {nid!r}: must be a non-empty string")
            if nid in ids:
                raise SchemaError(f"delete_nodes: node id {nid!r} is also in upsert_nodes")
        if len(set(self.delete_nodes)) != len(self.delete_nodes):
            raise SchemaError(f"delete_nodes: an id appears twice in {list(self.delete_nodes)!r}")
        ups = [_as_relation(r, "upsert_relations") for r in self.upsert_relations]
        dels = [_as_relation(r, "delete_relations") for r in self.delete_relations]
        both = set(ups) & set(dels)
        if both:
            raise SchemaError(f"relation {sorted(both)[0].as_text()} is both upserted and deleted")
        gone = set(self.delete_nodes)
        for r in ups:
            for end in (r.head, r.tail):
                if end in gone:
                    raise SchemaError(f"upsert_relations: {r.as_text()} uses node {end!r}, which is deleted")

    def __len__(self) -> int:
        return len(self.upsert_nodes) + len(self.delete_nodes) + len(self.upsert_relations) + len(self.delete_relations)


@dataclass(frozen=True)
class VersionInfo:
    """One twin version: its number, optional name, the parts it re-versioned, when, and how much it wrote."""

    number: int
    name: str | None
    parts: tuple[str, ...]
    created: float  #: seconds since the epoch
    n_written: int  #: records opened or ended by this version


@dataclass(frozen=True)
class TwinRequirement:
    """The part of the twin a scenario needs (Algorithm 1, line 17).

    ``seeds`` are entity ids; the requirement is every entity within ``hops``
    relations of a seed (relations followed in both directions, only those of
    ``relation_types``) and the relations among them.  No seeds means the whole
    twin.
    """

    seeds: tuple[str, ...] = ()
    hops: int = 1
    relation_types: tuple[str, ...] = RELATION_TYPES

    def __post_init__(self) -> None:
        if isinstance(self.seeds, str):
            raise SchemaError(f"seeds = {self.seeds!r}: must be a sequence of node ids, not one string")
        object.__setattr__(self, "seeds", tuple(dict.fromkeys(self.seeds)))
        for s in self.seeds:
            if not isinstance(s, str) or not s:
                raise SchemaError(f"seeds: node id = {s!r}: must be a non-empty string")
        if isinstance(self.hops, bool) or not isinstance(self.hops, int) or not 0 <= self.hops <= 8:
            raise SchemaError(f"hops = {self.hops!r}: must be an integer in 0..8")
        if isinstance(self.relation_types, str):
            raise SchemaError(f"relation_types = {self.relation_types!r}: must be a sequence of relation types")
        object.__setattr__(self, "relation_types", tuple(relation_type_for(t) for t in self.relation_types))


@dataclass(frozen=True)
class Subgraph:
    """The answer to a version request: the entities and relations of a requirement at one version."""

    version: int
    nodes: Mapping[str, TwinNode]
    relations: frozenset[Relation]
    missing: tuple[str, ...] = ()  #: seeds of the requirement that do not exist at this version

    def to_networkx(self):
        """A :class:`networkx.MultiDiGraph` (node attributes: kind, label and the metadata)."""
        import networkx as nx

        g = nx.MultiDiGraph(version=self.version)
        for node in self.nodes.values():
            g.add_node(node.id, kind=node.kind, label=node.label, **node.metadata)
        for rel in sorted(self.relations):
            g.add_edge(rel.head, rel.tail, key=rel.type, type=rel.type)
        return g

    def same_content(self, other: "Subgraph") -> bool:
        """Same entities (with metadata) and relations, whatever the version numbers."""
        return dict(self.nodes) == dict(other.nodes) and self.relations == other.relations


# ---------------------------------------------------------------------------
# Building the twin from the Physical Space
# ---------------------------------------------------------------------------

_NODE_FIELDS = ("name", "service", "gateway", "category", "sdm_type", "controlled_property", "latitude", "longitude")


def twin_from_topology(
    topology: Topology, presence: Mapping[str, bool] | None = None
) -> tuple[dict[str, TwinNode], set[Relation]]:
    """The knowledge graph of a topology: one :class:`TwinNode` per entity and every relation.

    Metadata are the entity's non-empty fields of :class:`gentwin.topology.Node`;
    devices also get ``active`` (the presence of eq. 1, from ``presence``,
    default True) and gateways ``n_sensors`` (d_i, the sensors connected to them).

    >>> from gentwin.config import TopologyConfig
    >>> from gentwin.topology import generate_topology
    >>> nodes, rels = twin_from_topology(generate_topology(TopologyConfig(n_gateways=3, n_sensors=6,
    ...     n_gateway_links=0, n_instances=10)))
    >>> len(nodes), len(rels), nodes["AQ-GW01"].get("n_sensors")  # 1 city + 3 services + 3 gw + 6 s; 3 IN + 3 + 2*6
    (13, 18, 2)
    """
    presence = presence or {}
    degrees = topology.gateway_degrees()
    nodes = {
        n.id: node_to_twin(n, presence.get(n.id, True), degrees.get(n.id, 0)) for n in topology.nodes.values()
    }
    return nodes, set(topology.relations)


def node_to_twin(node: Node, active: bool = True, n_sensors: int = 0) -> TwinNode:
    """One topology node as a knowledge-graph entity (see :func:`twin_from_topology`).

    >>> node_to_twin(Node("GW", "gateway", service="AQ"), active=False, n_sensors=3).metadata
    {'active': False, 'n_sensors': 3, 'service': 'AQ'}
    """
    meta: dict[str, Scalar] = {k: getattr(node, k) for k in _NODE_FIELDS if getattr(node, k) is not None}
    if node.kind in ("sensor", "gateway"):
        meta["active"] = bool(active)
    if node.kind == "gateway":
        meta["n_sensors"] = int(n_sensors)
    return TwinNode(node.id, node.kind, meta)


def diff(
    old_nodes: Mapping[str, TwinNode],
    old_relations: Iterable[Relation],
    new_nodes: Mapping[str, TwinNode],
    new_relations: Iterable[Relation],
    *,
    only: Iterable[str] | None = None,
) -> ChangeSet:
    """The change set that turns the old graph into the new one.

    With ``only``, just those entity ids (and the relations they are the head
    of) are compared: the cost then grows with ``len(only)``, not with the graph.

    >>> a = {"G": TwinNode("G", "gateway"), "S": TwinNode("S", "sensor", {"active": True})}
    >>> b = {"G": TwinNode("G", "gateway"), "S": TwinNode("S", "sensor", {"active": False})}
    >>> cs = diff(a, [Relation("S", "CONNECTED_TO", "G")], b, [])
    >>> [n.id for n in cs.upsert_nodes], cs.delete_relations
    (['S'], (Relation(head='S', type='CONNECTED_TO', tail='G'),))
    """
    old_r = old_relations if isinstance(old_relations, (set, frozenset)) else set(old_relations)
    new_r = new_relations if isinstance(new_relations, (set, frozenset)) else set(new_relations)
    if only is None:
        ids = set(old_nodes) | set(new_nodes)
        rel_old, rel_new = old_r, new_r
    else:
        ids = set(only)
        rel_old = {r for r in old_r if r.head in ids}
        rel_new = {r for r in new_r if r.head in ids}
    upsert = [new_nodes[i] for i in sorted(ids) if i in new_nodes and old_nodes.get(i) != new_nodes[i]]
    delete = [i for i in sorted(ids) if i in old_nodes and i not in new_nodes]
    gone = set(delete)
    return ChangeSet(
        upsert_nodes=tuple(upsert),
        delete_nodes=tuple(delete),
        upsert_relations=tuple(sorted(rel_new - rel_old)),
        delete_relations=tuple(sorted(r for r in rel_old - rel_new if r.head not in gone and r.tail not in gone)),
    )


# ---------------------------------------------------------------------------
# The store interface
# ---------------------------------------------------------------------------


@dataclass
class _Plan:
    """The records one update ends and opens, after validation against the current version."""

    end_relations: list[Relation] = field(default_factory=list)
    delete_nodes: list[str] = field(default_factory=list)
    states: list[TwinNode] = field(default_factory=list)  # new states: new entities or changed metadata
    new_relations: list[Relation] = field(default_factory=list)

    @property
    def n_written(self) -> int:
        return len(self.end_relations) + len(self.delete_nodes) + len(self.states) + len(self.new_relations)


def _plan(
    changes: ChangeSet,
    current: Callable[[Sequence[str]], dict[str, TwinNode]],
    existing_relations: Callable[[Sequence[Relation]], set[Relation]],
    incident: Callable[[Sequence[str]], set[Relation]],
) -> _Plan:
    """Validate ``changes`` against the latest version and work out the records to write.

    The three call-backs read the latest version (a backend answers them from
    memory or with queries inside its write transaction).
    """
    ids = [n.id for n in changes.upsert_nodes] + list(changes.delete_nodes)
    ends = {r.head for r in changes.upsert_relations} | {r.tail for r in changes.upsert_relations}
    cur = current(sorted(set(ids) | ends))
    for nid in changes.delete_nodes:
        if nid not in cur:
            raise SchemaError(f"delete_nodes: node {nid!r} is not in the latest version of the twin")
    states: list[TwinNode] = []
    for node in changes.upsert_nodes:
        old = cur.get(node.id)
        if old is not None and old.kind != node.kind:
            raise SchemaError(f"node {node.id!r}: kind = {node.kind!r}, but the twin holds it as {old.kind!r}")
        if old != node:
            states.append(node)
    after = (set(cur) - set(changes.delete_nodes)) | {n.id for n in changes.upsert_nodes}
    for r in changes.upsert_relations:
        for end, role in ((r.head, "head"), (r.tail, "tail")):
            if end not in after:
                raise SchemaError(f"upsert_relations: {r.as_text()}: {role} {end!r} is not a node of the twin")
    have = existing_relations(list(changes.upsert_relations) + list(changes.delete_relations))
    for r in changes.delete_relations:
        if r not in have:
            raise SchemaError(f"delete_relations: {r.as_text()} is not in the latest version of the twin")
    end_rel = set(changes.delete_relations) | incident(list(changes.delete_nodes))
    new_rel = [r for r in dict.fromkeys(changes.upsert_relations) if r not in have]
    return _Plan(sorted(end_rel), list(changes.delete_nodes), states, new_rel)


def _check_name(name: str | None) -> None:
    if name is not None and (not isinstance(name, str) or not name):
        raise VersionError(f"name = {name!r}: must be a non-empty string or None")


def _check_parts(parts: Sequence[str]) -> tuple[str, ...]:
    if isinstance(parts, str):
        raise SchemaError(f"parts = {parts!r}: must be a sequence of part names, not one string")
    out = tuple(parts)
    for p in out:
        if not isinstance(p, str) or not p:
            raise SchemaError(f"parts: {p!r} must be a non-empty string")
    return out


class TwinStore(abc.ABC):
    """A versioned knowledge-graph twin (the interface both backends implement).

    Parameters
    ----------
    twin : str
        The twin's name (letters, digits, ``_.-``); several twins can share one
        database without seeing each other.
    keep_versions : int or None
        How many versions stay requestable (None: all; 1: only the latest).
    """

    backend: ClassVar[str]

    def __init__(self, twin: str, keep_versions: int | None) -> None:
        if not isinstance(twin, str) or not _TWIN_NAME.match(twin):
            raise SchemaError(f"twin = {twin!r}: must be 1-64 letters, digits, '_', '.' or '-'")
        if keep_versions is not None and (
            isinstance(keep_versions, bool) or not isinstance(keep_versions, int) or keep_versions < 1
        ):
            raise SchemaError(f"keep_versions = {keep_versions!r}: must be an integer >= 1 or None")
        self.twin = twin
        self.keep_versions = keep_versions
        #: test hook: called with a step name between the writes of an update; raising there aborts it
        self._fault_hook: Callable[[str], None] | None = None

    def _checkpoint(self, step: str) -> None:
        if self._fault_hook is not None:
            self._fault_hook(step)

    # -- writing -------------------------------------------------------------
    @abc.abstractmethod
    def commit(self, changes: ChangeSet, *, name: str | None = None, parts: Sequence[str] = ()) -> VersionInfo:
        """Apply ``changes`` atomically as a new version (``parts``: what it re-versions, for the record)."""

    @abc.abstractmethod
    def rebuild(
        self, nodes: Iterable[TwinNode], relations: Iterable[Relation], *, name: str | None = None
    ) -> VersionInfo:
        """Replace the whole graph by ``nodes`` and ``relations`` as a new version (ends every current record)."""

    # -- reading -------------------------------------------------------------
    @abc.abstractmethod
    def versions(self) -> list[VersionInfo]:
        """The requestable versions, oldest first."""

    def latest(self) -> VersionInfo | None:
        """The latest version, or None while the twin is empty."""
        vs = self.versions()
        return vs[-1] if vs else None

    @abc.abstractmethod
    def request(self, requirement: TwinRequirement | None = None, *, version: int | str | None = None) -> Subgraph:
        """A version request: the subgraph of ``requirement`` at ``version`` (None: latest; int: number; str: name)."""

    # -- housekeeping --------------------------------------------------------
    @abc.abstractmethod
    def drop(self) -> None:
        """Delete this twin (all versions) from the store."""

    def close(self) -> None:
        """Release connections or files."""

    def __enter__(self) -> "TwinStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(twin={self.twin!r}, keep_versions={self.keep_versions!r})"

    @staticmethod
    def _version_arg(version: Any) -> int | str | None:
        if version is None or isinstance(version, str):
            return version
        if isinstance(version, bool) or not isinstance(version, int):
            raise VersionError(f"version = {version!r}: must be None, a version number or a version name")
        return version

    @staticmethod
    def _requirement_arg(requirement: Any) -> TwinRequirement:
        if requirement is None:
            return TwinRequirement()
        if not isinstance(requirement, TwinRequirement):
            raise SchemaError(f"requirement = {requirement!r}: must be a TwinRequirement or None")
        return requirement


def _bfs(adjacent: Callable[[str], Iterable[str]], seeds: Iterable[str], hops: int) -> set[str]:
    """Entities within ``hops`` steps of ``seeds``."""
    seen = set(seeds)
    frontier = list(seen)
    for _ in range(hops):
        nxt = []
        for u in frontier:
            for w in adjacent(u):
                if w not in seen:
                    seen.add(w)
                    nxt.append(w)
        if not nxt:
            break
        frontier = nxt
    return seen


# ---------------------------------------------------------------------------
# networkx backend
# ---------------------------------------------------------------------------

_JOURNAL_FORMAT = "gentwin-twin-journal"


def _node_json(n: TwinNode) -> list:
    return [n.id, n.kind, [[k, v] for k, v in n.meta]]


def _node_from_json(x: list) -> TwinNode:
    return TwinNode(x[0], x[1], tuple((k, v) for k, v in x[2]))


def _rel_json(r: Relation) -> list:
    return [r.head, r.type, r.tail]


class NetworkxStore(TwinStore):
    """The embedded twin: a :class:`networkx.MultiDiGraph` of the latest version plus the history.

    Parameters
    ----------
    twin, keep_versions
        See :class:`TwinStore`.
    path : str or os.PathLike, optional
        A journal file.  Every committed version is appended to it as one JSON
        line (and flushed to disk when ``durable``), and opening a store on an
        existing journal replays it, so the twin survives a restart.  A last
        line cut short by a crash is discarded, which leaves the previous
        version.  ``compact()`` rewrites the journal atomically as one snapshot.
    durable : bool
        ``os.fsync`` after every append.
    compact_every : int or None
        Compact automatically after this many appended versions.
    """

    backend = "networkx"

    def __init__(
        self,
        twin: str = "twin",
        *,
        keep_versions: int | None = None,
        path: str | os.PathLike | None = None,
        durable: bool = True,
        compact_every: int | None = 500,
    ) -> None:
        super().__init__(twin, keep_versions)
        import networkx as nx

        self._graph = nx.MultiDiGraph()
        self._node_hist: dict[str, list[tuple[int, int, TwinNode]]] = {}
        self._rel_hist: dict[Relation, list[tuple[int, int]]] = {}
        self._versions: list[VersionInfo] = []
        self._names: dict[str, int] = {}
        self._next = 1
        self._cache: tuple[int, Any] | None = None
        self.path = os.fspath(path) if path is not None else None
        self.durable = bool(durable)
        self.compact_every = compact_every
        self._appended = 0
        if self.path is not None:
            self._load()

    # -- reading the latest version (call-backs of _plan) ------------------------
    def _current(self, ids: Sequence[str]) -> dict[str, TwinNode]:
        nodes = self._graph.nodes
        return {i: nodes[i]["rec"] for i in ids if i in nodes}

    def _existing(self, rels: Sequence[Relation]) -> set[Relation]:
        return {r for r in rels if self._graph.has_edge(r.head, r.tail, key=r.type)}

    def _incident(self, ids: Sequence[str]) -> set[Relation]:
        g = self._graph
        out: set[Relation] = set()
        for u in ids:
            if u not in g:
                continue
            for _, t, k in g.out_edges(u, keys=True):
                out.add(Relation(u, k, t))
            for h, _, k in g.in_edges(u, keys=True):
                out.add(Relation(h, k, u))
        return out

    # -- writing ---------------------------------------------------------------
    def commit(self, changes: ChangeSet, *, name: str | None = None, parts: Sequence[str] = ()) -> VersionInfo:
        if not isinstance(changes, ChangeSet):
            raise SchemaError(f"changes = {changes!r}: must be a ChangeSet")
        _check_name(name)
        parts = _check_parts(parts)
        if name is not None and name in self._names:
            raise VersionError(f"name = {name!r}: version {self._names[name]} already has this name")
        plan = _plan(changes, self._current, self._existing, self._incident)
        info = VersionInfo(self._next, name, parts, time.time(), plan.n_written)
        record = {"op": "commit", "version": _version_json(info), "changes": _changes_json(changes)}
        self._transact(plan, info, record)
        return info

    def rebuild(
        self, nodes: Iterable[TwinNode], relations: Iterable[Relation], *, name: str | None = None
    ) -> VersionInfo:
        _check_name(name)
        if name is not None and name in self._names:
            raise VersionError(f"name = {name!r}: version {self._names[name]} already has this name")
        nodes = list(nodes)
        rels = list(dict.fromkeys(relations))
        cs = ChangeSet(upsert_nodes=tuple(nodes), upsert_relations=tuple(rels))  # validates
        ids = {n.id for n in nodes}
        for r in rels:
            for end, role in ((r.head, "head"), (r.tail, "tail")):
                if end not in ids:
                    raise SchemaError(f"relations: {r.as_text()}: {role} {end!r} is not one of the nodes")
        g = self._graph
        plan = _Plan(
            end_relations=[Relation(h, k, t) for h, t, k in g.edges(keys=True)],
            delete_nodes=list(g.nodes),
            states=list(cs.upsert_nodes),
            new_relations=rels,
        )
        info = VersionInfo(self._next, name, ("ALL",), time.time(), plan.n_written)
        record = {
            "op": "rebuild", "version": _version_json(info),
            "nodes": [_node_json(n) for n in nodes], "relations": [_rel_json(r) for r in rels],
        }
        self._transact(plan, info, record)
        return info

    def _transact(self, plan: _Plan, info: VersionInfo, record: dict | None) -> None:
        """Apply a plan all-or-nothing: an undo log rolls memory back, the journal is truncated back."""
        undo: list[Callable[[], None]] = []
        offset = None
        try:
            self._apply(plan, info.number, undo)
            self._versions.append(info)
            undo.append(self._versions.pop)
            if info.name is not None:
                self._names[info.name] = info.number
                undo.append(lambda n=info.name: self._names.pop(n))
            if record is not None and self.path is not None:
                offset = os.path.getsize(self.path)
                self._checkpoint("journal")
                self._append(record)
        except BaseException:
            for step in reversed(undo):
                step()
            if offset is not None:
                with open(self.path, "r+b") as fh:  # type: ignore[arg-type]
                    fh.truncate(offset)
            raise
        self._next = info.number + 1
        self._cache = None
        self._prune()
        if record is not None and self.compact_every and self._appended >= self.compact_every:
            self.compact()

    def _apply(self, plan: _Plan, v: int, undo: list[Callable[[], None]]) -> None:
        g = self._graph
        keep_history = self.keep_versions != 1
        for r in plan.end_relations:
            since = g.edges[r.head, r.tail, r.type]["since"]
            g.remove_edge(r.head, r.tail, key=r.type)
            undo.append(lambda r=r, s=since: g.add_edge(r.head, r.tail, key=r.type, since=s))
            if keep_history:
                self._rel_hist.setdefault(r, []).append((since, v))
                undo.append(lambda r=r: self._rel_hist[r].pop())
        self._checkpoint("relations-ended")
        for nid in plan.delete_nodes:
            data = dict(g.nodes[nid])
            g.remove_node(nid)  # its relations were ended above
            undo.append(lambda nid=nid, d=data: g.add_node(nid, **d))
            if keep_history:
                self._node_hist.setdefault(nid, []).append((data["since"], v, data["rec"]))
                undo.append(lambda nid=nid: self._node_hist[nid].pop())
        self._checkpoint("nodes-deleted")
        for node in plan.states:
            if node.id in g:
                data = dict(g.nodes[node.id])
                g.nodes[node.id].update(rec=node, since=v)
                undo.append(lambda nid=node.id, d=data: g.nodes[nid].update(d))
                if keep_history:
                    self._node_hist.setdefault(node.id, []).append((data["since"], v, data["rec"]))
                    undo.append(lambda nid=node.id: self._node_hist[nid].pop())
            else:
                g.add_node(node.id, rec=node, since=v)
                undo.append(lambda nid=node.id: g.remove_node(nid))
        self._checkpoint("nodes-written")
        for r in plan.new_relations:
            g.add_edge(r.head, r.tail, key=r.type, since=v)
            undo.append(lambda r=r: g.remove_edge(r.head, r.tail, key=r.type))
        self._checkpoint("relations-written")

    def _prune(self) -> None:
        if self.keep_versions is None or len(self._versions) <= self.keep_versions:
            return
        oldest = self._versions[-self.keep_versions].number
        for info in self._versions[: -self.keep_versions]:
            if info.name is not None:
                self._names.pop(info.name, None)
        del self._versions[: -self.keep_versions]
        for hist in (self._node_hist, self._rel_hist):
            for key in list(hist):
                kept = [rec for rec in hist[key] if rec[1] > oldest]
                if kept:
                    hist[key] = kept
                else:
                    del hist[key]

    # -- reading ---------------------------------------------------------------
    def versions(self) -> list[VersionInfo]:
        return list(self._versions)

    def _resolve(self, version: int | str | None) -> int:
        version = self._version_arg(version)
        if not self._versions:
            if version is None:
                return 0
            raise VersionError(f"version = {version!r}: the twin {self.twin!r} has no versions yet")
        if version is None:
            return self._versions[-1].number
        if isinstance(version, str):
            if version not in self._names:
                raise VersionError(f"version = {version!r}: no version of twin {self.twin!r} has this name")
            return self._names[version]
        if not self._versions[0].number <= version <= self._versions[-1].number:
            raise VersionError(
                f"version = {version}: twin {self.twin!r} holds versions "
                f"{self._versions[0].number}..{self._versions[-1].number}"
            )
        return version

    def _graph_at(self, v: int):
        """The graph of version ``v`` (the live graph for the latest, else rebuilt from the history)."""
        if not self._versions or v == self._versions[-1].number:
            return self._graph
        if self._cache is not None and self._cache[0] == v:
            return self._cache[1]
        import networkx as nx

        g = nx.MultiDiGraph()
        for nid, data in self._graph.nodes(data=True):
            if data["since"] <= v:
                g.add_node(nid, rec=data["rec"], since=data["since"])
        for nid, hist in self._node_hist.items():
            for a, b, rec in hist:
                if a <= v < b:
                    g.add_node(nid, rec=rec, since=a)
        for h, t, k, since in self._graph.edges(keys=True, data="since"):
            if since <= v:
                g.add_edge(h, t, key=k, since=since)
        for r, hist in self._rel_hist.items():
            for a, b in hist:
                if a <= v < b:
                    g.add_edge(r.head, r.tail, key=r.type, since=a)
        self._cache = (v, g)
        return g

    def request(self, requirement: TwinRequirement | None = None, *, version: int | str | None = None) -> Subgraph:
        req = self._requirement_arg(requirement)
        v = self._resolve(version)
        g = self._graph_at(v)
        types = set(req.relation_types)
        succ, pred = g._succ, g._pred  # adjacency dicts: u -> v -> {key: attrs}
        if req.seeds:
            present = [s for s in req.seeds if s in succ]
            missing = tuple(s for s in req.seeds if s not in succ)

            def adjacent(u: str) -> Iterator[str]:
                for w, keys in succ[u].items():
                    if not types.isdisjoint(keys):
                        yield w
                for w, keys in pred[u].items():
                    if not types.isdisjoint(keys):
                        yield w

            ids = _bfs(adjacent, present, req.hops)
        else:
            ids, missing = set(succ), ()
        nodes = {i: g.nodes[i]["rec"] for i in sorted(ids)}
        rels = frozenset(
            Relation(u, k, w) for u in ids for w, keys in succ[u].items() if w in ids for k in keys if k in types
        )
        return Subgraph(v, nodes, rels, missing)

    # -- persistence -----------------------------------------------------------
    def _header(self) -> dict:
        return {"format": _JOURNAL_FORMAT, "format_version": 1, "twin": self.twin}

    def _append(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
            fh.write(line)
            fh.flush()
            if self.durable:
                os.fsync(fh.fileno())
        self._appended += 1

    def _write_atomically(self, lines: list[dict]) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))  # type: ignore[arg-type]
        fd, tmp = tempfile.mkstemp(prefix=".twin-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for rec in lines:
                    fh.write(json.dumps(rec, allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n")
                fh.flush()
                if self.durable:
                    os.fsync(fh.fileno())
            os.replace(tmp, self.path)  # type: ignore[arg-type]
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def compact(self) -> None:
        """Rewrite the journal (atomically) as one snapshot of the requestable versions."""
        if self.path is None:
            return
        snap = {
            "op": "snapshot",
            "next": self._next,
            "versions": [_version_json(i) for i in self._versions],
            "nodes": [[_node_json(d["rec"]), d["since"]] for _, d in self._graph.nodes(data=True)],
            "relations": [[[h, k, t], s] for h, t, k, s in self._graph.edges(keys=True, data="since")],
            "node_hist": [[nid, [[a, b, _node_json(rec)] for a, b, rec in h]] for nid, h in self._node_hist.items()],
            "rel_hist": [[_rel_json(r), [[a, b] for a, b in h]] for r, h in self._rel_hist.items()],
        }
        self._write_atomically([self._header(), snap])
        self._appended = 0

    def _load(self) -> None:
        if not os.path.exists(self.path):  # type: ignore[arg-type]
            self._write_atomically([self._header()])
            return
        with open(self.path, "rb") as fh:  # type: ignore[arg-type]
            raw = fh.read()
        lines = raw.split(b"\n")
        torn = lines[-1] != b""  # the last line was cut short (no newline): an update that never finished
        body = lines[:-1]
        records = []
        for k, line in enumerate(body, start=1):
            try:
                records.append(json.loads(line))
            except ValueError:
                if k == len(body) and not torn:
                    torn = True
                    break
                raise TwinStoreError(f"journal {self.path}: line {k} is not valid JSON; the file is corrupt") from None
        if not records or records[0].get("format") != _JOURNAL_FORMAT:
            raise TwinStoreError(f"journal {self.path}: not a gentwin twin journal (no header line)")
        if records[0].get("twin") != self.twin:
            raise TwinStoreError(
                f"journal {self.path}: holds twin {records[0].get('twin')!r}, not twin = {self.twin!r}"
            )
        for rec in records[1:]:
            self._replay(rec)
        self._appended = len(records) - 1
        if torn:  # drop the unfinished line so later appends start on a clean line
            self._write_atomically(records[:1] + records[1:])

    def _replay(self, rec: dict) -> None:
        op = rec.get("op")
        if op == "snapshot":
            self._versions = [_version_from_json(x) for x in rec["versions"]]
            self._names = {i.name: i.number for i in self._versions if i.name is not None}
            self._next = rec["next"]
            g = self._graph
            g.clear()
            for node, since in rec["nodes"]:
                n = _node_from_json(node)
                g.add_node(n.id, rec=n, since=since)
            for (h, k, t), since in rec["relations"]:
                g.add_edge(h, t, key=k, since=since)
            self._node_hist = {nid: [(a, b, _node_from_json(n)) for a, b, n in h] for nid, h in rec["node_hist"]}
            self._rel_hist = {Relation(*r): [(a, b) for a, b in h] for r, h in rec["rel_hist"]}
            return
        info = _version_from_json(rec["version"])
        if info.number < self._next:  # already in the snapshot
            return
        if op == "commit":
            cs = _changes_from_json(rec["changes"])
            plan = _plan(cs, self._current, self._existing, self._incident)
        elif op == "rebuild":
            g = self._graph
            plan = _Plan(
                end_relations=[Relation(h, k, t) for h, t, k in g.edges(keys=True)],
                delete_nodes=list(g.nodes),
                states=[_node_from_json(x) for x in rec["nodes"]],
                new_relations=[Relation(*x) for x in rec["relations"]],
            )
        else:
            raise TwinStoreError(f"journal {self.path}: unknown record op = {op!r}")
        self._transact(plan, info, None)

    def drop(self) -> None:
        self._graph.clear()
        self._node_hist.clear()
        self._rel_hist.clear()
        self._versions.clear()
        self._names.clear()
        self._next = 1
        self._cache = None
        if self.path is not None and os.path.exists(self.path):
            os.unlink(self.path)


def _version_json(i: VersionInfo) -> dict:
    return {"number": i.number, "name": i.name, "parts": list(i.parts), "created": i.created, "n_written": i.n_written}


def _version_from_json(x: dict) -> VersionInfo:
    return VersionInfo(x["number"], x["name"], tuple(x["parts"]), x["created"], x["n_written"])


def _changes_json(cs: ChangeSet) -> dict:
    return {
        "upsert_nodes": [_node_json(n) for n in cs.upsert_nodes],
        "delete_nodes": list(cs.delete_nodes),
        "upsert_relations": [_rel_json(r) for r in cs.upsert_relations],
        "delete_relations": [_rel_json(r) for r in cs.delete_relations],
    }


def _changes_from_json(x: dict) -> ChangeSet:
    return ChangeSet(
        upsert_nodes=tuple(_node_from_json(n) for n in x["upsert_nodes"]),
        delete_nodes=tuple(x["delete_nodes"]),
        upsert_relations=tuple(Relation(*r) for r in x["upsert_relations"]),
        delete_relations=tuple(Relation(*r) for r in x["delete_relations"]),
    )


# ---------------------------------------------------------------------------
# Neo4j backend
# ---------------------------------------------------------------------------

#: Schema statements, all idempotent (``IF NOT EXISTS``).
_SCHEMA = (
    "CREATE CONSTRAINT gentwin_entity_uid IF NOT EXISTS FOR (e:TwinEntity) REQUIRE e.uid IS UNIQUE",
    "CREATE CONSTRAINT gentwin_version_uid IF NOT EXISTS FOR (v:TwinVersion) REQUIRE v.uid IS UNIQUE",
    "CREATE CONSTRAINT gentwin_version_name IF NOT EXISTS FOR (v:TwinVersion) REQUIRE v.name_uid IS UNIQUE",
    "CREATE CONSTRAINT gentwin_counter_twin IF NOT EXISTS FOR (c:TwinCounter) REQUIRE c.twin IS UNIQUE",
    "CREATE INDEX gentwin_entity_twin IF NOT EXISTS FOR (e:TwinEntity) ON (e.twin)",
    "CREATE INDEX gentwin_state_twin IF NOT EXISTS FOR (s:TwinState) ON (s.twin)",
    "CREATE INDEX gentwin_version_twin IF NOT EXISTS FOR (v:TwinVersion) ON (v.twin)",
)
_REL_PATTERN = "|".join(RELATION_TYPES)  # every part comes from the allow-list


def _uid(twin: str, node_id: str) -> str:
    return f"{twin}/{node_id}"


def _batches(rows: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for k in range(0, len(rows), size):
        yield rows[k:k + size]


class Neo4jStore(TwinStore):
    """The twin in a Neo4j 5 database, through the official ``neo4j`` driver.

    Layout: one ``(:TwinEntity:<Label> {uid, twin, id, kind})`` per entity,
    its metadata in ``(:TwinState {twin, v_from, v_to, ...metadata})`` nodes
    linked by ``HAS_STATE``, the knowledge-graph relations between entities as
    ``CONNECTED_TO`` / ``SERVES_IN`` / ``IN`` relationships with ``v_from`` and
    ``v_to``, and one ``(:TwinVersion)`` per version.  Labels and relation types
    are only ever taken from :data:`LABELS` and ``RELATION_TYPES``; every
    id and value travels as a query parameter.  Updates run in one managed
    write transaction (``execute_write``: retried on transient errors, rolled
    back on any failure), writes in batched ``UNWIND`` statements.

    Use :meth:`from_env` to connect with ``NEO4J_URI`` / ``NEO4J_USER`` /
    ``NEO4J_PASSWORD``; the credentials are handed to the driver and kept
    nowhere else (not in ``repr``, not in error messages).
    """

    backend = "neo4j"

    def __init__(
        self,
        uri: str,
        user: str,
        password: str,
        *,
        twin: str = "twin",
        keep_versions: int | None = None,
        database: str | None = None,
        batch_size: int = 2000,
        connection_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(twin, keep_versions)
        import neo4j
        from neo4j.exceptions import AuthError, ServiceUnavailable

        if not isinstance(uri, str) or "://" not in uri:
            raise TwinStoreError(f"{ENV_URI}: must be a URI such as bolt://127.0.0.1:7687")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SchemaError(f"batch_size = {batch_size!r}: must be an integer >= 1")
        self._where = uri.split("://", 1)[1].split("@")[-1].split("/")[0].split("?")[0]  # host:port only
        self._database = database
        self.batch_size = batch_size
        try:
            self._driver = neo4j.GraphDatabase.driver(
                uri, auth=(user, password), connection_timeout=connection_timeout_s,
                notifications_min_severity="OFF",
            )
        except (ValueError, neo4j.exceptions.ConfigurationError) as exc:
            raise TwinStoreError(f"{ENV_URI}: not a usable Neo4j URI ({type(exc).__name__})") from None
        try:
            self._driver.verify_connectivity()  # opens an authenticated connection: AuthError on bad credentials
        except AuthError:
            self._driver.close()
            raise TwinStoreError(
                f"the Neo4j server at {self._where} rejected the credentials (check {ENV_USER} and {ENV_PASSWORD})"
            ) from None
        except (ServiceUnavailable, OSError) as exc:
            self._driver.close()
            raise TwinStoreError(
                f"the Neo4j server at {self._where} is unreachable ({type(exc).__name__}); "
                f"is it running, and is {ENV_URI} right?"
            ) from None
        self.server = self._driver.get_server_info().agent  # e.g. "Neo4j/5.26.0"
        self._ensure_schema()

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None, **kwargs: Any) -> "Neo4jStore":
        """Connect with ``NEO4J_URI``, ``NEO4J_USER`` (default ``neo4j``) and ``NEO4J_PASSWORD``."""
        env = os.environ if environ is None else environ
        uri = env.get(ENV_URI)
        if not uri:
            raise TwinStoreError(f"{ENV_URI} is not set: the Neo4j backend needs a server URI (bolt://host:port)")
        password = env.get(ENV_PASSWORD)
        if password is None:
            raise TwinStoreError(f"{ENV_PASSWORD} is not set: the Neo4j backend needs the password of {ENV_USER}")
        return cls(uri, env.get(ENV_USER, "neo4j"), password, **kwargs)

    def __repr__(self) -> str:
        return f"Neo4jStore(twin={self.twin!r}, server={self._where!r}, keep_versions={self.keep_versions!r})"

    def close(self) -> None:
        self._driver.close()

    # -- plumbing --------------------------------------------------------------
    def _session(self):
        return self._driver.session(database=self._database) if self._database else self._driver.session()

    def _ensure_schema(self) -> None:
        from neo4j.exceptions import ClientError

        with self._session() as s:
            for stmt in _SCHEMA + tuple(
                f"CREATE INDEX gentwin_rel_{t.lower()}_vto IF NOT EXISTS FOR ()-[r:{relation_type_for(t)}]-() ON (r.v_to)"
                for t in RELATION_TYPES
            ):
                try:
                    s.run(stmt).consume()
                except ClientError as exc:  # a concurrent creator won the race: the rule exists, which is the goal
                    if "AlreadyExists" not in (exc.code or ""):
                        raise

    # -- the latest version as _plan needs it: one query inside the write transaction --------
    def _tx_lookup(self, tx, changes: ChangeSet) -> tuple[dict[str, TwinNode], set[Relation], set[Relation]]:
        """Current states of the touched ids, which of the named relations exist, relations of deleted ids."""
        twin = self.twin
        ids = {n.id for n in changes.upsert_nodes} | set(changes.delete_nodes)
        ids |= {r.head for r in changes.upsert_relations} | {r.tail for r in changes.upsert_relations}
        rels = list(changes.upsert_relations) + list(changes.delete_relations)
        if not ids and not rels:
            return {}, set(), set()
        # COLLECT subqueries; relations are expanded from their head (the hint), as a tail such as a
        # service is a hub with hundreds of relations
        q = (
            "RETURN COLLECT { UNWIND $uids AS u MATCH (e:TwinEntity {uid: u})-[:HAS_STATE]->(s:TwinState) "
            "WHERE s.v_to IS NULL RETURN [e.id, e.kind, properties(s)] } AS cur, "
            "COLLECT { UNWIND $rows AS row MATCH (h:TwinEntity {uid: row.h})-[r:" + _REL_PATTERN + "]->"
            "(t:TwinEntity) USING INDEX h:TwinEntity(uid) WHERE t.uid = row.t AND r.v_to IS NULL "
            "AND type(r) = row.type RETURN [h.id, type(r), t.id] } AS ex, "
            "COLLECT { UNWIND $duids AS u MATCH (e:TwinEntity {uid: u})-[r:" + _REL_PATTERN + "]-(:TwinEntity) "
            "WHERE r.v_to IS NULL RETURN DISTINCT [startNode(r).id, type(r), endNode(r).id] } AS inc"
        )
        rec = tx.run(
            q, uids=[_uid(twin, i) for i in sorted(ids)],
            rows=[{"h": _uid(twin, r.head), "t": _uid(twin, r.tail), "type": r.type} for r in rels],
            duids=[_uid(twin, i) for i in changes.delete_nodes],
        ).single()
        current = {i: _node_from_record({"id": i, "kind": k, "props": p}) for i, k, p in rec["cur"]}
        existing = {Relation(h, t, o) for h, t, o in rec["ex"]}
        incident = {Relation(h, t, o) for h, t, o in rec["inc"]}
        return current, existing, incident

    # -- writing -----------------------------------------------------------------
    def commit(self, changes: ChangeSet, *, name: str | None = None, parts: Sequence[str] = ()) -> VersionInfo:
        if not isinstance(changes, ChangeSet):
            raise SchemaError(f"changes = {changes!r}: must be a ChangeSet")
        _check_name(name)
        parts = _check_parts(parts)

        def work(tx) -> VersionInfo:
            current, existing, incident = self._tx_lookup(tx, changes)
            plan = _plan(
                changes,
                lambda ids: {i: current[i] for i in ids if i in current},
                lambda rels: {r for r in rels if r in existing},
                lambda ids: {r for r in incident if r.head in ids or r.tail in ids},
            )
            info = self._tx_open_version(tx, name, parts, plan.n_written)
            new_ids = {n.id for n in plan.states if n.id not in current}
            self._tx_write(tx, plan, info.number, new_ids=new_ids)
            self._tx_prune(tx, info.number)
            return info

        return self._write(work)

    def rebuild(
        self, nodes: Iterable[TwinNode], relations: Iterable[Relation], *, name: str | None = None
    ) -> VersionInfo:
        _check_name(name)
        nodes = list(nodes)
        rels = list(dict.fromkeys(relations))
        cs = ChangeSet(upsert_nodes=tuple(nodes), upsert_relations=tuple(rels))
        ids = {n.id for n in nodes}
        for r in rels:
            for end, role in ((r.head, "head"), (r.tail, "tail")):
                if end not in ids:
                    raise SchemaError(f"relations: {r.as_text()}: {role} {end!r} is not one of the nodes")

        def work(tx) -> VersionInfo:
            ended = tx.run(
                "CALL { MATCH (e:TwinEntity {twin: $twin})-[:HAS_STATE]->(s:TwinState) WHERE s.v_to IS NULL "
                "RETURN count(s) AS a } "
                "CALL { MATCH (h:TwinEntity {twin: $twin})-[r:" + _REL_PATTERN + "]->() WHERE r.v_to IS NULL "
                "RETURN count(r) AS b } RETURN a + b AS n", twin=self.twin,
            ).single()["n"]
            plan = _Plan(states=list(cs.upsert_nodes), new_relations=rels)
            info = self._tx_open_version(tx, name, ("ALL",), ended + plan.n_written)
            v = info.number
            tx.run(
                "MATCH (e:TwinEntity {twin: $twin})-[:HAS_STATE]->(s:TwinState) WHERE s.v_to IS NULL SET s.v_to = $v",
                twin=self.twin, v=v,
            ).consume()
            tx.run(
                "MATCH (e:TwinEntity {twin: $twin})-[r:" + _REL_PATTERN + "]->() WHERE r.v_to IS NULL "
                "AND r.v_from < $v SET r.v_to = $v", twin=self.twin, v=v,
            ).consume()
            self._checkpoint("relations-ended")
            self._tx_write(tx, plan, v, new_ids={n.id for n in nodes}, end_states=False)
            self._tx_prune(tx, v)
            return info

        return self._write(work)

    def _write(self, work: Callable[[Any], VersionInfo]) -> VersionInfo:
        from neo4j.exceptions import ConstraintError

        try:
            with self._session() as s:
                return s.execute_write(work)
        except ConstraintError as exc:  # the name constraint: a concurrent writer took the name
            raise VersionError(f"version name already used ({exc.code})") from None

    def _tx_open_version(self, tx, name: str | None, parts: tuple[str, ...], n_written: int) -> VersionInfo:
        """Check the name, take the next number and record the version (one statement, or two with a name)."""
        twin = self.twin
        if name is not None:
            hit = tx.run("MATCH (x:TwinVersion {name_uid: $nu}) RETURN x.number AS n", nu=_uid(twin, name)).single()
            if hit is not None:
                raise VersionError(f"name = {name!r}: version {hit['n']} already has this name")
        created = time.time()
        rec = tx.run(
            "MERGE (c:TwinCounter {twin: $twin}) ON CREATE SET c.latest = 0 SET c.latest = c.latest + 1 "
            "CREATE (x:TwinVersion {uid: $twin + '/' + toString(c.latest), twin: $twin, number: c.latest, "
            "name: $name, name_uid: $nu, parts: $parts, created: $created, n_written: $w}) RETURN c.latest AS v",
            twin=twin, name=name, nu=None if name is None else _uid(twin, name), parts=list(parts),
            created=created, w=n_written,
        ).single()
        return VersionInfo(int(rec["v"]), name, parts, created, n_written)

    def _tx_write(self, tx, plan: _Plan, v: int, *, new_ids: set[str], end_states: bool = True) -> None:
        twin, size = self.twin, self.batch_size
        ended = [{"h": _uid(twin, r.head), "t": _uid(twin, r.tail), "type": r.type} for r in plan.end_relations]
        for chunk in _batches(ended, size):
            tx.run(
                "UNWIND $rows AS row MATCH (h:TwinEntity {uid: row.h})-[r:" + _REL_PATTERN + "]->(x:TwinEntity) "
                "USING INDEX h:TwinEntity(uid) WHERE x.uid = row.t AND type(r) = row.type "
                "AND r.v_to IS NULL SET r.v_to = $v",
                rows=list(chunk), v=v,
            ).consume()
        self._checkpoint("relations-ended")
        ending = [_uid(twin, i) for i in plan.delete_nodes]
        if end_states:
            ending += [_uid(twin, n.id) for n in plan.states if n.id not in new_ids]
        for chunk in _batches(ending, size):
            tx.run(
                "UNWIND $uids AS u MATCH (:TwinEntity {uid: u})-[:HAS_STATE]->(s:TwinState) WHERE s.v_to IS NULL "
                "SET s.v_to = $v", uids=list(chunk), v=v,
            ).consume()
        self._checkpoint("nodes-deleted")
        rows = [{"uid": _uid(twin, n.id), "id": n.id, "kind": n.kind, "props": n.metadata} for n in plan.states]
        for chunk in _batches(rows, size):
            tx.run(
                "UNWIND $rows AS row MERGE (e:TwinEntity {uid: row.uid}) "
                "ON CREATE SET e.twin = $twin, e.id = row.id, e.kind = row.kind "
                "CREATE (e)-[:HAS_STATE]->(s:TwinState) SET s = row.props, s.twin = $twin, s.v_from = $v",
                rows=list(chunk), twin=twin, v=v,
            ).consume()
        by_kind: dict[str, list[str]] = {}
        for n in plan.states:
            if n.id in new_ids:
                by_kind.setdefault(n.kind, []).append(_uid(twin, n.id))
        for kind, uids in sorted(by_kind.items()):
            for chunk in _batches(uids, size):  # the label comes from the allow-list only
                tx.run(f"UNWIND $uids AS u MATCH (e:TwinEntity {{uid: u}}) SET e:{label_for(kind)}",
                       uids=list(chunk)).consume()
        self._checkpoint("nodes-written")
        by_type: dict[str, list[dict]] = {}
        for r in plan.new_relations:
            by_type.setdefault(r.type, []).append({"h": _uid(twin, r.head), "t": _uid(twin, r.tail)})
        for t, rel_rows in sorted(by_type.items()):
            for chunk in _batches(rel_rows, size):
                res = tx.run(
                    "UNWIND $rows AS row MATCH (h:TwinEntity {uid: row.h}), (x:TwinEntity {uid: row.t}) "
                    f"CREATE (h)-[r:{relation_type_for(t)} {{v_from: $v}}]->(x) RETURN count(r) AS n",
                    rows=list(chunk), v=v,
                ).single()
                if res["n"] != len(chunk):  # cannot happen after _plan's checks; never write half a relation set
                    raise TwinStoreError(f"relations of type {t}: {res['n']} of {len(chunk)} endpoints found")
        self._checkpoint("relations-written")

    def _tx_prune(self, tx, v: int) -> None:
        if self.keep_versions is None:
            return
        oldest = v - self.keep_versions + 1
        if oldest <= 1:
            return
        tx.run(
            f"MATCH ()-[r:{_REL_PATTERN}]->() WHERE r.v_to <= $o AND startNode(r).twin = $twin DELETE r",
            o=oldest, twin=self.twin,
        ).consume()
        tx.run("MATCH (s:TwinState {twin: $twin}) WHERE s.v_to <= $o DETACH DELETE s", o=oldest, twin=self.twin).consume()
        tx.run(
            "MATCH (e:TwinEntity {twin: $twin}) WHERE NOT (e)-[:HAS_STATE]->() DETACH DELETE e", twin=self.twin
        ).consume()
        tx.run("MATCH (x:TwinVersion {twin: $twin}) WHERE x.number < $o DELETE x", o=oldest, twin=self.twin).consume()

    # -- reading -----------------------------------------------------------------
    def versions(self) -> list[VersionInfo]:
        with self._session() as s:
            recs = s.execute_read(
                lambda tx: list(tx.run(
                    "MATCH (x:TwinVersion {twin: $twin}) RETURN x.number AS number, x.name AS name, x.parts AS parts, "
                    "x.created AS created, x.n_written AS n_written ORDER BY x.number", twin=self.twin,
                ))
            )
        return [VersionInfo(r["number"], r["name"], tuple(r["parts"]), r["created"], r["n_written"]) for r in recs]

    def _tx_resolve(self, tx, version: int | str | None) -> int:
        if version is None:
            rec = tx.run("MATCH (c:TwinCounter {twin: $twin}) RETURN c.latest AS v", twin=self.twin).single()
            return 0 if rec is None else int(rec["v"])
        if isinstance(version, str):
            rec = tx.run(
                "MATCH (x:TwinVersion {name_uid: $nu}) RETURN x.number AS v", nu=_uid(self.twin, version)
            ).single()
            if rec is None:
                raise VersionError(f"version = {version!r}: no version of twin {self.twin!r} has this name")
            return int(rec["v"])
        rec = tx.run("MATCH (x:TwinVersion {uid: $u}) RETURN x.number AS v", u=_uid(self.twin, str(version))).single()
        if rec is None:
            raise VersionError(f"version = {version}: twin {self.twin!r} holds no such version (or it was pruned)")
        return version

    def request(self, requirement: TwinRequirement | None = None, *, version: int | str | None = None) -> Subgraph:
        req = self._requirement_arg(requirement)
        version = self._version_arg(version)
        twin = self.twin
        types = "|".join(relation_type_for(t) for t in req.relation_types)
        valid_s = "s.v_from <= v AND (s.v_to IS NULL OR s.v_to > v)"
        valid_r = "r.v_from <= v AND (r.v_to IS NULL OR r.v_to > v)"
        # One statement (one round trip): resolve the version, expand the requirement, return the subgraph.
        if version is None:
            head = "MATCH (c:TwinCounter {twin: $twin}) WITH c.latest AS v "
            params: dict[str, Any] = {"twin": twin}
        elif isinstance(version, str):
            head = "MATCH (x:TwinVersion {name_uid: $vk}) WITH x.number AS v "
            params = {"vk": _uid(twin, version)}
        else:
            head = "MATCH (x:TwinVersion {uid: $vk}) WITH x.number AS v "
            params = {"vk": _uid(twin, str(version))}
        if not req.seeds:
            body = (
                "MATCH (n:TwinEntity {twin: $twin})-[:HAS_STATE]->(s:TwinState) WHERE " + valid_s + " "
                f"OPTIONAL MATCH (n)-[r:{types}]->(o:TwinEntity) WHERE " + valid_r + " "
                "RETURN v, [] AS found, n.id AS id, n.kind AS kind, properties(s) AS props, "
                "collect([type(r), o.id]) AS out"
            )
            params["twin"] = twin
        else:
            hops = int(req.hops)
            expand = (
                f"OPTIONAL MATCH (e)-[rs:{types}*1..{hops}]-(o:TwinEntity) "
                "WHERE all(r IN rs WHERE " + valid_r + ") "
                if hops > 0 else "WITH v, e, null AS o "
            )
            body = (
                "UNWIND $seeds AS u MATCH (e:TwinEntity {uid: u})-[:HAS_STATE]->(s:TwinState) WHERE " + valid_s + " "
                + expand
                + "WITH v, collect(DISTINCT e.uid) AS found, collect(DISTINCT e) + collect(DISTINCT o) AS ns "
                "UNWIND ns AS n WITH DISTINCT v, found, ns, n "
                "MATCH (n)-[:HAS_STATE]->(s:TwinState) WHERE " + valid_s + " "
                f"OPTIONAL MATCH (n)-[r:{types}]->(o2:TwinEntity) WHERE o2 IN ns AND " + valid_r + " "
                "RETURN v, found, n.id AS id, n.kind AS kind, properties(s) AS props, collect([type(r), o2.id]) AS out"
            )
            params["seeds"] = [_uid(twin, x) for x in req.seeds]
        query = head + body

        def work(tx) -> tuple[list, int | None]:
            recs = list(tx.run(query, **params))
            if recs:
                return recs, int(recs[0]["v"])
            return recs, self._tx_resolve(tx, version)  # empty: tell "no such version" from "nothing there"

        with self._session() as session:
            recs, v = session.execute_read(work)
        nodes: dict[str, TwinNode] = {}
        rels: set[Relation] = set()
        found: set[str] = set()
        for rec in recs:
            nodes[rec["id"]] = _node_from_record(rec)
            for t, o in rec["out"]:
                if t is not None:
                    rels.add(Relation(rec["id"], t, o))
            found.update(rec["found"])
        missing = tuple(x for x in req.seeds if _uid(twin, x) not in found)
        return Subgraph(int(v or 0), dict(sorted(nodes.items())), frozenset(rels), missing)

    def drop(self) -> None:
        with self._session() as s:
            while True:
                n = s.execute_write(
                    lambda tx: tx.run(
                        "MATCH (n) WHERE (n:TwinEntity OR n:TwinState OR n:TwinVersion OR n:TwinCounter) "
                        "AND n.twin = $twin WITH n LIMIT 5000 DETACH DELETE n RETURN count(*) AS n", twin=self.twin,
                    ).single()["n"]
                )
                if n == 0:
                    break


def _node_from_record(rec) -> TwinNode:
    props = {k: v for k, v in dict(rec["props"]).items() if k not in RESERVED_KEYS}
    return TwinNode(rec["id"], rec["kind"], props)


# ---------------------------------------------------------------------------
# Choosing and opening a backend
# ---------------------------------------------------------------------------


def choose_backend(store: str = "auto", environ: Mapping[str, str] | None = None) -> str:
    """Which backend a run uses.

    ``"networkx"`` and ``"neo4j"`` are explicit; ``"auto"`` (the default of
    ``settings.twin.store``) means Neo4j when ``NEO4J_URI`` is set and the
    embedded networkx store otherwise.  An explicit setting always wins over the
    environment.

    >>> choose_backend("auto", {}), choose_backend("auto", {"NEO4J_URI": "bolt://db:7687"})
    ('networkx', 'neo4j')
    >>> choose_backend("networkx", {"NEO4J_URI": "bolt://db:7687"})
    'networkx'
    >>> choose_backend("neo4j", {})
    Traceback (most recent call last):
    ...
    gentwin.graph.TwinStoreError: store = 'neo4j' needs NEO4J_URI (and NEO4J_USER, NEO4J_PASSWORD) in the environment
    """
    env = os.environ if environ is None else environ
    if store == "networkx":
        return "networkx"
    if store == "neo4j":
        if not env.get(ENV_URI):
            raise TwinStoreError(
                f"store = 'neo4j' needs {ENV_URI} (and {ENV_USER}, {ENV_PASSWORD}) in the environment"
            )
        return "neo4j"
    if store == "auto":
        return "neo4j" if env.get(ENV_URI) else "networkx"
    raise SchemaError(f"store = {store!r}: must be one of 'auto', 'networkx', 'neo4j'")


def open_store(
    backend: str,
    *,
    twin: str = "twin",
    keep_versions: int | None = None,
    path: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> TwinStore:
    """A store of the given backend (``"networkx"`` or ``"neo4j"``; Neo4j from the environment)."""
    if backend == "networkx":
        return NetworkxStore(twin, keep_versions=keep_versions, path=path, **kwargs)
    if backend == "neo4j":
        return Neo4jStore.from_env(environ=environ, twin=twin, keep_versions=keep_versions, **kwargs)
    raise SchemaError(f"backend = {backend!r}: must be 'networkx' or 'neo4j'")

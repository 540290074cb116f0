"""The twin's knowledge-graph schema and the interface of a versioned twin store.

Section II.B of the paper keeps the twin "in the form of knowledge graphs" in Neo4j (Fig. 4): labelled
entities (sensors, gateways, services, the smart city) linked by typed relations, each with its metadata.
Both backends validate an update against the latest version with ``_plan``.
"""

from __future__ import annotations

import abc
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

from ..checks import check_int
from ..topology import NODE_KINDS, RELATION_TYPES, Node, Relation, Topology

__all__ = [
    "LABELS", "RELATION_TYPES", "ALLOWED_RELATIONS", "RESERVED_KEYS", "ENV_URI", "ENV_USER", "ENV_PASSWORD",
    "SchemaError", "VersionError", "TwinStoreError", "TwinNode", "ChangeSet", "VersionInfo",
    "TwinRequirement", "Subgraph", "TwinStore", "label_for", "relation_type_for", "check_relation_kinds",
    "twin_from_topology", "node_to_twin",
]

#: Node label of each entity kind (the allow-list: nothing else is ever formatted into Cypher).
LABELS: dict[str, str] = {"sensor": "Sensor", "gateway": "Gateway", "service": "Service", "city": "SmartCity"}
#: Metadata keys the stores use themselves; node metadata may not use them.
RESERVED_KEYS: frozenset[str] = frozenset({"uid", "twin", "id", "kind", "v_from", "v_to"})
#: Environment variables the Neo4j backend reads (their values are never printed or stored).
ENV_URI, ENV_USER, ENV_PASSWORD = "NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD"

#: The relations the schema allows: (head kind, relation type, tail kind).  Sensors and gateways
#: connect to gateways (a sensor's uplink, a fog link between gateways), devices serve in a
#: service, a service is in the city; anything else cannot exist in the Physical Space.
ALLOWED_RELATIONS: frozenset[tuple[str, str, str]] = frozenset({
    ("sensor", "CONNECTED_TO", "gateway"),
    ("gateway", "CONNECTED_TO", "gateway"),
    ("sensor", "SERVES_IN", "service"),
    ("gateway", "SERVES_IN", "service"),
    ("service", "IN", "city"),
})

_TWIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INT64 = (-(2**63), 2**63 - 1)
Scalar = str | int | float | bool

assert set(LABELS) == set(NODE_KINDS)


class SchemaError(ValueError):
    """A node, relation, metadata entry or change set breaks the twin's schema."""

    __module__ = "gentwin.graph"  # the public name, in tracebacks and doctests


class VersionError(ValueError):
    """A version that does not exist (or was pruned), or a version name used twice."""

    __module__ = "gentwin.graph"


class TwinStoreError(RuntimeError):
    """The store itself failed: server unreachable, credentials rejected, corrupt journal."""

    __module__ = "gentwin.graph"


def label_for(kind: str) -> str:
    """The node label of an entity kind, from the allow-list ``LABELS``.

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
    if (isinstance(value, (bool, str)) or (isinstance(value, int) and _INT64[0] <= value <= _INT64[1])
            or (isinstance(value, float) and math.isfinite(value))):
        return
    problem = ("integers must fit in 64 bits" if isinstance(value, int) else "must be a finite number"
               if isinstance(value, float) else "must be a string, integer, float or boolean")
    raise SchemaError(f"node {node_id!r}: metadata {key!r} = {value!r}: {problem}")


@dataclass(frozen=True)
class TwinNode:
    """One entity state of the knowledge graph: id, kind (label) and scalar metadata.

    ``meta`` (a mapping or ``(key, value)`` pairs) is kept as a sorted tuple of pairs, so nodes are
    hashable and compare by value.  Ids and metadata are arbitrary strings: a database only ever gets
    them as query parameters.

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
                raise SchemaError(f"node {self.id!r}: metadata key {key!r} is reserved "
                                  f"(reserved: {', '.join(sorted(RESERVED_KEYS))})")
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
        return dict(self.meta)

    def get(self, key: str, default: Any = None) -> Any:
        """One metadata value."""
        return next((v for k, v in self.meta if k == key), default)


def _as_relation(rel: Any, where: str) -> Relation:
    if not isinstance(rel, Relation):
        raise SchemaError(f"{where}: {rel!r} is not a gentwin.topology.Relation")
    relation_type_for(rel.type)
    if rel.head == rel.tail:
        raise SchemaError(f"{where}: {rel.as_text()}: head = tail = {rel.head!r}: "
                          "a relation cannot link an entity to itself")
    return rel


def check_relation_kinds(rel: Relation, head_kind: str, tail_kind: str, where: str = "relation") -> Relation:
    """``rel`` if ``ALLOWED_RELATIONS`` allows its type between these node kinds, else a SchemaError.

    >>> r = Relation("S1", "CONNECTED_TO", "GW1")
    >>> check_relation_kinds(r, "sensor", "gateway") == r
    True
    >>> check_relation_kinds(Relation("S1", "CONNECTED_TO", "S2"), "sensor", "sensor", "upsert_relations")
    Traceback (most recent call last):
    ...
    gentwin.graph.SchemaError: upsert_relations: (S1, CONNECTED_TO, S2): tail = 'S2' is a sensor; CONNECTED_TO links a gateway or sensor to a gateway
    """
    if (head_kind, rel.type, tail_kind) in ALLOWED_RELATIONS:
        return rel
    heads = sorted({h for h, t, _ in ALLOWED_RELATIONS if t == rel.type})
    tails = sorted({k for _, t, k in ALLOWED_RELATIONS if t == rel.type})
    allowed = f"{rel.type} links a {' or '.join(heads)} to a {' or '.join(tails)}"
    if head_kind not in heads:
        raise SchemaError(f"{where}: {rel.as_text()}: head = {rel.head!r} is a {head_kind}; {allowed}")
    raise SchemaError(f"{where}: {rel.as_text()}: tail = {rel.tail!r} is a {tail_kind}; {allowed}")


def _check_ends(rels: Iterable[Relation], kinds: Mapping[str, str], where: str, absent: str) -> None:
    """Both ends of every relation are among ``kinds`` (id -> kind) and the schema allows their kinds."""
    for r in rels:
        for end, role in ((r.head, "head"), (r.tail, "tail")):
            if end not in kinds:
                raise SchemaError(f"{where}: {r.as_text()}: {role} {end!r} is not {absent}")
        check_relation_kinds(r, kinds[r.head], kinds[r.tail], where)


@dataclass(frozen=True)
class ChangeSet:
    """What one update changes: nodes to add or update, nodes to delete, relations to add or delete.

    Deleting a node also ends its relations (like Cypher's ``DETACH DELETE``).  Upserting a node
    whose id exists replaces its metadata (its kind may not change); upserting a relation that
    exists is a no-op.
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

    Every entity within ``hops`` relations of a seed (relations of ``relation_types``, followed in
    both directions) and the relations among them; no seeds means the whole twin.
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
        check_int("hops", self.hops, low=0, high=8, error=SchemaError)
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


_NODE_FIELDS = ("name", "service", "gateway", "category", "sdm_type", "controlled_property", "latitude", "longitude")


def twin_from_topology(topology: Topology,
                       presence: Mapping[str, bool] | None = None) -> tuple[dict[str, TwinNode], set[Relation]]:
    """The knowledge graph of a topology: one :class:`TwinNode` per entity and every relation.

    Metadata are the entity's non-empty fields; devices also get ``active`` (the presence of eq. 1,
    from ``presence``, default True) and gateways ``n_sensors`` (d_i, the sensors connected to them).

    >>> from gentwin.config import TopologyConfig
    >>> from gentwin.topology import generate_topology
    >>> nodes, rels = twin_from_topology(generate_topology(TopologyConfig(n_gateways=3, n_sensors=6,
    ...     n_gateway_links=0, n_instances=10)))
    >>> len(nodes), len(rels), nodes["AQ-GW01"].get("n_sensors")  # 1 city + 3 services + 3 gw + 6 s; 3 IN + 3 + 2*6
    (13, 18, 2)
    """
    presence = presence or {}
    degrees = topology.gateway_degrees()
    nodes = {n.id: node_to_twin(n, presence.get(n.id, True), degrees.get(n.id, 0)) for n in topology.nodes.values()}
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


def _plan(changes: ChangeSet, current: Callable[[Sequence[str]], dict[str, TwinNode]],
          existing_relations: Callable[[Sequence[Relation]], set[Relation]],
          incident: Callable[[Sequence[str]], set[Relation]]) -> _Plan:
    """Validate ``changes`` against the latest version, read through the three call-backs; the records to write."""
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
    gone = set(changes.delete_nodes)
    kinds = {i: n.kind for i, n in cur.items() if i not in gone} | {n.id: n.kind for n in changes.upsert_nodes}
    _check_ends(changes.upsert_relations, kinds, "upsert_relations", "a node of the twin")
    have = existing_relations(list(changes.upsert_relations) + list(changes.delete_relations))
    for r in changes.delete_relations:
        if r not in have:
            raise SchemaError(f"delete_relations: {r.as_text()} is not in the latest version of the twin")
    end_rel = set(changes.delete_relations) | incident(list(changes.delete_nodes))
    new_rel = [r for r in dict.fromkeys(changes.upsert_relations) if r not in have]
    return _Plan(sorted(end_rel), list(changes.delete_nodes), states, new_rel)


class TwinStore(abc.ABC):
    """A versioned knowledge-graph twin (the interface both backends implement).

    ``twin`` names the twin (letters, digits, ``_.-``), so several twins can share one database;
    ``keep_versions`` is how many versions stay requestable (None: all; 1: only the latest).
    """

    backend: ClassVar[str]

    def __init__(self, twin: str, keep_versions: int | None) -> None:
        if not isinstance(twin, str) or not _TWIN_NAME.match(twin):
            raise SchemaError(f"twin = {twin!r}: must be 1-64 letters, digits, '_', '.' or '-'")
        if keep_versions is not None:
            check_int("keep_versions", keep_versions, low=1, error=SchemaError)
        self.twin = twin
        self.keep_versions = keep_versions

    def commit(self, changes: ChangeSet, *, name: str | None = None, parts: Sequence[str] = ()) -> VersionInfo:
        """Apply ``changes`` atomically as a new version (``parts``: what it re-versions, for the record)."""
        if not isinstance(changes, ChangeSet):
            raise SchemaError(f"changes = {changes!r}: must be a ChangeSet")
        self._check_name(name)
        if isinstance(parts, str):
            raise SchemaError(f"parts = {parts!r}: must be a sequence of part names, not one string")
        parts = tuple(parts)  # before the checks: a generator would be used up by them
        for p in parts:
            if not isinstance(p, str) or not p:
                raise SchemaError(f"parts: {p!r} must be a non-empty string")
        return self._commit(changes, name, parts)

    def rebuild(self, nodes: Iterable[TwinNode], relations: Iterable[Relation], *,
                name: str | None = None) -> VersionInfo:
        """Replace the whole graph by ``nodes`` and ``relations`` as a new version (ends every current record)."""
        self._check_name(name)
        self._check_free(name)
        nodes, rels = list(nodes), list(dict.fromkeys(relations))
        ChangeSet(upsert_nodes=tuple(nodes), upsert_relations=tuple(rels))  # validates nodes and relations
        _check_ends(rels, {n.id: n.kind for n in nodes}, "relations", "one of the nodes")
        return self._rebuild(nodes, rels, name)

    @staticmethod
    def _check_name(name: str | None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise VersionError(f"name = {name!r}: must be a non-empty string or None")

    def _check_free(self, name: str | None) -> None:
        """A VersionError if a version already has this name (Neo4j checks inside its write transaction)."""

    @abc.abstractmethod
    def _commit(self, changes: ChangeSet, name: str | None, parts: tuple[str, ...]) -> VersionInfo:
        """:meth:`commit` after its arguments were checked."""

    @abc.abstractmethod
    def _rebuild(self, nodes: list[TwinNode], rels: list[Relation], name: str | None) -> VersionInfo:
        """:meth:`rebuild` of a validated graph."""

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
    def _request_args(requirement: Any, version: Any) -> tuple[TwinRequirement, int | str | None]:
        if requirement is not None and not isinstance(requirement, TwinRequirement):
            raise SchemaError(f"requirement = {requirement!r}: must be a TwinRequirement or None")
        if version is not None and not isinstance(version, str) and (isinstance(version, bool)
                                                                    or not isinstance(version, int)):
            raise VersionError(f"version = {version!r}: must be None, a version number or a version name")
        return requirement or TwinRequirement(), version

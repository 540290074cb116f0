"""The one table that maps Smart Data Models entity types and properties onto gentwin's graph.

Section II.B of the paper parses Smart Data Models (SDM) entities into nodes
and typed relations.  :data:`SDM_MAPPING` says, row by row, how: which entity
types (or type-name suffixes) become which node kind, which ``deviceCategory``
values (the SDM enumeration) make a ``Device`` a sensor, an actuator or a
gateway, and which relationship properties become which relation.  A
relationship not in the table is kept as a node property (with its target
ids) and is never a reason to reject an entity.  :func:`mapping_table` renders
the table as a DataFrame for the book.  :mod:`gentwin.ingest` reads the files;
this module holds the vocabulary, the look-ups and the
:class:`EntityGraph` they produce (every entity and mapped relation, any kind),
whose :meth:`EntityGraph.to_topology` keeps what a gentwin
:class:`~gentwin.topology.Topology` can hold.

Examples
--------
>>> kind_of_type("AirQualityObserved"), kind_of_type("WasteContainer"), kind_of_type("Foo")
('observation', 'asset', 'entity')
>>> device_kind(["sensor"]), device_kind(["HVAC"]), device_kind(["network", "sensor"]), device_kind([])
('sensor', 'actuator', 'gateway', None)
>>> relationship_rules("refDevice")[0].gentwin
'OBSERVED_BY'
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from .topology import NODE_KINDS, RELATION_TYPES, Node, Relation, Topology, TopologyError

__all__ = [
    "IngestError",
    "GraphNode",
    "GraphRelation",
    "EntityGraph",
    "relation_phase",
    "GRAPH_KINDS",
    "DEVICE_KINDS",
    "GRAPH_RELATIONS",
    "MappingRow",
    "SDM_MAPPING",
    "mapping_table",
    "kind_of_type",
    "device_kind",
    "relationship_rules",
    "STRICT_RELATIONSHIPS",
]

#: Node kinds of the entity graph (a superset of :data:`gentwin.topology.NODE_KINDS`).
GRAPH_KINDS: tuple[str, ...] = (
    "sensor", "actuator", "gateway", "service", "city", "observation", "asset", "model", "entity",
)
#: The kinds a ``Device`` can take.
DEVICE_KINDS: tuple[str, ...] = ("sensor", "actuator", "gateway")
_DEVICES = DEVICE_KINDS
_THINGS = ("asset", "entity")
#: Relation types of the entity graph (a superset of :data:`gentwin.topology.RELATION_TYPES`).
GRAPH_RELATIONS: tuple[str, ...] = (
    "CONNECTED_TO", "SERVES_IN", "IN", "OBSERVED_BY", "ATTACHED_TO", "HAS_MODEL", "PART_OF", "NEAR",
    "CONTROLLED_BY", "LOCATED_ON",
)


@dataclass(frozen=True)
class MappingRow:
    """One row of :data:`SDM_MAPPING`.

    ``source`` says what is matched: ``"type"`` (an entity type),
    ``"type suffix"`` (the end of an entity type's name), ``"deviceCategory"``
    (a value of a ``Device``'s category) or ``"relationship"`` (a property
    name).  ``gentwin`` is the node kind or relation it becomes.  For a
    relationship, ``holders`` and ``targets`` are the node kinds it may run
    between (empty: any); the relation runs holder -> target, or target ->
    holder when ``inverse``.
    """

    source: str
    sdm: str
    gentwin: str
    holders: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    inverse: bool = False
    note: str = ""

    def describe(self) -> str:
        arrow = "target -> holder" if self.inverse else "holder -> target"
        return f"{self.sdm} ({self.gentwin}, {arrow})"


def _types(kind: str, names: str, note: str = "") -> list[MappingRow]:
    return [MappingRow("type", n, kind, note=note) for n in names.split()]


def _categories(kind: str, names: str) -> list[MappingRow]:
    return [MappingRow("deviceCategory", n, kind) for n in names.split()]


def _rel(name: str, relation: str, holders=(), targets=(), inverse=False, note="") -> MappingRow:
    return MappingRow("relationship", name, relation, tuple(holders), tuple(targets), inverse, note)


#: The mapping, SDM name -> gentwin node kind or relation (see the module docstring).
SDM_MAPPING: tuple[MappingRow, ...] = (
    *_types("device", "Device", "sensor, actuator or gateway: see deviceCategory and role"),
    *_types("service", "SmartCityService", "gentwin's own type (SDM has no city-service entity)"),
    *_types("city", "SmartCity", "gentwin's own type (SDM has no city entity)"),
    *_types("model", "DeviceModel StreetlightModel WasteContainerModel VehicleModel"),
    *_types("observation", "AirQualityObserved NoiseLevelObserved WeatherObserved WaterQualityObserved "
                           "EnvironmentObserved TrafficFlowObserved CrowdFlowObserved ItemFlowObserved "
                           "WasteObserved DeviceMeasurement"),
    *_types("asset", "WasteContainer WasteContainerIsle ParkingSpot OnStreetParking OffStreetParking "
                     "ParkingGroup ParkingAccess Streetlight StreetlightGroup StreetlightControlCabinet "
                     "Road RoadSegment PointOfInterest Building Vehicle BikeHireDockingStation EVChargingStation"),
    MappingRow("type suffix", "Observed", "observation", note="any other ...Observed type"),
    MappingRow("type suffix", "Observation", "observation", note="any other ...Observation type"),
    MappingRow("type suffix", "Model", "model", note="any other ...Model type"),
    MappingRow("type", "*", "entity", note="any other type: kept, with its relationships"),
    *_categories("gateway", "network"),
    *_categories("sensor", "sensor meter beacon multimedia"),
    *_categories("actuator", "actuator HVAC endgun implement irrSection irrSystem"),
    MappingRow("deviceCategory", "*", "sensor", note="no category: a gateway if a device's refGateway "
                                                     "names it, else a sensor"),
    _rel("refGateway", "CONNECTED_TO", _DEVICES, ("gateway",), note="uplink, or a fog link between gateways"),
    _rel("refService", "SERVES_IN", _DEVICES, ("service",)),
    _rel("refSmartCity", "IN", ("service",), ("city",)),
    _rel("controlledAsset", "CONNECTED_TO", ("gateway",), _DEVICES, inverse=True,
         note="a gateway lists the devices it aggregates"),
    _rel("controlledAsset", "ATTACHED_TO", _DEVICES, ("asset", "entity", "observation")),
    _rel("refDevice", "OBSERVED_BY", ("observation",), _DEVICES),
    _rel("refDevice", "ATTACHED_TO", ("asset", "entity", "model"), _DEVICES, inverse=True),
    _rel("refDeviceModel", "HAS_MODEL", _DEVICES, ("model",)),
    *[_rel(n, "HAS_MODEL", _THINGS, ("model",))
      for n in ("refStreetlightModel", "refWasteContainerModel", "refVehicleModel")],
    *[_rel(n, "PART_OF", _THINGS, _THINGS)
      for n in ("refParkingSite", "refParkingGroup", "refOffStreetParking", "refStreetlightGroup",
                "refWasteContainerIsle", "refRoad")],
    _rel("refRoadSegment", "LOCATED_ON", (), _THINGS, note="an observation, device or asset on a road segment"),
    _rel("refWasteContainer", "PART_OF", _THINGS, _THINGS, inverse=True, note="an isle lists its containers"),
    _rel("refPointOfInterest", "NEAR", (), ()),
    _rel("refStreetlightControlCabinet", "CONTROLLED_BY", (), ()),
    _rel("refStreetlightCabinetController", "CONTROLLED_BY", (), ()),
)

#: Relationships of gentwin's own vocabulary: on a holder kind no row allows they are an error,
#: not a kept property (a misplaced refGateway would otherwise lose an edge of eq. 2).
STRICT_RELATIONSHIPS: frozenset[str] = frozenset({"refGateway", "refService", "refSmartCity"})

_TYPE_KIND = {r.sdm: r.gentwin for r in SDM_MAPPING if r.source == "type" and r.sdm != "*"}
_SUFFIX_KIND = [(r.sdm, r.gentwin) for r in SDM_MAPPING if r.source == "type suffix"]
_CATEGORY_KIND = {r.sdm: r.gentwin for r in SDM_MAPPING if r.source == "deviceCategory" and r.sdm != "*"}
_RULES: dict[str, tuple[MappingRow, ...]] = {}
for _row in SDM_MAPPING:
    if _row.source == "relationship":
        _RULES[_row.sdm] = (*_RULES.get(_row.sdm, ()), _row)
del _row


def mapping_table():
    """:data:`SDM_MAPPING` as a :class:`pandas.DataFrame`, one row per mapping.

    >>> t = mapping_table()
    >>> list(t.columns)
    ['source', 'sdm', 'gentwin', 'holders', 'targets', 'inverse', 'note']
    >>> t.loc[t.sdm == "refDeviceModel", "gentwin"].item()
    'HAS_MODEL'
    """
    import pandas as pd

    return pd.DataFrame(
        [(r.source, r.sdm, r.gentwin, ", ".join(r.holders) or "any", ", ".join(r.targets) or "any",
          r.inverse, r.note) for r in SDM_MAPPING],
        columns=["source", "sdm", "gentwin", "holders", "targets", "inverse", "note"],
    )


def kind_of_type(entity_type: str) -> str:
    """The node kind of an entity type (``"device"`` for ``Device``; see :func:`device_kind`).

    >>> kind_of_type("Device"), kind_of_type("ParkingSpot"), kind_of_type("NoiseLevelForecastObserved")
    ('device', 'asset', 'observation')
    """
    kind = _TYPE_KIND.get(entity_type)
    if kind is not None:
        return kind
    for suffix, suffix_kind in _SUFFIX_KIND:
        if entity_type.endswith(suffix):
            return suffix_kind
    return "entity"


def device_kind(categories: list[str]) -> str | None:
    """The device kind a ``deviceCategory`` list gives; None when no value is in the table.

    ``network`` wins over the rest (a gateway that also senses is still the
    uplink of eq. 2); then sensor-like values, then actuator-like ones.

    >>> device_kind(["actuator", "meter"]), device_kind(["lighting"])
    ('sensor', None)
    """
    kinds = {_CATEGORY_KIND.get(c) for c in categories}
    for kind in ("gateway", "sensor", "actuator"):
        if kind in kinds:
            return kind
    return None


def relationship_rules(name: str) -> tuple[MappingRow, ...]:
    """The rows of :data:`SDM_MAPPING` for relationship ``name`` (empty: not in the allow-list)."""
    return _RULES.get(name, ())


def relation_phase(head_kind: str, relation: str, tail_kind: str) -> int:
    """Rank of a relation in the reading order: city links, device uplinks and services, gateway links, rest.

    This is the order :func:`gentwin.topology.generate_topology` builds, so a
    generated topology reads back with its relation list unchanged.

    >>> relation_phase("service", "IN", "city"), relation_phase("gateway", "CONNECTED_TO", "gateway")
    (0, 2)
    """
    if relation == "IN":
        return 0
    if relation == "SERVES_IN" or (relation == "CONNECTED_TO" and tail_kind == "gateway" and head_kind != "gateway"):
        return 1
    return 2 if relation == "CONNECTED_TO" else 3


class IngestError(TopologyError):
    """An input file (or an object to export) is malformed.

    The message names, where known, the file (``source``), the ``line``, the
    entity (its ``position`` in the file, counted from 1, and its id) and the
    ``field``.

    >>> str(IngestError("missing", source="a.json", position=2, field="id"))
    "a.json, entity #2, field 'id': missing"
    >>> str(IngestError("dangling", source="a.json", position=3, entity="urn:x", field="refDevice"))
    "a.json, entity #3 'urn:x', field 'refDevice': dangling"
    """

    def __init__(self, problem: str, *, source: Any = None, line: int | None = None, position: int | None = None,
                 entity: str | None = None, field: str | None = None) -> None:
        self.problem, self.line, self.position, self.entity, self.field = problem, line, position, entity, field
        self.source = None if source is None else str(source)
        where = [] if self.source is None else [self.source]
        if line is not None:
            where.append(f"line {line}")
        if position is not None or entity is not None:
            where.append(" ".join(["entity"] + ([f"#{position}"] if position is not None else [])
                                  + ([repr(entity)] if entity is not None else [])))
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(", ".join(where) + ": " + problem if where else problem)


@dataclass(eq=False)
class GraphNode:
    """One entity as read: its node ``id`` and ``kind`` (:data:`GRAPH_KINDS`), NGSI ``type`` and ``urn``,
    where it came from (``source``, ``position`` in that file), the :class:`~gentwin.topology.Node`
    ``fields`` it carries, every other attribute in ``properties``, and its allow-listed references
    (``refs``, resolved into relations)."""

    id: str
    kind: str
    type: str
    urn: str
    source: str
    position: int
    fields: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    refs: list[tuple[str, list[str]]] = field(default_factory=list, repr=False)
    index: int = 0  # position among all entities read (files in order), which orders the relations


class GraphRelation(NamedTuple):
    """A typed relation ``head -type-> tail`` of the entity graph, and the property it came from."""

    head: str
    type: str
    tail: str
    via: str

    def as_text(self) -> str:
        return f"({self.head}, {self.type}, {self.tail})"


_NODE_FIELDS = frozenset(f.name for f in fields(Node))


@dataclass
class EntityGraph:
    """Every entity read (any kind) and every mapped relation: what :func:`gentwin.ingest.read_graph` returns."""

    nodes: dict[str, GraphNode]
    relations: list[GraphRelation]

    def _fail(self, node: GraphNode, field_name: str, problem: str):
        raise IngestError(problem, source=node.source, position=node.position, entity=node.urn, field=field_name)

    def check_structure(self) -> None:
        """Raise :class:`IngestError` for what cannot be: a sensor with two gateways, a device in two services."""
        seen: dict[tuple[str, str], GraphRelation] = {}
        for rel in self.relations:
            head = self.nodes[rel.head]
            if head.kind in DEVICE_KINDS and (rel.type == "SERVES_IN" or (
                    rel.type == "CONNECTED_TO" and head.kind != "gateway" and self.nodes[rel.tail].kind == "gateway")):
                first = seen.setdefault((rel.head, rel.type), rel)
                if first is not rel:
                    what = "service" if rel.type == "SERVES_IN" else "gateway (eq. 2's g_s)"
                    self._fail(head, rel.via, f"a {head.kind} has at most one {what}; found {first.tail} and {rel.tail}")

    def counts(self) -> dict[str, int]:
        """Number of nodes of each kind and of relations of each type.

        >>> EntityGraph({}, []).counts()
        {}
        """
        out: dict[str, int] = {}
        for key in [n.kind for n in self.nodes.values()] + [r.type for r in self.relations]:
            out[key] = out.get(key, 0) + 1
        return out

    def table(self):
        """The nodes as a :class:`pandas.DataFrame`: id, kind, NGSI type and the number of kept properties."""
        import pandas as pd

        return pd.DataFrame([(n.id, n.kind, n.type, len(n.properties)) for n in self.nodes.values()],
                            columns=["id", "kind", "type", "properties"])

    def to_topology(self) -> Topology:
        """The :class:`~gentwin.topology.Topology` part: nodes of its kinds, relations of its types between them.

        A sensor's ``gateway`` and a device's ``service`` come from its
        relations; a sensor's ``sdm_type`` not given otherwise is the type of
        the observations made by it, when they agree.  A sensor without a
        gateway raises :class:`IngestError` (eq. 2 needs g_s).
        """
        kept = {nid: n for nid, n in self.nodes.items() if n.kind in NODE_KINDS}
        relations = [r for r in self.relations
                     if r.type in RELATION_TYPES and r.head in kept and r.tail in kept]
        gateway: dict[str, str] = {}
        service: dict[str, str] = {}
        observed: dict[str, set[str]] = {}
        for r in self.relations:
            if r.type == "CONNECTED_TO" and r.head in kept and kept[r.head].kind == "sensor":
                gateway[r.head] = r.tail  # a sensor's only CONNECTED_TO is its uplink (check_structure)
            elif r.type == "SERVES_IN" and r.head in kept:
                service[r.head] = r.tail
            elif r.type == "OBSERVED_BY":
                observed.setdefault(r.tail, set()).add(self.nodes[r.head].type)
        nodes: dict[str, Node] = {}
        for nid, n in kept.items():
            extra = dict(n.fields)
            if n.kind == "sensor":
                if nid not in gateway:
                    self._fail(n, "refGateway", "a sensor needs a gateway in a gentwin Topology (eq. 2's g_s): give "
                               "it a refGateway, or list it in a network device's controlledAsset (read_graph "
                               "reads it without one)")
                if "sdm_type" not in extra and len(observed.get(nid, ())) == 1:
                    (extra["sdm_type"],) = observed[nid]
            if "properties" in _NODE_FIELDS:
                extra["properties"] = dict(n.properties)
            nodes[nid] = Node(nid, n.kind, service=service.get(nid), gateway=gateway.get(nid), **extra)
        try:
            return Topology(nodes=nodes, relations=[Relation(r.head, r.type, r.tail) for r in relations])
        except TopologyError as exc:  # defensive: the checks above leave nothing for validate()
            raise IngestError(str(exc)) from None

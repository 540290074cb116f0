"""Smart Data Models onto gentwin's graph: the one mapping table, and the entity graph it builds.

``SDM_MAPPING`` says how Section II.B's parsing maps entity types, ``deviceCategory`` values and
relationship properties (an allow-list) onto node kinds and relations; a relationship or attribute
not in it is kept as a node property, never a reason to reject an entity.  :func:`build_graph` applies
it to parsed JSON entities in any NGSI-LD encoding; files and their limits are :mod:`gentwin.ingest`'s.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, NoReturn

from .topology import NODE_KINDS, RELATION_TYPES, Node, Relation, Topology, TopologyError

__all__ = [
    "IngestError", "GraphNode", "GraphRelation", "EntityGraph", "relation_phase", "build_graph", "GRAPH_KINDS",
    "DEVICE_KINDS", "GRAPH_RELATIONS", "MappingRow", "SDM_MAPPING", "mapping_table", "kind_of_type", "device_kind",
    "STRICT_RELATIONSHIPS",
]

#: Node kinds of the entity graph (a superset of ``gentwin.topology.NODE_KINDS``).
GRAPH_KINDS: tuple[str, ...] = ("sensor", "actuator", "gateway", "service", "city", "observation", "asset", "model",
                                "entity")
#: The kinds a ``Device`` can take.
DEVICE_KINDS = _DEVICES = ("sensor", "actuator", "gateway")
_THINGS = ("asset", "entity")
#: Relation types of the entity graph (a superset of ``gentwin.topology.RELATION_TYPES``).
GRAPH_RELATIONS: tuple[str, ...] = ("CONNECTED_TO", "SERVES_IN", "IN", "OBSERVED_BY", "ATTACHED_TO", "HAS_MODEL",
                                    "PART_OF", "NEAR", "CONTROLLED_BY", "LOCATED_ON")


@dataclass(frozen=True)
class MappingRow:
    """One row of ``SDM_MAPPING``: the ``sdm`` name of a ``source`` and the ``gentwin`` kind or relation it becomes.

    ``source``: ``"type"``, ``"type suffix"``, ``"deviceCategory"`` or ``"relationship"``.  A relationship
    runs between the node kinds ``holders`` and ``targets`` (empty: any), from target to holder when ``inverse``.
    """

    source: str
    sdm: str
    gentwin: str
    holders: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    inverse: bool = False
    note: str = ""


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
_RULES: dict[str, tuple[MappingRow, ...]] = {  # the rows of each allow-listed relationship, in table order
    name: tuple(r for r in SDM_MAPPING if r.source == "relationship" and r.sdm == name)
    for name in dict.fromkeys(r.sdm for r in SDM_MAPPING if r.source == "relationship")}


def mapping_table():
    """``SDM_MAPPING`` as a :class:`pandas.DataFrame`.

    >>> t = mapping_table()
    >>> list(t.columns)
    ['source', 'sdm', 'gentwin', 'holders', 'targets', 'inverse', 'note']
    >>> t.loc[t.sdm == "refDeviceModel", "gentwin"].item(), t.loc[t.sdm == "refDevice", "gentwin"].tolist()
    ('HAS_MODEL', ['OBSERVED_BY', 'ATTACHED_TO'])
    """
    import pandas as pd

    return pd.DataFrame([(r.source, r.sdm, r.gentwin, ", ".join(r.holders) or "any", ", ".join(r.targets) or "any",
                          r.inverse, r.note) for r in SDM_MAPPING],
                        columns=["source", "sdm", "gentwin", "holders", "targets", "inverse", "note"])


@functools.lru_cache(maxsize=4096)
def kind_of_type(entity_type: str) -> str:
    """The node kind of an entity type (``"device"`` for ``Device``; see :func:`device_kind`).

    >>> kind_of_type("Device"), kind_of_type("ParkingSpot"), kind_of_type("NoiseLevelForecastObserved")
    ('device', 'asset', 'observation')
    >>> kind_of_type("https://smartdatamodels.org/dataModel.WasteManagement/WasteContainer"), kind_of_type("Foo")
    ('asset', 'entity')
    """
    kind = _TYPE_KIND.get(entity_type)
    if kind is not None:
        return kind
    if "/" in entity_type or "#" in entity_type:  # an expanded IRI, e.g. https://smartdatamodels.org/.../Device
        return kind_of_type(entity_type.replace("#", "/").rstrip("/").rsplit("/", 1)[-1])
    for suffix, suffix_kind in _SUFFIX_KIND:
        if entity_type.endswith(suffix):
            return suffix_kind
    return "entity"


@functools.lru_cache(maxsize=1024)
def device_kind(categories: tuple[str, ...]) -> str | None:
    """The device kind the ``deviceCategory`` values give; None when no value is in the table.

    ``network`` wins (a gateway that also senses is still eq. 2's uplink), then sensor-like, then actuator-like.

    >>> device_kind(("network", "sensor")), device_kind(("actuator", "meter")), device_kind(("HVAC",))
    ('gateway', 'sensor', 'actuator')
    >>> device_kind(("lighting",)), device_kind(())
    (None, None)
    """
    kinds = {_CATEGORY_KIND.get(c) for c in categories}
    return next((kind for kind in ("gateway", "sensor", "actuator") if kind in kinds), None)


def relation_phase(head_kind: str, relation: str, tail_kind: str) -> int:
    """Rank of a relation in the reading order: city links, device uplinks and services, gateway links, rest.

    The order :func:`gentwin.topology.generate_topology` builds, so a generated topology reads back unchanged.

    >>> relation_phase("service", "IN", "city"), relation_phase("gateway", "CONNECTED_TO", "gateway")
    (0, 2)
    """
    if relation == "IN":
        return 0
    if relation == "SERVES_IN" or (relation == "CONNECTED_TO" and tail_kind == "gateway" and head_kind != "gateway"):
        return 1
    return 2 if relation == "CONNECTED_TO" else 3


class IngestError(TopologyError):
    """An input file (or an object to export) is malformed: the message names, where known, the file
    (``source``), the ``line``, the entity (its ``position`` in the file, from 1, and its id) and the ``field``.

    >>> str(IngestError("missing", source="a.json", position=2, field="id"))
    "a.json, entity #2, field 'id': missing"
    >>> str(IngestError("dangling", source="a.json", position=3, entity="urn:x", field="refDevice"))
    "a.json, entity #3 'urn:x', field 'refDevice': dangling"
    """

    def __init__(self, problem: str, *, source: Any = None, line: int | None = None, position: int | None = None,
                 entity: str | None = None, field: str | None = None) -> None:
        self.problem, self.line, self.position, self.entity, self.field = problem, line, position, entity, field
        self.source = None if source is None else str(source)
        which = " ".join(["entity"] + [f"#{position}"] * (position is not None) + [repr(entity)] * (entity is not None))
        where = [text for text, given in ((self.source, source is not None), (f"line {line}", line is not None),
                                          (which, position is not None or entity is not None),
                                          (f"field {field!r}", field is not None)) if given]
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


@dataclass
class EntityGraph:
    """Every entity read (any kind) and every mapped relation: what :func:`gentwin.ingest.read_graph` returns."""

    nodes: dict[str, GraphNode]
    relations: list[GraphRelation]

    def counts(self) -> dict[str, int]:
        """Number of nodes of each kind and of relations of each type."""
        return dict(Counter([n.kind for n in self.nodes.values()] + [r.type for r in self.relations]))

    def to_topology(self) -> Topology:
        """The :class:`~gentwin.topology.Topology` part: nodes of its kinds, relations of its types between them.

        A sensor's ``gateway`` and a device's ``service`` come from its relations; a sensor's ``sdm_type``,
        when not given, from the observations made by it if they agree.
        """
        kept = {nid: n for nid, n in self.nodes.items() if n.kind in NODE_KINDS}
        relations = [r for r in self.relations
                     if r.type in RELATION_TYPES and r.head in kept and r.tail in kept]
        gateway: dict[str, str] = {}
        service: dict[str, str] = {}
        observed: dict[str, set[str]] = {}
        for r in self.relations:
            if r.type == "CONNECTED_TO" and r.head in kept and kept[r.head].kind == "sensor":
                gateway[r.head] = r.tail  # a sensor has one CONNECTED_TO, its uplink (checked on reading)
            elif r.type == "SERVES_IN" and r.head in kept:
                service[r.head] = r.tail
            elif r.type == "OBSERVED_BY":
                observed.setdefault(r.tail, set()).add(self.nodes[r.head].type)
        nodes: dict[str, Node] = {}
        for nid, n in kept.items():
            extra = dict(n.fields)
            if n.kind == "sensor":
                if nid not in gateway:
                    _fail_ref(n, "refGateway", "a sensor needs a gateway in a gentwin Topology (eq. 2's g_s): give "
                              "it a refGateway, or list it in a network device's controlledAsset (read_graph "
                              "reads it without one)")
                if "sdm_type" not in extra and len(observed.get(nid, ())) == 1:
                    (extra["sdm_type"],) = observed[nid]
            if n.properties:
                extra["properties"] = dict(n.properties)
            nodes[nid] = Node(nid, n.kind, service=service.get(nid), gateway=gateway.get(nid), **extra)
        return Topology(nodes=nodes, relations=[Relation(r.head, r.type, r.tail) for r in relations])


_ATTRIBUTE_TYPES = frozenset({"Property", "Relationship", "GeoProperty", "LanguageProperty", "VocabProperty",
                              "ListProperty", "ListRelationship", "JsonProperty"})
_PAYLOAD_KEYS = ("languageMap", "vocab", "valueList", "json")
_REF_NAME = re.compile(r"ref[A-Z]")
_REL, _VALUE = "rel", "value"
_RULE_NAMES = frozenset(_RULES)
_SKIP, _REF, _OTHER = "skip", "ref", "other"
_STRING_FIELDS = ("name", "category", "sdm_type")  # Node fields carried by plain strings
# what each attribute name is for (a dict look-up per attribute keeps reading fast)
_ROLES: dict[str, str] = {"id": _SKIP, "type": _SKIP, "@context": _SKIP, "location": "location",
                          "deviceCategory": "device_category", "category": "device_category",
                          "controlledProperty": "controlled_property", "name": "name",
                          "sensorCategory": "category", "observedEntityType": "sdm_type",
                          **{name: _REF for name in _RULE_NAMES}}


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    return isinstance(value, list) and any(_has_nonfinite(v) for v in value)


def _decode(name: str, value: dict, fail: Any) -> tuple[str, Any] | None:
    """``(_REL, targets)`` or ``(_VALUE, payload)`` of an attribute object; None for a plain mapping."""
    if "object" in value:
        return _REL, _listed(value["object"])
    if "objectList" in value:
        return _REL, [o.get("object") if isinstance(o, dict) else o for o in _listed(value["objectList"])]
    if "value" in value:  # a Relationship with a value is NGSI v2 normalized
        return (_REL, _listed(value["value"])) if value.get("type") == "Relationship" else (_VALUE, value["value"])
    for key in _PAYLOAD_KEYS:
        if key in value:
            return _VALUE, value[key]
    if value.get("type") in _ATTRIBUTE_TYPES:
        fail(name, f"a {value['type']} attribute without its value ('value', 'object', 'languageMap', ...)")
    return None


def _attribute(name: str, value: Any, fail: Any, form: str | None) -> tuple[str, Any]:
    """How one attribute reads: ``(_REL, targets)`` or ``(_VALUE, payload)``, in any encoding."""
    if form != "keyValues":
        if type(value) is dict:
            decoded = _decode(name, value, fail)
            if decoded is not None:
                if decoded[0] is _VALUE and _RULES.get(name, ()) and isinstance(decoded[1], str):
                    return _REL, [decoded[1]]  # an allow-listed reference written as a Property (or v2 Text)
                return decoded
        elif type(value) is list and value and type(value[0]) is dict and _decode(name, value[0], fail):
            decoded_all = [_decode(name, v, fail) if type(v) is dict else None for v in value]  # multi-attribute
            if all(decoded_all):
                if all(d[0] == _REL for d in decoded_all):
                    return _REL, [t for d in decoded_all for t in d[1]]
                default = [d for d, v in zip(decoded_all, value) if "datasetId" not in v]
                return (default or decoded_all)[0]
        if form == "normalized":
            fail(name, f"must be an NGSI-LD attribute object such as {{\"type\": \"Property\", \"value\": ...}}, "
                       f"got {_short(value)}")
    if name in _RULE_NAMES or (_REF_NAME.match(name) and (isinstance(value, str) or (  # allow-listed: checked later
            type(value) is list and value and all(isinstance(v, str) for v in value)))):
        return _REL, _listed(value)
    return _VALUE, value


def _strings(name: str, value: Any, fail: Any) -> list[str]:
    if type(value) is list and len(value) == 1 and type(value[0]) is str and value[0]:  # the common case, fast
        return value
    items = _listed(value)
    if not items or not all(isinstance(v, str) and v for v in items):
        fail(name, f"must be a non-empty string or a list of them, got {_short(value)}")
    return items


def _location(value: Any, fail: Any) -> tuple[float, float] | None:
    """``(latitude, longitude)`` of a GeoJSON Point; None for another geometry (kept as a property)."""
    if not isinstance(value, dict) or value.get("type") != "Point":
        if isinstance(value, dict) and isinstance(value.get("type"), str) and "coordinates" in value:
            return None
        fail("location", f"must be a GeoJSON geometry such as {{\"type\": \"Point\", \"coordinates\": [lon, lat]}}, "
                         f"got {_short(value)}")
    coords = value.get("coordinates")
    if not isinstance(coords, list) or len(coords) not in (2, 3) or not all(
            type(c) in (int, float) and math.isfinite(c) for c in coords):
        fail("location", f"coordinates must be [longitude, latitude] (finite numbers), got {_short(coords)}")
    lon, lat = float(coords[0]), float(coords[1])
    if not -180.0 <= lon <= 180.0 or not -90.0 <= lat <= 90.0:
        fail("location", f"[longitude, latitude] = {_short(coords)} is outside [-180, 180] x [-90, 90]")
    return lat, lon


def _parse_entity(raw: Any, source: str, position: int, form: str | None, check_numbers: bool) -> GraphNode:
    """First pass over one entity: id, type, kind, node fields, properties and (unresolved) references."""
    label: str | None = None

    def fail(field: str | None, problem: str) -> NoReturn:
        raise IngestError(problem, source=source, position=position, entity=label, field=field)

    if type(raw) is not dict:
        fail(None, f"must be a JSON object, got {_short(raw)}")
    urn = raw.get("id")
    if not isinstance(urn, str) or not urn.strip():
        fail("id", "missing" if urn is None else f"must be a non-empty string, got {_short(urn)}")
    label = urn
    etype = raw.get("type")
    if isinstance(etype, list) and etype and all(isinstance(t, str) and t for t in etype):  # multi-typed
        etype = next((t for t in etype if kind_of_type(t) != "entity"), etype[0])
    if not isinstance(etype, str) or not etype:
        fail("type", "missing" if etype is None else f"must be a non-empty string, got {_short(etype)}")
    node_fields: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    refs: list[tuple[str, list[str]]] = []
    categories: list[str] | None = None
    objects_allowed = form != "keyValues"
    roles = _ROLES.get
    for name, value in raw.items():
        role = roles(name, _OTHER)
        if role is _SKIP:
            continue
        if check_numbers and _has_nonfinite(value):
            fail(name, f"holds a non-finite number (NaN or Infinity), which JSON does not allow: {_short(value)}")
        # fast paths for the commonest shapes (a normalized Property, a plain key-value); _attribute reads the rest
        value_type = type(value)
        if (objects_allowed and value_type is dict and value.get("type") == "Property" and "value" in value
                and role is not _REF):
            what, payload = _VALUE, value["value"]
        elif (role is _REF or form == "normalized" or value_type is dict or name.startswith("ref")
              or (value_type is list and value and type(value[0]) is dict)):
            what, payload = _attribute(name, value, fail, form)
        else:
            what, payload = _VALUE, value
        if what is _REL:
            if role is _REF:
                refs.append((name, _strings(name, payload, fail)))
            else:
                properties[name] = payload  # a relationship outside the allow-list: kept, not followed
        elif role is _OTHER:
            properties[name] = payload
        elif role == "location":
            point = _location(payload, fail)
            if point is None:
                properties[name] = payload
            else:
                node_fields["latitude"], node_fields["longitude"] = point
        elif role == "device_category" and etype == "Device" and categories is None:
            categories = _strings(name, payload, fail)
        elif role == "controlled_property" and isinstance(payload, (str, list)):
            values = _strings(name, payload, fail)
            if len(values) == 1:
                node_fields["controlled_property"] = values[0]
            else:
                properties[name] = values
        elif role in _STRING_FIELDS and isinstance(payload, str):
            node_fields[role] = payload
        else:
            properties[name] = payload
    kind = kind_of_type(etype)
    if kind == "device":  # by category; without one, by role in _assemble
        kind = device_kind(tuple(categories or ())) or "device"
    return GraphNode(urn, kind, etype, urn, source, position, node_fields, properties, refs)


def _local(urn: str) -> str:
    """The node id an NGSI-LD id gives: the part after ``urn:ngsi-ld:<Type>:``, else the whole id."""
    if urn.startswith("urn:ngsi-ld:"):
        cut = urn.find(":", 12)
        if 0 < cut < len(urn) - 1:
            return urn[cut + 1:]
    return urn


def _assemble(parsed: list[GraphNode]) -> EntityGraph:
    """Second pass: node ids, device roles, references into typed relations, structural checks."""
    by_urn: dict[str, GraphNode] = {}
    by_local: dict[str, GraphNode | None] = {}  # None: two entities share the local id
    locals_ = [_local(ent.urn) for ent in parsed]
    for ent, local in zip(parsed, locals_):
        first = by_urn.get(ent.urn)
        if first is not None:
            _fail_ref(ent, "id", f"duplicate id (also entity #{first.position} in {first.source})")
        by_urn[ent.urn] = ent
        by_local[local] = None if local in by_local else ent

    def resolve(ref: str) -> GraphNode | None:
        return by_urn.get(ref) or by_local.get(_local(ref))

    gateways_by_role = {id(t) for ent in parsed for name, targets in ent.refs if name == "refGateway"
                        for t in map(resolve, targets) if t is not None}
    for k, (ent, local) in enumerate(zip(parsed, locals_)):
        ent.id, ent.index = (local if by_local[local] is ent else ent.urn), k
        if ent.kind == "device":
            ent.kind = "gateway" if id(ent) in gateways_by_role else "sensor"

    seen: set[tuple[str, str, str]] = set()
    by_phase: tuple[list, ...] = ([], [], [], [])  # (head index, statement number, relation) per phase
    single: dict[tuple[str, str], str] = {}  # a device's uplink and service: at most one of each
    holder_rules: dict[tuple[str, str], list] = {}
    target_rules: dict[tuple[str, str, str], Any] = {}  # -> (rule, phase) or None
    for ent in parsed:
        for name, targets in ent.refs:
            rules = holder_rules.get((name, ent.kind))
            if rules is None:
                rules = holder_rules[name, ent.kind] = [r for r in _RULES.get(name, ())
                                                        if not r.holders or ent.kind in r.holders]
            if not rules:
                if name in STRICT_RELATIONSHIPS:
                    allowed = sorted({h for r in _RULES.get(name, ()) for h in r.holders})
                    _fail_ref(ent, name, f"is allowed on {' or '.join(allowed)} entities only, not on a {ent.kind}")
                ent.properties[name] = targets  # an SDM relationship on an unexpected holder: kept, not followed
                continue
            for ref in targets:
                target = resolve(ref)
                if target is None:
                    _fail_ref(ent, name, f"refers to {ref!r}, which is not an entity of the input (dangling reference)")
                if target is ent:
                    _fail_ref(ent, name, f"refers to the entity itself ({ref!r}): a self-loop is not a relation")
                found = target_rules.get((name, ent.kind, target.kind), False)
                if found is False:
                    rule = next((r for r in rules if not r.targets or target.kind in r.targets), None)
                    found = target_rules[name, ent.kind, target.kind] = rule and (rule, (
                        relation_phase(target.kind, rule.gentwin, ent.kind) if rule.inverse
                        else relation_phase(ent.kind, rule.gentwin, target.kind)))
                if not found:
                    wanted = sorted({k for r in rules for k in r.targets})
                    _fail_ref(ent, name, f"must point at a {' or '.join(wanted)}, but {ref!r} is a {target.kind}")
                rule, phase = found
                head, tail = (target, ent) if rule.inverse else (ent, target)
                key = (head.id, rule.gentwin, tail.id)
                if key in seen:  # a relation stated twice (refGateway and controlledAsset) is kept once
                    continue
                seen.add(key)
                if phase == 1:
                    other = single.setdefault((head.id, rule.gentwin), tail.id)
                    if other != tail.id:
                        what = "service" if rule.gentwin == "SERVES_IN" else "gateway (eq. 2's g_s)"
                        _fail_ref(head, name, f"a {head.kind} has at most one {what}; found {other} and {tail.id}")
                by_phase[phase].append((head.index, len(seen), GraphRelation(head.id, rule.gentwin, tail.id, name)))
    # each phase is nearly in head order already, so these sorts are close to linear; the keys are unique
    ordered = [rel for phase in by_phase for _, _, rel in sorted(phase)]
    return EntityGraph({e.id: e for e in parsed}, ordered)


def _fail_ref(ent: GraphNode, name: str, problem: str) -> NoReturn:
    raise IngestError(problem, source=ent.source, position=ent.position, entity=ent.urn, field=name)


def build_graph(sources: Iterable[tuple[str, list[Any], bool]], form: str | None = None) -> EntityGraph:
    """The :class:`EntityGraph` of parsed JSON entities: ``(source label, entities, check numbers)`` per input.

    ``check numbers`` asks for a NaN / Infinity scan (in-memory input; a file's parser refused them already).
    """
    return _assemble([_parse_entity(raw, label, k + 1, form, check)
                      for label, raws, check in sources for k, raw in enumerate(raws)])

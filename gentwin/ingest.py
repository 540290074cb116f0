"""Heterogeneous inputs into one relational form: NGSI-LD entities and sensor logs.

The first paragraph of Section II.B describes the paper's *data preprocessing*:
the topology arrives in heterogeneous formats (Smart Data Models entities,
unstructured sensor logs) and is parsed into one relational form, nodes plus
typed relations, before it goes into the knowledge graph.  This module does
that for :mod:`gentwin.topology`: it reads and writes

* **NGSI-LD entities** modelled on Smart Data Models, in both the
  *normalized* form (``{"type": "Property", "value": ...}``,
  ``{"type": "Relationship", "object": "urn:..."}``) and the *key-values* form
  (plain values), into a :class:`~gentwin.topology.Topology`;
* **plain-text sensor logs**, one line per :class:`~gentwin.topology.Instance`;
* a **data-set folder** holding both (:data:`ENTITIES_FILE`, :data:`LOG_FILE`).

Entities
--------
Every node is one entity whose id is ``urn:ngsi-ld:<Type>:<node id>``:

=========  ==============================  =======================================
node kind  NGSI type                       told apart by
=========  ==============================  =======================================
sensor     ``Device`` (Smart Data Models)  ``deviceCategory`` holds ``"sensor"``
gateway    ``Device`` (Smart Data Models)  ``deviceCategory`` holds ``"network"``
service    ``SmartCityService`` (ours)     its type
city       ``SmartCity`` (ours)            its type
=========  ==============================  =======================================

Node metadata travel as ``name``, ``location`` (a GeoJSON ``Point``; GeoJSON
puts longitude first), ``controlledProperty`` (a one-element list),
``sensorCategory`` and ``observedEntityType`` (our own attribute names for
``Node.category`` and ``Node.sdm_type``).  Relations are the relationship
properties of :data:`REF_PROPERTIES`, an explicit allow-list:

===================  ===============  ===============  ==================================
property             on               points at        relation
===================  ===============  ===============  ==================================
``refGateway``       sensor, gateway  gateway          holder ``CONNECTED_TO`` target
``refService``       sensor, gateway  service          holder ``SERVES_IN`` target
``refSmartCity``     service          city             holder ``IN`` target
``controlledAsset``  gateway          sensor, gateway  target ``CONNECTED_TO`` holder
===================  ===============  ===============  ==================================

Any other relationship (a ``ref*`` name, or a normalized ``Relationship``) is
an error naming the entity and the field; any other property is ignored.
Reading accepts either form per entity (or ``form=`` forces one); writing
produces the form asked for, and checks that what it writes reads back to the
same topology before it touches the disk.

Sensor logs
-----------
One record per line, fields separated by white space (written with tabs)::

    # gentwin sensor log v1
    # index  timestamp_s  node_id  presence  split
    0        0.0          AQ-S017  1         train

``index`` is the instance number, ``timestamp_s`` seconds since the start of
the log, ``presence`` eq. (1)'s coefficient (1 active, 0 inactive) and
``split`` one of train / validation / test.  Blank lines and lines starting
with ``#`` are skipped.  The (k, v) pairs of eq. (2) need nothing more: the
node's kind, its gateway and the gateway's sensor count d_i come from the
topology the log is read against.

Errors
------
Bad input raises :class:`IngestError` (a :class:`~gentwin.topology.TopologyError`,
hence a ``ValueError``) whose message names the file, the line where there is
one (logs, JSON syntax), the entity and the field.  Nothing is written unless
everything was valid; writes go to a temporary file (or folder) beside the
target and are then moved into place.

Examples
--------
>>> from gentwin.config import resolve
>>> from gentwin.topology import generate_dataset
>>> ds = generate_dataset(resolve("quick").topology)
>>> back = read_entities(to_entities(ds.topology, form="keyValues"))
>>> back.nodes == ds.topology.nodes, set(back.relations) == set(ds.topology.relations)
(True, True)
>>> parse_log(format_log(ds.instances), ds.topology) == ds.instances
True
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NoReturn, Sequence, Union

from .topology import SPLITS, DataSet, Instance, Node, Relation, Topology, TopologyError

__all__ = [
    "IngestError",
    "RefProperty",
    "REF_PROPERTIES",
    "ENTITY_TYPES",
    "DEVICE_CATEGORIES",
    "FORMS",
    "CONTEXT",
    "ENTITIES_FILE",
    "LOG_FILE",
    "LOG_FIELDS",
    "to_urn",
    "split_urn",
    "to_entities",
    "read_entities",
    "write_entities",
    "format_log_line",
    "format_log",
    "parse_log",
    "read_log",
    "write_log",
    "read_dataset",
    "write_dataset",
]

PathLike = Union[str, "os.PathLike[str]"]
_Fail = Callable[[str, str], NoReturn]  # fail(field, problem) raises IngestError

#: The two NGSI-LD representations (attribute objects, or plain values).
FORMS: tuple[str, ...] = ("normalized", "keyValues")

#: NGSI type of each node kind.  ``Device`` is the Smart Data Models type; the
#: Smart Data Models have no entity for a city service or the city itself, so
#: these two types are ours.
ENTITY_TYPES: dict[str, str] = {
    "sensor": "Device",
    "gateway": "Device",
    "service": "SmartCityService",
    "city": "SmartCity",
}
_KIND_OF_TYPE: dict[str, str] = {"SmartCityService": "service", "SmartCity": "city"}
_KNOWN_TYPES: tuple[str, ...] = ("Device", "SmartCityService", "SmartCity")

#: ``deviceCategory`` value (Smart Data Models enum) of each device kind.
DEVICE_CATEGORIES: dict[str, str] = {"sensor": "sensor", "gateway": "network"}

#: File name of the entities inside a data-set folder.
ENTITIES_FILE = "entities.json"
#: File name of the sensor log inside a data-set folder.
LOG_FILE = "log.txt"

#: The fields of one log line, in order.
LOG_FIELDS: tuple[str, ...] = ("index", "timestamp_s", "node_id", "presence", "split")
_LOG_HEADER = "# gentwin sensor log v1\n# " + "\t".join(LOG_FIELDS) + "\n"

#: JSON-LD contexts written into every entity (strings only; nothing is fetched).
CONTEXT: tuple[str, ...] = (
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Device/master/context.jsonld",
)

_NGSI_ATTRIBUTE_TYPES = frozenset(
    {"Property", "Relationship", "GeoProperty", "LanguageProperty", "VocabProperty", "ListProperty",
     "ListRelationship", "JsonProperty"}
)
_URN = re.compile(r"urn:ngsi-ld:([A-Za-z][A-Za-z0-9_]*):(\S+)\Z")
_REF_NAME = re.compile(r"ref[A-Z]")
_INDEX = re.compile(r"\d+\Z")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


class IngestError(TopologyError):
    """An input file (or an object to export) is malformed.

    The message names, where known, the file (``source``), the ``line``, the
    ``entity`` (an NGSI id, or ``#k`` for the k-th entity of a file when it
    has no usable id; the node id for log lines) and the ``field``.

    >>> str(IngestError("missing", source="a.json", entity="#2", field="id"))
    "a.json, entity #2, field 'id': missing"
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | os.PathLike | None = None,
        line: int | None = None,
        entity: str | None = None,
        field: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = None if source is None else str(source)
        self.line = line
        self.entity = entity
        self.field = field
        where = []
        if self.source is not None:
            where.append(self.source)
        if line is not None:
            where.append(f"line {line}")
        if entity is not None:
            where.append(f"entity {entity}" if entity.startswith("#") else f"entity {entity!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(", ".join(where) + ": " + problem if where else problem)


@dataclass(frozen=True)
class RefProperty:
    """How one NGSI relationship property becomes a typed relation.

    ``holders`` are the node kinds allowed to carry the property, ``targets``
    the kinds it may point at.  The relation runs holder -> target, or
    target -> holder when ``inverse`` is true.
    """

    name: str
    relation: str
    holders: tuple[str, ...]
    targets: tuple[str, ...]
    inverse: bool = False

    def describe(self) -> str:
        arrow = "target -> holder" if self.inverse else "holder -> target"
        return f"{self.name} ({self.relation}, {arrow})"


#: The allow-list of relationship properties (see the module docstring).
REF_PROPERTIES: tuple[RefProperty, ...] = (
    RefProperty("refGateway", "CONNECTED_TO", ("sensor", "gateway"), ("gateway",)),
    RefProperty("refService", "SERVES_IN", ("sensor", "gateway"), ("service",)),
    RefProperty("refSmartCity", "IN", ("service",), ("city",)),
    RefProperty("controlledAsset", "CONNECTED_TO", ("gateway",), ("sensor", "gateway"), inverse=True),
)
_REF_BY_NAME: dict[str, RefProperty] = {p.name: p for p in REF_PROPERTIES}
_KNOWN_REFS = ", ".join(_REF_BY_NAME)

# Node fields carried by plain properties (the ids, kind, service and gateway come from id/type/relations).
_STRING_ATTRIBUTES: dict[str, str] = {"name": "name", "sensorCategory": "category", "observedEntityType": "sdm_type"}


# ---------------------------------------------------------------------------
# Ids
# ---------------------------------------------------------------------------


def to_urn(node: Node) -> str:
    """The NGSI-LD id of a node: ``urn:ngsi-ld:<Type>:<node id>``.

    >>> to_urn(Node("AQ-GW01", "gateway"))
    'urn:ngsi-ld:Device:AQ-GW01'
    >>> to_urn(Node("CITY", "city"))
    'urn:ngsi-ld:SmartCity:CITY'
    """
    return f"urn:ngsi-ld:{ENTITY_TYPES[node.kind]}:{node.id}"


def split_urn(urn: str) -> tuple[str, str] | None:
    """``(type, local id)`` of an NGSI-LD id, or None if it is not of that shape.

    >>> split_urn("urn:ngsi-ld:Device:AQ-S001")
    ('Device', 'AQ-S001')
    >>> split_urn("AQ-S001") is None
    True
    """
    m = _URN.match(urn) if isinstance(urn, str) else None
    return (m.group(1), m.group(2)) if m else None


# ---------------------------------------------------------------------------
# Reading entities
# ---------------------------------------------------------------------------


@dataclass
class _Entity:
    """One entity after the first pass: checked on its own, references not yet resolved."""

    source: str
    urn: str
    node_id: str
    kind: str
    attrs: dict[str, Any]  # Node keyword arguments from plain properties
    refs: list[tuple[RefProperty, list[str]]]


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _load_json_entities(path: Path) -> list[Any]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IngestError(f"not UTF-8 text (byte {exc.start})", source=path, line=line) from None
    try:
        loaded = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise IngestError(f"invalid JSON at column {exc.colno}: {exc.msg}", source=path, line=exc.lineno) from None
    except _DuplicateKey as exc:
        raise IngestError(f"invalid JSON: key {exc.args[0]!r} appears twice in one object", source=path) from None
    if not isinstance(loaded, list):
        raise IngestError(f"must hold a JSON array of entities, not a JSON {type(loaded).__name__}", source=path)
    return loaded


def _sources(source: Any) -> list[tuple[str, list[Any]]]:
    """``[(label, entities), ...]`` for a path, a list of paths or a list of entity mappings."""
    if isinstance(source, (str, os.PathLike)):
        return [(str(source), _load_json_entities(Path(source)))]
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        items = list(source)
        if all(isinstance(s, (str, os.PathLike)) for s in items) and items:
            return [(str(s), _load_json_entities(Path(s))) for s in items]
        if all(isinstance(s, Mapping) for s in items):
            return [("<entities>", items)]
    raise TypeError(
        "source must be a path, a list of paths or a list of entity mappings, "
        f"got {type(source).__name__}"
    )


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nonfinite(v) for v in value)
    return False


def _is_attribute_object(value: Any) -> bool:
    """Whether ``value`` looks like a normalized NGSI-LD attribute (or a list of instances of one)."""
    if isinstance(value, Mapping):
        return value.get("type") in _NGSI_ATTRIBUTE_TYPES
    if isinstance(value, list) and value:
        return all(isinstance(v, Mapping) and v.get("type") in _NGSI_ATTRIBUTE_TYPES for v in value)
    return False


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unwrap(name: str, value: Any, fail: _Fail) -> tuple[str, Any]:
    """``(attribute type, payload)`` of a normalized attribute; relationships give a list of objects."""
    instances = value if isinstance(value, list) else [value]
    if not instances or not all(isinstance(v, Mapping) for v in instances):
        fail(name, f"must be an NGSI-LD attribute object such as {{\"type\": \"Property\", \"value\": ...}}, "
                   f"got {_short(value)}")
    kinds = set()
    objects: list[Any] = []
    payload: Any = None
    for inst in instances:
        typ = inst.get("type")
        if typ not in _NGSI_ATTRIBUTE_TYPES:
            fail(name, f"attribute type = {_short(typ)} is not an NGSI-LD attribute type "
                       f"({', '.join(sorted(_NGSI_ATTRIBUTE_TYPES))})")
        kinds.add(typ)
        if typ == "Relationship":
            if "object" not in inst:
                fail(name, "a Relationship without 'object'")
            obj = inst["object"]
            objects.extend(obj if isinstance(obj, list) else [obj])
        else:
            if "value" not in inst:
                fail(name, f"a {typ} without 'value'")
            payload = inst["value"]
    if len(kinds) > 1:
        fail(name, f"mixes attribute types {sorted(kinds)}")
    (typ,) = kinds
    if typ == "Relationship":
        return typ, objects
    if len(instances) > 1:
        fail(name, f"has {len(instances)} instances; only a Relationship may have several")
    return typ, payload


def _as_string_list(name: str, value: Any, fail: _Fail) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        fail(name, f"must be a non-empty string or a list of them, got {_short(value)}")
    return list(items)


def _location(value: Any, fail: _Fail) -> tuple[float, float]:
    """``(latitude, longitude)`` of a GeoJSON Point (whose coordinates are [longitude, latitude])."""
    if not isinstance(value, Mapping) or value.get("type") != "Point":
        fail("location", f"must be a GeoJSON Point {{\"type\": \"Point\", \"coordinates\": [lon, lat]}}, "
                         f"got {_short(value)}")
    coords = value.get("coordinates")
    if not isinstance(coords, list) or len(coords) != 2:
        fail("location", f"coordinates must be [longitude, latitude], got {_short(coords)}")
    for c in coords:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            fail("location", f"coordinates = {_short(coords)} must be two finite numbers")
    lon, lat = float(coords[0]), float(coords[1])
    if not -180.0 <= lon <= 180.0:
        fail("location", f"longitude = {coords[0]!r} is outside [-180, 180] (GeoJSON order is [lon, lat])")
    if not -90.0 <= lat <= 90.0:
        fail("location", f"latitude = {coords[1]!r} is outside [-90, 90] (GeoJSON order is [lon, lat])")
    return lat, lon


def _parse_entity(raw: Any, source: str, number: int, form: str | None) -> _Entity:
    """First pass over one entity: id, type, form, plain properties and reference lists."""
    label = f"#{number}"

    def fail(field: str | None, problem: str) -> NoReturn:
        raise IngestError(problem, source=source, entity=label, field=field)

    if not isinstance(raw, Mapping):
        fail(None, f"must be a JSON object, got {_short(raw)}")
    if "id" not in raw:
        fail("id", "missing")
    urn = raw["id"]
    if not isinstance(urn, str):
        fail("id", f"must be a string, got {_short(urn)}")
    label = urn
    if "type" not in raw:
        fail("type", "missing")
    etype = raw["type"]
    if not isinstance(etype, str):
        fail("type", f"must be a string, got {_short(etype)}")
    parts = split_urn(urn)
    if parts is None:
        fail("id", f"{urn!r} is not of the form urn:ngsi-ld:<Type>:<local id>")
    if parts[0] != etype:
        fail("id", f"type segment {parts[0]!r} differs from type = {etype!r}")
    if etype not in _KNOWN_TYPES:
        fail("type", f"{etype!r} is not one of {', '.join(_KNOWN_TYPES)} (the entity types a topology holds)")

    body = {k: v for k, v in raw.items() if k not in ("id", "type", "@context")}
    for name, value in body.items():
        if _has_nonfinite(value):
            fail(name, f"holds a non-finite number (NaN or Infinity), which JSON does not allow: {_short(value)}")
    normalized = form == "normalized" or (form is None and any(_is_attribute_object(v) for v in body.values()))

    attrs: dict[str, Any] = {}
    refs: list[tuple[RefProperty, list[str]]] = []
    categories: dict[str, list[str]] = {}
    for name, value in body.items():
        atype = None
        if normalized:
            atype, value = _unwrap(name, value, fail)
        is_ref = name in _REF_BY_NAME or bool(_REF_NAME.match(name)) or atype in ("Relationship", "ListRelationship")
        if is_ref:
            if name not in _REF_BY_NAME:
                fail(name, f"is a relationship gentwin does not map to a relation (known: {_KNOWN_REFS})")
            if normalized and atype != "Relationship":
                fail(name, f"must be a Relationship with 'object', got a {atype}")
            refs.append((_REF_BY_NAME[name], _as_string_list(name, value, fail)))
        elif name == "location":
            if normalized and atype != "GeoProperty":
                fail(name, f"must be a GeoProperty, got a {atype}")
            attrs["latitude"], attrs["longitude"] = _location(value, fail)
        elif name in ("deviceCategory", "category") and etype == "Device":
            categories[name] = _as_string_list(name, value, fail)
        elif name == "controlledProperty":
            props = _as_string_list(name, value, fail)
            if len(props) != 1:
                fail(name, f"has {len(props)} values {props}; a gentwin node carries exactly one")
            attrs["controlled_property"] = props[0]
        elif name in _STRING_ATTRIBUTES:
            if not isinstance(value, str):
                fail(name, f"must be a string, got {_short(value)}")
            attrs[_STRING_ATTRIBUTES[name]] = value
        # any other property is metadata the relational form does not need (documented)

    if etype == "Device":
        if not categories:
            fail("deviceCategory", "missing; a Device needs 'sensor' (a sensor) or 'network' (a gateway)")
        cats = {c for values in categories.values() for c in values}
        found = [kind for kind, cat in DEVICE_CATEGORIES.items() if cat in cats]
        field = "deviceCategory" if "deviceCategory" in categories else "category"
        if len(found) != 1:
            fail(field, f"= {sorted(cats)} must contain exactly one of 'sensor' (a sensor) or 'network' (a gateway)")
        kind = found[0]
    else:
        kind = _KIND_OF_TYPE[etype]
    return _Entity(source, urn, parts[1], kind, attrs, refs)


def _assemble(entities: list[_Entity]) -> Topology:
    """Second pass: resolve references into relations and build the topology."""
    by_urn: dict[str, _Entity] = {}
    by_node: dict[str, _Entity] = {}
    for ent in entities:
        for index, key, what in ((by_urn, ent.urn, "id"), (by_node, ent.node_id, "local id")):
            if key in index:
                first = index[key]
                raise IngestError(
                    f"duplicate {what} {key!r} (also entity {first.urn!r} in {first.source})",
                    source=ent.source, entity=ent.urn, field="id",
                )
            index[key] = ent

    relations: list[Relation] = []
    seen: set[Relation] = set()
    # where each sensor's gateway and each device's service came from, for cardinality errors
    stated: dict[tuple[str, str], list[str]] = {}
    for ent in entities:
        for prop, targets in ent.refs:
            if ent.kind not in prop.holders:
                raise IngestError(
                    f"is allowed on {' or '.join(prop.holders)} entities only, not on a {ent.kind}",
                    source=ent.source, entity=ent.urn, field=prop.name,
                )
            for urn in targets:
                target = by_urn.get(urn)
                if target is None:
                    raise IngestError(
                        f"refers to {urn!r}, which is not an entity of the input (dangling reference)",
                        source=ent.source, entity=ent.urn, field=prop.name,
                    )
                if target.kind not in prop.targets:
                    raise IngestError(
                        f"must point at a {' or '.join(prop.targets)}, but {urn!r} is a {target.kind}",
                        source=ent.source, entity=ent.urn, field=prop.name,
                    )
                head, tail = (target, ent) if prop.inverse else (ent, target)
                rel = Relation(head.node_id, prop.relation, tail.node_id)
                if rel not in seen:  # a relation stated twice (e.g. refGateway and controlledAsset) is kept once
                    seen.add(rel)
                    relations.append(rel)
                    stated.setdefault((head.node_id, rel.type), []).append(tail.node_id)

    nodes: dict[str, Node] = {}
    for ent in entities:
        gateway = service = None
        if ent.kind == "sensor":
            gws = [t for t in stated.get((ent.node_id, "CONNECTED_TO"), []) if by_node[t].kind == "gateway"]
            if len(gws) != 1:
                found = "none" if not gws else f"{len(gws)}: {', '.join(gws)}"
                raise IngestError(
                    f"a sensor is connected to exactly one gateway (eq. 2's g_s); found {found}",
                    source=ent.source, entity=ent.urn, field="refGateway",
                )
            gateway = gws[0]
        if ent.kind in ("sensor", "gateway"):
            svcs = stated.get((ent.node_id, "SERVES_IN"), [])
            if len(svcs) > 1:
                raise IngestError(
                    f"a device serves at most one service; found {len(svcs)}: {', '.join(svcs)}",
                    source=ent.source, entity=ent.urn, field="refService",
                )
            service = svcs[0] if svcs else None
        nodes[ent.node_id] = Node(ent.node_id, ent.kind, service=service, gateway=gateway, **ent.attrs)
    sources = {e.source for e in entities}
    label = sources.pop() if len(sources) == 1 else "<inputs>"
    try:
        return Topology(nodes=nodes, relations=relations)
    except IngestError:
        raise
    except TopologyError as exc:  # defensive: the checks above should leave nothing for validate()
        raise IngestError(str(exc), source=label) from None


def read_entities(source: Any, *, form: str | None = None) -> Topology:
    """Parse NGSI-LD entities into a :class:`~gentwin.topology.Topology`.

    Parameters
    ----------
    source
        A path to a JSON file holding an array of entities, a list of such
        paths (their entities are read together, so references may cross
        files), or a list of entity mappings.
    form
        ``None`` (default) detects the form per entity: normalized if any
        attribute is an NGSI-LD attribute object, key-values otherwise.
        ``"normalized"`` or ``"keyValues"`` forces one.

    Returns
    -------
    Topology
        One node per entity (in input order, node id = the id's local part)
        and one relation per reference (in input order, each kept once).

    Raises
    ------
    IngestError
        For malformed input; the message names the file, line (JSON syntax
        errors), entity and field.

    Examples
    --------
    >>> topo = read_entities([
    ...     {"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity"},
    ...     {"id": "urn:ngsi-ld:SmartCityService:AQ", "type": "SmartCityService",
    ...      "refSmartCity": "urn:ngsi-ld:SmartCity:C"},
    ...     {"id": "urn:ngsi-ld:Device:G1", "type": "Device", "deviceCategory": ["network"],
    ...      "refService": "urn:ngsi-ld:SmartCityService:AQ"},
    ...     {"id": "urn:ngsi-ld:Device:S1", "type": "Device",
    ...      "deviceCategory": {"type": "Property", "value": ["sensor"]},
    ...      "refGateway": {"type": "Relationship", "object": "urn:ngsi-ld:Device:G1"}},
    ... ])
    >>> [r.as_text() for r in topo.relations]
    ['(AQ, IN, C)', '(G1, SERVES_IN, AQ)', '(S1, CONNECTED_TO, G1)']
    >>> topo.nodes["S1"].gateway, topo.nodes["G1"].kind
    ('G1', 'gateway')
    """
    if form is not None and form not in FORMS:
        raise ValueError(f"form = {form!r}: must be None (detect) or one of {', '.join(FORMS)}")
    parsed = [
        _parse_entity(raw, label, k + 1, form)
        for label, raws in _sources(source)
        for k, raw in enumerate(raws)
    ]
    return _assemble(parsed)


# ---------------------------------------------------------------------------
# Writing entities
# ---------------------------------------------------------------------------


def _export_property(head: Node, tail: Node) -> Iterator[RefProperty]:
    """The writable (non-inverse) properties that can carry a relation from ``head`` to ``tail``."""
    for prop in REF_PROPERTIES:
        if not prop.inverse and head.kind in prop.holders and tail.kind in prop.targets:
            yield prop


def to_entities(topology: Topology, form: str = "normalized") -> list[dict[str, Any]]:
    """The topology as a list of NGSI-LD entities (one per node, in node order).

    Each relation is written on its head's entity, under the non-inverse
    property of :data:`REF_PROPERTIES` for its type and end kinds
    (``controlledAsset`` is read, never written).  A relation with no such
    property raises :class:`IngestError`.  This does not check that the
    entities read back to the same topology; :func:`write_entities` does.

    >>> from gentwin.topology import Relation, Topology
    >>> topo = Topology({"C": Node("C", "city"), "W": Node("W", "service", name="waste")},
    ...                 [Relation("W", "IN", "C")])
    >>> to_entities(topo, form="keyValues")[1]["refSmartCity"]
    'urn:ngsi-ld:SmartCity:C'
    >>> to_entities(topo)[1]["name"]
    {'type': 'Property', 'value': 'waste'}
    """
    if form not in FORMS:
        raise ValueError(f"form = {form!r}: must be one of {', '.join(FORMS)}")
    normalized = form == "normalized"

    def prop(value: Any) -> Any:
        return {"type": "Property", "value": value} if normalized else value

    outgoing: dict[str, list[Relation]] = {nid: [] for nid in topology.nodes}
    for rel in topology.relations:
        outgoing[rel.head].append(rel)

    entities = []
    for node in topology.nodes.values():
        urn = to_urn(node)
        ent: dict[str, Any] = {"id": urn, "type": ENTITY_TYPES[node.kind]}
        if node.kind in DEVICE_CATEGORIES:
            ent["deviceCategory"] = prop([DEVICE_CATEGORIES[node.kind]])
        for attr, fieldname in _STRING_ATTRIBUTES.items():
            value = getattr(node, fieldname)
            if value is not None:
                ent[attr] = prop(value)
        if node.controlled_property is not None:
            ent["controlledProperty"] = prop([node.controlled_property])
        if node.latitude is not None or node.longitude is not None:
            point = {"type": "Point", "coordinates": [node.longitude, node.latitude]}
            ent["location"] = {"type": "GeoProperty", "value": point} if normalized else point
        targets: dict[str, list[str]] = {}
        for rel in outgoing[node.id]:
            tail = topology.nodes[rel.tail]
            names = [p.name for p in _export_property(node, tail) if p.relation == rel.type]
            if not names:
                raise IngestError(
                    f"relation {rel.as_text()} from a {node.kind} to a {tail.kind} has no NGSI property "
                    f"(mapped relations: {'; '.join(p.describe() for p in REF_PROPERTIES if not p.inverse)})",
                    entity=urn, field=rel.type,
                )
            targets.setdefault(names[0], []).append(to_urn(tail))
        for name, urns in targets.items():
            obj: Any = urns[0] if len(urns) == 1 else urns
            ent[name] = {"type": "Relationship", "object": obj} if normalized else obj
        ent["@context"] = list(CONTEXT)
        entities.append(ent)
    return entities


def _render_entities(topology: Topology, path: Path, form: str) -> str:
    """JSON text of the entities, after checking that it reads back to ``topology``."""
    try:
        entities = to_entities(topology, form)
    except IngestError as exc:
        raise IngestError(exc.problem, source=path, entity=exc.entity, field=exc.field) from None
    try:
        back = _assemble([_parse_entity(e, str(path), k + 1, form) for k, e in enumerate(entities)])
    except IngestError as exc:
        raise IngestError(f"would not read back: {exc.problem}", source=path, entity=exc.entity,
                          field=exc.field) from None
    for nid, node in topology.nodes.items():
        other = back.nodes[nid]
        for f in fields(Node):
            if getattr(node, f.name) != getattr(other, f.name):
                raise IngestError(
                    f"node field {f.name} = {getattr(node, f.name)!r} would read back as {getattr(other, f.name)!r} "
                    "(the relations or the node kind do not carry it)",
                    source=path, entity=to_urn(node), field=f.name,
                )
    if set(back.relations) != set(topology.relations):  # cannot happen: every relation was mapped above
        missing = sorted(set(topology.relations) - set(back.relations))
        raise IngestError(f"relations {[r.as_text() for r in missing[:3]]} would not read back", source=path)
    try:
        return json.dumps(entities, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as exc:  # NaN / Infinity in a node field
        raise IngestError(f"cannot be written as JSON: {exc}", source=path) from None


def write_entities(topology: Topology, path: PathLike, form: str = "normalized") -> None:
    """Write the topology as a JSON array of NGSI-LD entities, atomically.

    The entities are checked to read back (with :func:`read_entities`) to the
    same nodes and relation set before anything is written; otherwise
    :class:`IngestError` names the node and field, and ``path`` is untouched.
    """
    path = Path(path)
    _atomic_write_text(path, _render_entities(topology, path, form))


# ---------------------------------------------------------------------------
# Sensor logs
# ---------------------------------------------------------------------------


def _check_instance(inst: Instance, source: str | None) -> None:
    def fail(field: str, problem: str) -> NoReturn:
        raise IngestError(problem, source=source, entity=f"#{inst.index}" if field == "node_id" else str(inst.node_id),
                          field=field)

    if isinstance(inst.index, bool) or not isinstance(inst.index, int) or inst.index < 0:
        fail("index", f"= {inst.index!r} must be an integer >= 0")
    ts = inst.timestamp
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
        fail("timestamp_s", f"= {ts!r} must be a finite number of seconds >= 0")
    if not isinstance(inst.node_id, str) or not inst.node_id or any(c.isspace() for c in inst.node_id):
        fail("node_id", f"= {inst.node_id!r} must be a non-empty string without white space")
    if not isinstance(inst.present, bool):
        fail("presence", f"= {inst.present!r} must be True or False")
    if inst.split not in SPLITS:
        fail("split", f"= {inst.split!r} must be one of {', '.join(SPLITS)}")


def format_log_line(inst: Instance) -> str:
    """One log line (tab-separated, no newline); floats keep their exact value.

    >>> format_log_line(Instance(3, 6.0, "AQ-S001", False, "test"))
    '3\\t6.0\\tAQ-S001\\t0\\ttest'
    """
    _check_instance(inst, None)
    return f"{inst.index}\t{float(inst.timestamp)!r}\t{inst.node_id}\t{int(inst.present)}\t{inst.split}"


def format_log(instances: Iterable[Instance]) -> str:
    """The whole log text: a two-line ``#`` header, then one line per instance."""
    return _LOG_HEADER + "".join(format_log_line(i) + "\n" for i in instances)


def parse_log(text: str, topology: Topology, *, source: str = "<log>") -> list[Instance]:
    """Parse log text (see the module docstring) against ``topology``.

    Every node must be a sensor or gateway of ``topology``, indices must be
    unique, and all records of one node must fall in one split (no leakage
    between train, validation and test).

    >>> from gentwin.topology import Topology
    >>> topo = Topology({"G": Node("G", "gateway"), "S": Node("S", "sensor", gateway="G")}, [])
    >>> parse_log("# comment\\n0 0.0 S 1 train\\n1  2.5  G  0  test\\n", topo)[1]
    Instance(index=1, timestamp=2.5, node_id='G', present=False, split='test')
    """
    instances: list[Instance] = []
    index_line: dict[int, int] = {}
    node_split: dict[str, tuple[str, int]] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()

        def fail(field: str, problem: str, entity: str | None = None) -> NoReturn:
            raise IngestError(problem, source=source, line=lineno, entity=entity, field=field)

        if len(parts) != len(LOG_FIELDS):
            fail("line", f"has {len(parts)} fields, expected {len(LOG_FIELDS)} ({' '.join(LOG_FIELDS)}): {line!r}")
        idx, ts, node_id, presence, split = parts
        if not _INDEX.match(idx):
            fail("index", f"= {idx!r} must be an integer >= 0")
        index = int(idx)
        if index in index_line:
            fail("index", f"= {index} was already used on line {index_line[index]}")
        if not _NUMBER.match(ts):
            fail("timestamp_s", f"= {ts!r} is not a number of seconds", node_id)
        timestamp = float(ts)
        if not math.isfinite(timestamp) or timestamp < 0:
            fail("timestamp_s", f"= {ts!r} must be a finite number of seconds >= 0", node_id)
        node = topology.nodes.get(node_id)
        if node is None:
            fail("node_id", f"= {node_id!r} is not a node of the topology", node_id)
        if node.kind not in ("sensor", "gateway"):
            fail("node_id", f"= {node_id!r} is a {node.kind}; the log records sensors and gateways only", node_id)
        if presence not in ("0", "1"):
            fail("presence", f"= {presence!r} must be 1 (active) or 0 (inactive)", node_id)
        if split not in SPLITS:
            fail("split", f"= {split!r} must be one of {', '.join(SPLITS)}", node_id)
        first = node_split.setdefault(node_id, (split, lineno))
        if first[0] != split:
            fail("split", f"= {split!r}, but line {first[1]} puts this node in {first[0]!r} "
                          "(a node's records must stay in one split)", node_id)
        index_line[index] = lineno
        instances.append(Instance(index, timestamp, node_id, presence == "1", split))
    return instances


def read_log(path: PathLike, topology: Topology) -> list[Instance]:
    """Read a plain-text sensor log (see :func:`parse_log`)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError("not UTF-8 text", source=path, line=data[: exc.start].count(b"\n") + 1) from None
    return parse_log(text, topology, source=str(path))


def write_log(instances: Sequence[Instance], path: PathLike, topology: Topology | None = None) -> None:
    """Write a sensor log atomically.

    Each instance is checked first (:class:`IngestError` naming the field);
    with ``topology`` the text is also parsed back against it, so a log that
    :func:`read_log` would reject is never written.
    """
    path = Path(path)
    try:
        text = format_log(instances)
    except IngestError as exc:
        raise IngestError(exc.problem, source=path, entity=exc.entity, field=exc.field) from None
    if topology is not None:
        parse_log(text, topology, source=str(path))
    _atomic_write_text(path, text)


# ---------------------------------------------------------------------------
# Data-set folders
# ---------------------------------------------------------------------------


def read_dataset(folder: PathLike) -> DataSet:
    """Read a data-set folder: :data:`ENTITIES_FILE` and :data:`LOG_FILE`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data-set folder {str(folder)!r} does not exist")
    for name in (ENTITIES_FILE, LOG_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"data-set folder {str(folder)!r} has no {name}")
    topology = read_entities(folder / ENTITIES_FILE)
    return DataSet(topology=topology, instances=read_log(folder / LOG_FILE, topology))


def write_dataset(dataset: DataSet, folder: PathLike, form: str = "normalized") -> None:
    """Write a data set as a folder holding :data:`ENTITIES_FILE` and :data:`LOG_FILE`.

    Both files are rendered and checked (they must read back to the same
    data set) before anything is written, then written into a temporary
    folder beside ``folder`` that is moved into place.  An existing ``folder``
    is replaced only if it holds nothing but those two files.
    """
    folder = Path(folder)
    entities = _render_entities(dataset.topology, folder / ENTITIES_FILE, form)
    log_path = folder / LOG_FILE
    try:
        log = format_log(dataset.instances)
    except IngestError as exc:
        raise IngestError(exc.problem, source=log_path, entity=exc.entity, field=exc.field) from None
    parse_log(log, dataset.topology, source=str(log_path))
    _write_folder_atomically(folder, {ENTITIES_FILE: entities, LOG_FILE: log})


# ---------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then move it into place."""
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _write_synced(Path(tmp), text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_folder_atomically(folder: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` into a temporary folder beside ``folder``, then swap it in."""
    if folder.exists():
        if not folder.is_dir():
            raise NotADirectoryError(f"{str(folder)!r} exists and is not a folder")
        extra = sorted(p.name for p in folder.iterdir() if p.name not in files)
        if extra:
            raise FileExistsError(
                f"{str(folder)!r} holds files other than {', '.join(files)} ({', '.join(extra[:5])}); "
                "refusing to replace it"
            )
        mode = folder.stat().st_mode & 0o777
    else:
        folder.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o777 & ~_umask()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for name, text in files.items():
            _write_synced(tmp / name, text)
            os.chmod(tmp / name, 0o666 & ~_umask())
        os.chmod(tmp, mode)
        if folder.exists():
            old = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.old"
            os.rename(folder, old)
            try:
                os.rename(tmp, folder)
            except BaseException:
                os.rename(old, folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

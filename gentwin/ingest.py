"""Heterogeneous inputs into one relational form: Smart Data Models / NGSI-LD entities and sensor logs.

Section II.B's door to the knowledge graph: entities through :data:`gentwin.sdm.SDM_MAPPING`, a topology
written so that it reads back identical, the sensor log (one white-space separated record per line:
``index timestamp_s node_id presence split``, ``#`` comments) and the book's data set.  Bad input raises
:class:`IngestError` naming the file, line, entity and field; writes are atomic.  gentwin writes sensors and
gateways as ``Device`` entities (``deviceCategory`` ``sensor`` / ``network``), services and the city as
``SmartCityService`` and ``SmartCity``, ids as ``urn:ngsi-ld:<Type>:<node id>``.

>>> from gentwin.config import resolve
>>> ds = generate_dataset(resolve("quick").topology)
>>> read_entities(to_entities(ds.topology, form="keyValues")) == ds.topology
True
>>> parse_log(format_log(ds.instances), ds.topology) == ds.instances
True
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, NoReturn, Sequence, Union

import numpy as np

from .checks import check_choice, check_int, check_real
from .files import atomic_folder, atomic_write_text
from .sdm import SDM_MAPPING, STRICT_RELATIONSHIPS, EntityGraph, IngestError, build_graph, mapping_table
from .topology import SPLITS, DataSet, Instance, Node, Relation, Topology, generate_dataset

__all__ = [
    "IngestError", "SDM_MAPPING", "mapping_table", "FORMS", "ENTITY_TYPES", "DEVICE_CATEGORIES", "CONTEXT",
    "LOG_FILE", "LOG_FIELDS", "MAX_DEPTH", "MAX_NUMBER_CHARS", "SDM_SAMPLE", "BOOK_FILES",
    "BOOK_DATA_DIR", "book_data_folder", "load_book_dataset", "to_urn", "read_graph", "read_entities",
    "to_entities", "write_entities", "format_log", "parse_log", "read_log", "write_log",
    "book_dataset",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The two NGSI-LD representations the writer produces.
FORMS: tuple[str, ...] = ("normalized", "keyValues")
#: NGSI type of each node kind (the writer's vocabulary).
ENTITY_TYPES: dict[str, str] = {"sensor": "Device", "gateway": "Device", "service": "SmartCityService",
                                "city": "SmartCity"}
#: ``deviceCategory`` value (SDM enumeration) the writer gives each device kind.
DEVICE_CATEGORIES: dict[str, str] = {"sensor": "sensor", "gateway": "network"}
LOG_FILE = "log.txt"
#: File names of the book's data-set folder (:func:`book_dataset`).
BOOK_FILES: dict[str, str] = {"normalized": "entities.normalized.jsonld", "keyValues": "entities.keyValues.json",
                              "log": LOG_FILE, "settings": "settings.json"}
LOG_FIELDS: tuple[str, ...] = ("index", "timestamp_s", "node_id", "presence", "split")
_LOG_HEADER = "# gentwin sensor log v1\n# " + "\t".join(LOG_FIELDS) + "\n"
#: JSON-LD contexts written into every entity (strings only; nothing is fetched).
CONTEXT: tuple[str, ...] = (
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Device/master/context.jsonld")
#: Deepest JSON nesting a file may have (a GeoJSON MultiPolygon attribute needs about 8).
MAX_DEPTH = 64
#: Longest number literal, in characters, a file may hold.
MAX_NUMBER_CHARS = 100
#: The hand-written second city shipped with the package (Smart Data Models form).
SDM_SAMPLE = Path(__file__).parent / "data" / "sdm_sample"
#: where the chapters keep the book's data set, under the book's root (a build output, like the pages)
BOOK_DATA_DIR = Path("book") / "executed" / "data"

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


def to_urn(node: Node) -> str:
    """The NGSI-LD id gentwin writes for a node.

    >>> to_urn(Node("AQ-GW01", "gateway")), to_urn(Node("CITY", "city"))
    ('urn:ngsi-ld:Device:AQ-GW01', 'urn:ngsi-ld:SmartCity:CITY')
    """
    return f"urn:ngsi-ld:{ENTITY_TYPES[node.kind]}:{node.id}"


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic collector: it would rescan the millions of small acyclic containers read (half the time)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@contextlib.contextmanager
def _sourced(path: Path, prefix: str = ""):
    """Name ``path`` as the source of an :class:`IngestError` raised inside (its problem after ``prefix``)."""
    try:
        yield
    except IngestError as exc:
        raise IngestError(prefix + exc.problem, source=path, entity=exc.entity, field=exc.field) from None


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"not UTF-8 text (byte {exc.start})", source=path,
                          line=data[: exc.start].count(b"\n") + 1) from None


class _BadLiteral(Exception):
    pass


def _short_literal(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise _BadLiteral(text, f"a number of {len(text)} characters (limit MAX_NUMBER_CHARS = {MAX_NUMBER_CHARS})")
    return text


def _parse_float(text: str) -> float:
    value = float(_short_literal(text))
    if not math.isfinite(value):
        raise _BadLiteral(text, f"the number {text[:20]} overflows a float")
    return value


def _parse_constant(text: str) -> NoReturn:
    raise _BadLiteral(text, f"{text} is not a JSON number (JSON has no NaN or Infinity)")


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|[\[\]{},]', re.S)


def _fail_at(path: Path, text: str, offset: int, problem: str) -> NoReturn:
    """Raise ``problem`` naming the line, column, entity position and field of character ``offset`` (slow)."""
    stack: list[list[Any]] = []  # [bracket, commas seen, last key]
    for m in _TOKEN.finditer(text, 0, offset):
        tok = m.group()
        if tok in "[{":
            stack.append([tok, 0, None])
        elif tok in "]}":
            stack and stack.pop()
        elif tok == ",":
            stack and stack[-1].__setitem__(1, stack[-1][1] + 1)
        elif m.group(1) and stack:
            stack[-1][2] = json.loads(tok[: tok.rindex(":")].rstrip())
    line = text.count("\n", 0, offset) + 1
    col = offset - text.rfind("\n", 0, offset)
    level = 1 if stack and stack[0][0] == "{" and stack[0][2] == "@graph" and len(stack) > 1 else 0
    position = stack[level][1] + 1 if stack and stack[level][0] == "[" else (1 if stack else None)
    obj = level + 1 if stack and stack[level][0] == "[" else level
    field = stack[obj][2] if len(stack) > obj else None
    raise IngestError(f"{problem} at column {col}", source=path, line=line, position=position, field=field) from None


_BRACKET_CHARS = np.zeros(256, dtype=bool)
_BRACKET_CHARS[list(b'"\\[]{}')] = True
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[list(b"[{")], _BRACKET_STEP[list(b"]}")] = 1, -1
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b'"\\[]{}')))


def _too_deep(data: bytes) -> int | None:
    """Byte offset where the JSON nesting first exceeds :data:`MAX_DEPTH`, or None (vectorised scan).

    >>> _too_deep(b'[{"a": "[[[", "b": [1]}]'), _too_deep(b'[' * 70 + b']' * 70)
    (None, 64)
    """
    quick = data.translate(None, _NOT_BRACKETS)
    if b"\\" not in quick:  # without escapes, a string's brackets sit between two quotes: drop quote pairs
        quick = quick.replace(b'""', b"")
        if b'"' not in quick:  # no string holds a bracket: the depth is a running sum over the brackets alone
            steps = _BRACKET_STEP[np.frombuffer(quick, dtype=np.uint8)]
            if len(steps) == 0 or np.cumsum(steps, dtype=np.int32).max() <= MAX_DEPTH:
                return None
    raw = np.frombuffer(data, dtype=np.uint8)
    where = np.flatnonzero(_BRACKET_CHARS[raw])
    chars = raw[where]
    backslashes = where[chars == 92]
    if len(backslashes):  # drop escaped characters (a quote or bracket after a live backslash)
        escaped, last = set(), -2
        for p in backslashes.tolist():
            if p != last:
                escaped.add(p + 1)
                last = p + 1
        keep = ~np.isin(where, np.fromiter(escaped, dtype=np.int64)) & (chars != 92)
        where, chars = where[keep], chars[keep]
    quote = chars == 34
    outside = (np.cumsum(quote) & 1) == 0
    step = (((chars == 91) | (chars == 123)).astype(np.int32) - ((chars == 93) | (chars == 125))) * outside
    depth = np.cumsum(step)
    if len(depth) == 0 or depth.max() <= MAX_DEPTH:
        return None
    return int(where[int(np.argmax(depth > MAX_DEPTH))])


def _load_json(path: Path) -> list[Any]:
    """The entities of one file: a single entity, an array, or an object with an ``@graph`` array."""
    text = _read_text(path)
    data = text.encode()
    deep = _too_deep(data)
    if deep is not None:
        offset = len(data[:deep].decode(errors="ignore"))
        _fail_at(path, text, offset, f"nesting deeper than MAX_DEPTH = {MAX_DEPTH} levels")
    try:
        loaded = json.loads(text, parse_int=lambda t: int(_short_literal(t)), parse_float=_parse_float,
                            parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise IngestError(f"invalid JSON at column {exc.colno}: {exc.msg}", source=path, line=exc.lineno) from None
    except _BadLiteral as exc:
        literal, problem = exc.args
        hit = re.search(r"(?<![\w.\"])" + re.escape(literal), text)
        _fail_at(path, text, hit.start() if hit else 0, problem)
    if isinstance(loaded, dict) and isinstance(loaded.get("@graph"), list):
        return loaded["@graph"]
    if isinstance(loaded, (dict, list)):
        return [loaded] if isinstance(loaded, dict) else loaded
    raise IngestError(f"must hold an entity, an array of entities or an @graph, not a JSON "
                      f"{type(loaded).__name__}", source=path)


def _sources(source: Any) -> list[tuple[str, list[Any], bool]]:
    """``[(label, entities, from a file), ...]`` for a path, a folder, a list of paths or of mappings."""
    if isinstance(source, dict):
        return [("<entities>", [source], False)]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonld") and p.is_file())
            if not files:
                raise IngestError("holds no .json or .jsonld file", source=path)
            return [(str(p), _load_json(p), True) for p in files]
        return [(str(path), _load_json(path), True)]
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)) and source:
        if all(isinstance(s, (str, os.PathLike)) for s in source):
            return [entry for s in source for entry in _sources(s)]
        if all(isinstance(s, dict) for s in source):
            return [("<entities>", list(source), False)]
    raise TypeError("source must be a path (file or folder), a list of paths, an entity mapping or a list of "
                    f"them, got {type(source).__name__}")


def read_graph(source: Any, *, form: str | None = None) -> EntityGraph:
    """Read NGSI-LD / Smart Data Models entities into an :class:`~gentwin.sdm.EntityGraph`.

    ``source``: a ``.json`` / ``.jsonld`` file (an entity, an array or an ``@graph``), a folder of them, a
    list of files, an entity mapping or a list of them.  Each attribute is decoded in whichever encoding it
    comes unless ``form`` forces one.  A node's id is the local part of an ``urn:ngsi-ld:`` id when unique.

    >>> g = read_graph([
    ...     {"id": "urn:ngsi-ld:Device:d1", "type": "Device", "deviceCategory": ["sensor"],
    ...      "controlledProperty": ["fillingLevel", "temperature"], "batteryLevel": 0.75},
    ...     {"id": "obs-1", "type": "AirQualityObserved", "refDevice": "urn:ngsi-ld:Device:d1",
    ...      "no2": {"type": "Property", "value": 22, "unitCode": "GQ"}}])
    >>> [r.as_text() for r in g.relations], g.nodes["d1"].kind, g.nodes["obs-1"].properties
    (['(obs-1, OBSERVED_BY, d1)'], 'sensor', {'no2': 22})
    """
    if form is not None:
        check_choice("form", form, FORMS)
    with _gc_paused():
        return build_graph(((label, raws, not from_file) for label, raws, from_file in _sources(source)), form)


def read_entities(source: Any, *, form: str | None = None) -> Topology:
    """Read entities (see :func:`read_graph`) into a :class:`~gentwin.topology.Topology` (see ``to_topology``).

    >>> topo = read_entities([
    ...     {"id": "urn:ngsi-ld:SmartCity:C", "type": "SmartCity"},
    ...     {"id": "urn:ngsi-ld:SmartCityService:AQ", "type": "SmartCityService",
    ...      "refSmartCity": "urn:ngsi-ld:SmartCity:C"},
    ...     {"id": "urn:ngsi-ld:Device:G1", "type": "Device", "deviceCategory": ["network"],
    ...      "refService": "urn:ngsi-ld:SmartCityService:AQ"},
    ...     {"id": "urn:ngsi-ld:Device:S1", "type": "Device",
    ...      "deviceCategory": {"type": "Property", "value": ["sensor"]},
    ...      "refGateway": {"type": "Relationship", "object": "urn:ngsi-ld:Device:G1"}}])
    >>> [r.as_text() for r in topo.relations], topo.nodes["S1"].gateway
    (['(AQ, IN, C)', '(G1, SERVES_IN, AQ)', '(S1, CONNECTED_TO, G1)'], 'G1')
    """
    graph = read_graph(source, form=form)
    with _gc_paused():
        return graph.to_topology()


# the writer's property for each (head kind, relation, tail kind): gentwin's own rows of SDM_MAPPING
_WRITTEN = {(head, row.gentwin, tail): row.sdm for row in SDM_MAPPING
            if row.source == "relationship" and row.sdm in STRICT_RELATIONSHIPS and not row.inverse
            for head in row.holders if head in ENTITY_TYPES for tail in row.targets if tail in ENTITY_TYPES}
_FIELD_ATTRIBUTES = (("name", "name"), ("category", "sensorCategory"), ("sdm_type", "observedEntityType"))


def to_entities(topology: Topology, form: str = "normalized") -> list[dict[str, Any]]:
    """The topology as NGSI-LD entities in gentwin's vocabulary, one per node; each relation on its head.

    >>> topo = Topology({"C": Node("C", "city"), "W": Node("W", "service", name="waste")},
    ...                 [Relation("W", "IN", "C")])
    >>> to_entities(topo, form="keyValues")[1]["refSmartCity"], to_entities(topo)[1]["name"]
    ('urn:ngsi-ld:SmartCity:C', {'type': 'Property', 'value': 'waste'})
    """
    check_choice("form", form, FORMS)
    normalized = form == "normalized"

    def prop(value: Any) -> Any:
        return {"type": "Property", "value": value} if normalized else value

    for node in topology.nodes.values():
        if node.kind not in ENTITY_TYPES:
            raise IngestError(f"a {node.kind} node has no entity type in gentwin's vocabulary (written: "
                              f"{', '.join(ENTITY_TYPES)})", entity=node.id, field="kind")
    outgoing: dict[str, dict[str, list[str]]] = {nid: {} for nid in topology.nodes}
    for rel in topology.relations:
        head, tail = topology.nodes[rel.head], topology.nodes[rel.tail]
        name = _WRITTEN.get((head.kind, rel.type, tail.kind))
        if name is None:
            raise IngestError(f"relation {rel.as_text()} from a {head.kind} to a {tail.kind} has no NGSI property "
                              f"(written: {', '.join(sorted(set(_WRITTEN.values())))})", entity=to_urn(head),
                              field=rel.type)
        outgoing[rel.head].setdefault(name, []).append(to_urn(tail))
    entities = []
    for node in topology.nodes.values():
        ent: dict[str, Any] = {"id": to_urn(node), "type": ENTITY_TYPES[node.kind]}
        if node.kind in DEVICE_CATEGORIES:
            ent["deviceCategory"] = prop([DEVICE_CATEGORIES[node.kind]])
        for fieldname, attr in _FIELD_ATTRIBUTES:
            if getattr(node, fieldname) is not None:
                ent[attr] = prop(getattr(node, fieldname))
        if node.controlled_property is not None:
            ent["controlledProperty"] = prop([node.controlled_property])
        if node.latitude is not None or node.longitude is not None:
            point = {"type": "Point", "coordinates": [node.longitude, node.latitude]}
            ent["location"] = {"type": "GeoProperty", "value": point} if normalized else point
        for name, value in (node.properties or {}).items():  # kept SDM attributes
            ent.setdefault(name, prop(value))
        for name, urns in outgoing[node.id].items():
            obj: Any = urns[0] if len(urns) == 1 else urns
            ent[name] = {"type": "Relationship", "object": obj} if normalized else obj
        ent["@context"] = list(CONTEXT)
        entities.append(ent)
    return entities


def _render_entities(topology: Topology, path: Path, form: str) -> str:
    """JSON text of the entities, after checking that it reads back to the identical ``topology``."""
    with _sourced(path):
        entities = to_entities(topology, form)
    try:
        text = json.dumps(entities, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as exc:  # NaN / Infinity in a node field
        raise IngestError(f"cannot be written as JSON: {exc}", source=path) from None
    with _sourced(path, "would not read back: "):
        back = read_entities(entities, form=form)
    for nid, node in topology.nodes.items():
        for name, value in vars(node).items():
            if vars(back.nodes[nid])[name] != value:
                raise IngestError(f"node field {name} = {value!r} would read back as {vars(back.nodes[nid])[name]!r} "
                                  "(the relations or the node kind do not carry it)", source=path,
                                  entity=to_urn(node), field=name)
    return text


def write_entities(topology: Topology, path: PathLike, form: str = "normalized") -> None:
    """Write the topology as a JSON array of NGSI-LD entities, atomically, after checking it reads back."""
    path = Path(path)
    atomic_write_text(path, _render_entities(topology, path, form))


def _log_line(inst: Instance) -> str:
    """One log line (tab-separated, no newline), after checking each field; floats keep their exact value."""
    def fail(field: str, problem: str) -> NoReturn:
        raise IngestError(problem, entity=f"#{inst.index}" if field == "node_id" else str(inst.node_id), field=field)

    for name, value, check in (("index", inst.index, check_int), ("timestamp_s", inst.timestamp, check_real)):
        try:
            check(name, value, low=0)
        except ValueError as exc:
            fail(name, f"= {value!r}: {str(exc).split(': ', 1)[1]}" + (" (seconds)" if name == "timestamp_s" else ""))
    node_id_ok = isinstance(inst.node_id, str) and inst.node_id and not any(c.isspace() for c in inst.node_id)
    for name, value, ok, rule in (("node_id", inst.node_id, node_id_ok, "a non-empty string without white space"),
                                  ("presence", inst.present, isinstance(inst.present, bool), "True or False"),
                                  ("split", inst.split, inst.split in SPLITS, f"one of {', '.join(SPLITS)}")):
        if not ok:
            fail(name, f"= {value!r} must be {rule}")
    return f"{inst.index}\t{float(inst.timestamp)!r}\t{inst.node_id}\t{int(inst.present)}\t{inst.split}"


def format_log(instances: Iterable[Instance]) -> str:
    """The whole log text: a two-line ``#`` header, then one line per instance.

    >>> format_log([Instance(3, 6.0, "AQ-S001", False, "test")]).splitlines()[-1]
    '3\\t6.0\\tAQ-S001\\t0\\ttest'
    """
    return _LOG_HEADER + "".join(_log_line(i) + "\n" for i in instances)


def parse_log(text: str, topology: Topology, *, source: str = "<log>") -> list[Instance]:
    """Parse log text against ``topology``: devices only, unique indices, each node's records in one split.

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
        if not idx.isdecimal():
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
    return parse_log(_read_text(Path(path)), topology, source=str(path))


def write_log(instances: Sequence[Instance], path: PathLike, topology: Topology | None = None) -> None:
    """Write a sensor log atomically; with ``topology``, only one that :func:`read_log` would accept."""
    path = Path(path)
    with _sourced(path):
        text = format_log(instances)
    if topology is not None:
        parse_log(text, topology, source=str(path))
    atomic_write_text(path, text)


def _book_settings(topology_config: Any) -> dict[str, Any]:
    return {"format": "gentwin book data set v1", "topology": json.loads(json.dumps(asdict(topology_config)))}


def book_data_folder(topology_config: Any, root: PathLike = ".") -> Path:
    """``root/book/executed/data/city-<digest>``: one folder per data-set setting (every field of the config).

    >>> from gentwin.config import resolve
    >>> a = book_data_folder(resolve("quick").topology)
    >>> a.parent.as_posix(), a == book_data_folder(resolve("quick", n_sensors=30).topology)
    ('book/executed/data', False)
    """
    text = json.dumps(_book_settings(topology_config), sort_keys=True)
    return Path(root) / BOOK_DATA_DIR / f"city-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def load_book_dataset(topology_config: Any, root: PathLike = ".") -> DataSet:
    """The data set every chapter uses: :func:`book_dataset` in :func:`book_data_folder`."""
    return book_dataset(topology_config, book_data_folder(topology_config, root))


def book_dataset(topology_config: Any, folder: PathLike) -> DataSet:
    """The book's data set, always read back through this module.

    An absent or empty ``folder`` first gets the generated city in both encodings (:data:`BOOK_FILES`), the
    log and the settings; both encodings must read back to the same topology.  A folder written from other
    settings raises :class:`IngestError` instead of being reused.

    >>> import tempfile
    >>> from gentwin.config import resolve
    >>> cfg = resolve("quick").topology
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ds = book_dataset(cfg, Path(tmp) / "city")
    ...     names = sorted(p.name for p in (Path(tmp) / "city").iterdir())
    >>> ds.topology == generate_dataset(cfg).topology, names
    (True, ['entities.keyValues.json', 'entities.normalized.jsonld', 'log.txt', 'settings.json'])
    """
    folder = Path(folder)
    settings = _book_settings(topology_config)
    settings_path = folder / BOOK_FILES["settings"]
    if folder.is_dir() and any(folder.iterdir()):
        if not settings_path.is_file():
            raise IngestError(f"holds no {BOOK_FILES['settings']}: not a book data-set folder; refusing to reuse "
                              "or replace it", source=folder)
        try:
            recorded = json.loads(settings_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise IngestError(f"is not readable JSON ({exc}); delete the folder to write it again",
                              source=settings_path) from None
        if recorded != settings:
            old = recorded.get("topology") if isinstance(recorded, dict) else None
            changed = sorted(k for k in settings["topology"] if not isinstance(old, dict)
                             or old.get(k) != settings["topology"][k])
            raise IngestError(f"was written from other settings (differs in {', '.join(changed) or 'format'}); "
                              "delete the folder or use another one", source=settings_path)
        missing = [n for n in BOOK_FILES.values() if not (folder / n).is_file()]
        if missing:
            raise IngestError(f"lacks {', '.join(missing)}; delete the folder to write it again", source=folder)
    else:
        ds = generate_dataset(topology_config)
        files = {BOOK_FILES[form]: _render_entities(ds.topology, folder / BOOK_FILES[form], form) for form in FORMS}
        files[BOOK_FILES["log"]] = format_log(ds.instances)
        files[BOOK_FILES["settings"]] = json.dumps(settings, indent=2, sort_keys=True) + "\n"
        try:
            atomic_folder(folder, files)
        except OSError:
            if not settings_path.is_file():
                raise
            return book_dataset(topology_config, folder)  # another run wrote it meanwhile: check and read theirs
    topology = read_entities(folder / BOOK_FILES["normalized"])
    if read_entities(folder / BOOK_FILES["keyValues"]) != topology:
        raise IngestError("reads back to another topology than the normalized file",
                          source=folder / BOOK_FILES["keyValues"])
    return DataSet(topology=topology, instances=read_log(folder / BOOK_FILES["log"], topology))

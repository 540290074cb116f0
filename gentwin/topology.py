"""The Physical Space data set: a seeded smart-city IoT topology, its sensor log, the gateways' d_i and their fail-over.

Services (Sections II.A.1, III.B) have gateways in the fog and sensors at the edge.  M of eq. (3) counts the
relations headed by a device: a sensor's CONNECTED_TO and SERVES_IN, a gateway's SERVES_IN, and the fog links
(``n_gateway_links``: 30 of them make the paper's 580), not ``Service -IN-> SmartCity``.

>>> from gentwin.config import TopologyConfig
>>> topo = generate_topology(TopologyConfig())
>>> len(topo.sensors()), len(topo.gateways()), len(topo.device_relations())
(250, 50, 580)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .config import TopologyConfig, even_split, split_counts

__all__ = [
    "SERVICES", "NODE_KINDS", "RELATION_TYPES", "TopologyError", "Node", "Relation", "Instance", "Topology", "DataSet",
    "generate_topology", "generate_instances", "generate_dataset", "gateway_degrees", "failover_least_loaded",
    "failover_random",
]

NODE_KINDS: tuple[str, ...] = ("sensor", "gateway", "service", "city")
RELATION_TYPES: tuple[str, ...] = ("CONNECTED_TO", "SERVES_IN", "IN")
SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class SensorCategory:
    """A kind of sensor, modelled on a Smart Data Models type."""

    name: str  # e.g. "PM2.5 sensor"
    sdm_type: str  # the Smart Data Models entity type it observes, e.g. "AirQualityObserved"
    controlled_property: str  # NGSI-LD controlledProperty, e.g. "pm25"


@dataclass(frozen=True)
class ServiceSpec:
    code: str  # short prefix used in node ids
    name: str
    categories: tuple[SensorCategory, ...]


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("AQ", "air quality", (
        SensorCategory("PM2.5 sensor", "AirQualityObserved", "pm25"),
        SensorCategory("PM10 sensor", "AirQualityObserved", "pm10"),
        SensorCategory("NO2 sensor", "AirQualityObserved", "no2"),
        SensorCategory("O3 sensor", "AirQualityObserved", "o3"))),
    ServiceSpec("TR", "transportation", (
        SensorCategory("traffic-flow sensor", "TrafficFlowObserved", "intensity"),
        SensorCategory("lane-occupancy sensor", "TrafficFlowObserved", "occupancy"),
        SensorCategory("vehicle-speed sensor", "TrafficFlowObserved", "averageVehicleSpeed"))),
    ServiceSpec("WM", "waste management", (
        SensorCategory("fill-level sensor", "WasteContainer", "fillingLevel"),
        SensorCategory("container-temperature sensor", "WasteContainer", "temperature"))),
)

#: Centre of the generated city (Barcelona-like coordinates; only for realism of the metadata).
_CITY_CENTRE = (41.3874, 2.1686)
CITY_ID = "CITY"


class TopologyError(ValueError):
    """A topology or log is inconsistent (dangling reference, duplicate id, ...)."""


@dataclass(frozen=True)
class Node:
    """One entity of the smart city (``gateway``: a sensor's g_s of eq. 2).

    ``properties``: the other attributes of an entity read from Smart Data
    Models files (:mod:`gentwin.ingest`); in equality but not in the hash.

    >>> a = Node("S1", "sensor", gateway="G", properties={"batteryLevel": 0.75})
    >>> a == Node("S1", "sensor", gateway="G"), hash(a) == hash(Node("S1", "sensor", gateway="G"))
    (False, True)
    """

    id: str
    kind: str
    service: str | None = None
    gateway: str | None = None
    category: str | None = None
    sdm_type: str | None = None
    controlled_property: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    properties: dict | None = field(default=None, hash=False, compare=True, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in NODE_KINDS:
            raise TopologyError(f"node {self.id!r}: kind = {self.kind!r} must be one of {', '.join(NODE_KINDS)}")
        if not isinstance(self.id, str) or not self.id:
            raise TopologyError(f"node id = {self.id!r}: must be a non-empty string")


@dataclass(frozen=True, order=True)
class Relation:
    """A directed, typed relation ``head -type-> tail`` (one triple)."""

    head: str
    type: str
    tail: str

    def __post_init__(self) -> None:
        if self.type not in RELATION_TYPES:
            raise TopologyError(f"relation {self.head!r} -> {self.tail!r}: type = {self.type!r} must be one of "
                                f"{', '.join(RELATION_TYPES)}")

    def as_text(self) -> str:
        """The fixed text form used for training targets: ``(head, TYPE, tail)``."""
        return f"({self.head}, {self.type}, {self.tail})"


@dataclass(frozen=True)
class Instance:
    """One time-stamped sensor-log record: node ``node_id`` observed at ``timestamp``, ``present`` as in eq. (1)."""

    index: int
    timestamp: float
    node_id: str
    present: bool
    split: str


@dataclass
class Topology:
    """Nodes and typed relations, with the look-ups the equations need."""

    nodes: dict[str, Node]
    relations: list[Relation]

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TopologyError` for dangling references or duplicates."""
        seen: set[Relation] = set()
        for rel in self.relations:
            for end, role in ((rel.head, "head"), (rel.tail, "tail")):
                if end not in self.nodes:
                    raise TopologyError(f"relation {rel.as_text()}: {role} {end!r} is not a known node")
            if rel in seen:
                raise TopologyError(f"relation {rel.as_text()} appears twice")
            seen.add(rel)
        for node in self.nodes.values():
            if node.kind == "sensor":
                if node.gateway is None or node.gateway not in self.nodes:
                    raise TopologyError(f"sensor {node.id!r}: gateway = {node.gateway!r} is not a known node")
                if self.nodes[node.gateway].kind != "gateway":
                    raise TopologyError(f"sensor {node.id!r}: gateway = {node.gateway!r} is not a gateway")

    def of_kind(self, kind: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == kind]

    def sensors(self) -> list[Node]:
        return self.of_kind("sensor")

    def gateways(self) -> list[Node]:
        return self.of_kind("gateway")

    def services(self) -> list[Node]:
        return self.of_kind("service")

    def devices(self) -> list[Node]:
        """Sensors and gateways: the n nodes of the equations, in a stable order."""
        return [n for n in self.nodes.values() if n.kind in ("sensor", "gateway")]

    def device_relations(self) -> list[Relation]:
        """Relations whose head is a sensor or a gateway: the M of eq. (3)."""
        return [r for r in self.relations if self.nodes[r.head].kind in ("sensor", "gateway")]

    def relations_of(self, node_id: str) -> list[Relation]:
        """The relations node ``node_id`` is the head of (its own facts)."""
        return [r for r in self.relations if r.head == node_id]

    def sensor_count(self, gateway_id: str) -> int:
        """d_i: the number of sensors connected to a gateway (Table II); 0 for any other node."""
        return self.gateway_degrees().get(gateway_id, 0)

    def gateway_degrees(self) -> dict[str, int]:
        """d_i for every gateway, by id (see the module function :func:`gateway_degrees`)."""
        ids = [g.id for g in self.gateways()]
        index = {g: j for j, g in enumerate(ids)}
        d = gateway_degrees([index[str(n.gateway)] for n in self.sensors()], len(ids))
        return dict(zip(ids, d.tolist()))

    def to_networkx(self):
        """A :class:`networkx.MultiDiGraph` with node metadata and typed edges."""
        import networkx as nx

        g = nx.MultiDiGraph()
        for node in self.nodes.values():
            g.add_node(node.id, **{k: v for k, v in node.__dict__.items() if v is not None})
        for rel in self.relations:
            g.add_edge(rel.head, rel.tail, key=rel.type, type=rel.type)
        return g

    def counts(self) -> dict[str, int]:
        return {"sensors": len(self.sensors()), "gateways": len(self.gateways()), "services": len(self.services()),
                "device nodes": len(self.devices()), "unique relations": len(set(self.device_relations()))}


@dataclass
class DataSet:
    """A topology and its time-stamped log, split into train / validation / test."""

    topology: Topology
    instances: list[Instance] = field(default_factory=list)

    def split(self, name: str) -> list[Instance]:
        if name not in SPLITS:
            raise ValueError(f"split = {name!r}: must be one of {', '.join(SPLITS)}")
        return [i for i in self.instances if i.split == name]

    def table(self):
        """The log as a :class:`pandas.DataFrame` (one row per instance)."""
        import pandas as pd

        column = {name: [getattr(i, name) for i in self.instances] for name in Instance.__dataclass_fields__}
        column["kind"] = [self.topology.nodes[i].kind for i in column["node_id"]]
        return pd.DataFrame({k: column[k] for k in ("index", "timestamp", "node_id", "kind", "present", "split")})

    def counts(self) -> dict[str, int]:
        splits = [i.split for i in self.instances]
        return {**self.topology.counts(), "instances": len(self.instances),
                **{f"{name} instances": splits.count(name) for name in SPLITS}}


def generate_topology(cfg: TopologyConfig) -> Topology:
    """A smart city with ``cfg.n_services`` services, gateways and sensors.

    Deterministic in ``cfg.data_seed``; devices are spread evenly over the
    services, and sensors at random over a service's gateways (at least one
    each while sensors last), so the d_i differ and Priority Pooling has something to rank.
    """
    rng = np.random.default_rng(cfg.data_seed)
    services = SERVICES[: cfg.n_services]
    nodes: dict[str, Node] = {CITY_ID: Node(CITY_ID, "city", name="smart city")}
    relations: list[Relation] = []
    gw_per_service = even_split(cfg.n_gateways, cfg.n_services)
    s_per_service = even_split(cfg.n_sensors, cfg.n_services)

    service_gateways: dict[str, list[str]] = {}
    for spec, n_gw, n_s in zip(services, gw_per_service, s_per_service):
        nodes[spec.code] = Node(spec.code, "service", name=spec.name)
        relations.append(Relation(spec.code, "IN", CITY_ID))
        lat0 = _CITY_CENTRE[0] + rng.uniform(-0.03, 0.03)
        lon0 = _CITY_CENTRE[1] + rng.uniform(-0.03, 0.03)
        gw_ids = [f"{spec.code}-GW{k + 1:02d}" for k in range(n_gw)]
        service_gateways[spec.code] = gw_ids
        for gid in gw_ids:
            nodes[gid] = Node(gid, "gateway", service=spec.code, name=f"{spec.name} gateway",
                              latitude=round(lat0 + rng.normal(0, 0.01), 6),
                              longitude=round(lon0 + rng.normal(0, 0.01), 6))
        first = min(n_gw, n_s)
        owners = list(rng.permutation(n_gw)[:first]) + list(rng.integers(0, n_gw, size=n_s - first))
        owners = list(rng.permutation(owners))
        for k, owner in enumerate(owners):
            sid = f"{spec.code}-S{k + 1:03d}"
            cat = spec.categories[int(rng.integers(0, len(spec.categories)))]
            gw = nodes[gw_ids[int(owner)]]
            nodes[sid] = Node(sid, "sensor", service=spec.code, gateway=gw.id, category=cat.name,
                              sdm_type=cat.sdm_type, controlled_property=cat.controlled_property, name=cat.name,
                              latitude=round(float(gw.latitude) + rng.normal(0, 0.002), 6),
                              longitude=round(float(gw.longitude) + rng.normal(0, 0.002), 6))

    # relations of the devices, grouped by head so each entity's facts sit together
    for node in list(nodes.values()):
        if node.kind == "sensor":
            relations.append(Relation(node.id, "CONNECTED_TO", str(node.gateway)))
            relations.append(Relation(node.id, "SERVES_IN", str(node.service)))
        elif node.kind == "gateway":
            relations.append(Relation(node.id, "SERVES_IN", str(node.service)))

    relations.extend(_gateway_links(service_gateways, cfg.n_gateway_links, rng))
    return Topology(nodes=nodes, relations=relations)


def _gateway_links(service_gateways: dict[str, list[str]], n_links: int, rng: np.random.Generator) -> list[Relation]:
    """``n_links`` distinct fog links between two gateways of one service, each from the lower id to the higher."""
    candidates = [(a, b) for gws in service_gateways.values() for i, a in enumerate(gws) for b in gws[i + 1:]]
    if n_links > len(candidates):
        raise TopologyError(
            f"n_gateway_links = {n_links}: at most {len(candidates)} links fit between gateways of the same service")
    chosen = rng.choice(len(candidates), size=n_links, replace=False) if n_links else []
    return [Relation(candidates[int(k)][0], "CONNECTED_TO", candidates[int(k)][1]) for k in sorted(chosen)]


def generate_instances(topology: Topology, cfg: TopologyConfig) -> list[Instance]:
    """The sensor log: ``cfg.n_instances`` time-stamped observations of the devices.

    The split is by node, made separately for sensors and gateways so each split
    has both, so nothing about a validation or test node is seen in training;
    the splits hold exactly the configured fractions of the instances.
    """
    rng = np.random.default_rng(cfg.data_seed + 1)
    node_split: dict[str, str] = {}
    for kind in ("sensor", "gateway"):
        ids = [n.id for n in topology.of_kind(kind)]
        order = [ids[int(k)] for k in rng.permutation(len(ids))]
        counts = split_counts(len(ids), cfg.split)
        start = 0
        for name, c in zip(SPLITS, counts):
            for nid in order[start:start + c]:
                node_split[nid] = name
            start += c

    inst_counts = split_counts(cfg.n_instances, cfg.split)
    per_node: dict[str, int] = {}
    for name, total in zip(SPLITS, inst_counts):
        members = sorted(nid for nid, s in node_split.items() if s == name)
        if not members:
            raise TopologyError(f"split = {cfg.split}: the {name} split gets no node; "
                                "use more nodes or larger fractions")
        if total < len(members):
            raise TopologyError(f"n_instances = {cfg.n_instances}: the {name} split has {len(members)} nodes but "
                                f"only {total} instances")
        extra = rng.multinomial(total - len(members), np.full(len(members), 1.0 / len(members)))
        for nid, e in zip(members, extra):
            per_node[nid] = 1 + int(e)

    log_nodes = [nid for nid in sorted(per_node) for _ in range(per_node[nid])]
    log_nodes = [log_nodes[int(k)] for k in rng.permutation(len(log_nodes))]
    present = rng.random(len(log_nodes)) >= cfg.p_inactive
    return [Instance(index=k, timestamp=round(k * cfg.instance_period_s, 6), node_id=nid, present=bool(present[k]),
                     split=node_split[nid]) for k, nid in enumerate(log_nodes)]


def generate_dataset(cfg: TopologyConfig | None = None) -> DataSet:
    """Topology and log together (the paper's "raw data": 1000 instances, 300 nodes, 580 relations).

    >>> ds = generate_dataset()
    >>> c = ds.counts()
    >>> c["device nodes"], c["unique relations"], c["instances"], c["train instances"]
    (300, 580, 1000, 700)
    """
    cfg = cfg or TopologyConfig()
    topo = generate_topology(cfg)
    return DataSet(topology=topo, instances=generate_instances(topo, cfg))


def gateway_degrees(assignment: Sequence[int] | np.ndarray, n_gateways: int) -> np.ndarray:
    """d_i (Table II, eqs. 2 and 5): how many sensors each gateway serves, from one gateway index per sensor.

    >>> gateway_degrees([0, 2, 2, 0, 2], 4).tolist()
    [2, 0, 3, 0]
    """
    a = np.asarray(assignment, dtype=np.int64)
    if a.ndim != 1:
        raise TopologyError(f"assignment: must be one gateway index per sensor (got shape {a.shape})")
    if a.size and (a.min() < 0 or a.max() >= n_gateways):
        raise TopologyError(f"assignment: gateway indices must lie in [0, {n_gateways}) (got {a.min()}..{a.max()})")
    return np.bincount(a, minlength=n_gateways)


def failover_least_loaded(candidates: Sequence | np.ndarray, load: Sequence[int] | np.ndarray):
    """Fail-over policy "least loaded": every sensor of a failed gateway goes to the candidate with fewest sensors.

    The physical network's own re-association (the external loop of :mod:`gentwin.loops`);
    ``load`` is the d_i of each candidate; ties go to the first one; nothing random is drawn.

    >>> failover_least_loaded(["GW1", "GW2", "GW3"], [4, 2, 2])
    'GW2'
    """
    load = np.asarray(load)
    if len(candidates) == 0 or load.shape != (len(candidates),):
        raise TopologyError(
            f"candidates: need at least one, with one load each (got {len(candidates)} and {load.shape})")
    return candidates[int(np.argmin(load))]


def failover_random(sensors: Sequence, candidates: Sequence, rng: np.random.Generator) -> list:
    """Fail-over policy "random": each sensor of a failed gateway goes to a candidate drawn uniformly.

    The what-if scenario's gateway failure (:mod:`gentwin.whatif`).  It draws
    ``rng.integers(0, len(candidates))`` once per sensor, in order, and nothing else.

    >>> failover_random(["s1", "s2"], ["GW2"], np.random.default_rng(0))
    ['GW2', 'GW2']
    """
    if len(candidates) == 0:
        raise TopologyError("candidates: need at least one live gateway to move the sensors to")
    return [candidates[int(rng.integers(0, len(candidates)))] for _ in sensors]

"""The Physical Space data set: a seeded smart-city IoT topology, its sensor log, the gateways' d_i and their fail-over.

Section II.A.1 and III.B of the paper describe a smart city whose services (air
quality, transportation, waste management) each have gateways in the fog and
sensors at the edge.  This module generates such a topology deterministically
from a :class:`~gentwin.config.TopologyConfig` and a time-stamped log of
*instances* (one record per node observation, carrying the node's presence).

How the paper's 580 relations arise
-----------------------------------
The paper gives 300 nodes (250 sensors + 50 gateways) and 580 unique
relations.  ``M`` in eq. (3) is "the total number of relations in the sets S
and Gw", so we count the relations whose head is a device node:

=========================  ==============================  =====
relation                   from -> to                      count
=========================  ==============================  =====
``CONNECTED_TO``           sensor -> its gateway           250
``SERVES_IN``              sensor -> its service           250
``SERVES_IN``              gateway -> its service           50
``CONNECTED_TO``           gateway -> gateway (fog link)    30
=========================  ==============================  =====

The first three are fixed by the structure (2 n_sensors + n_gateways); the
number of fog backhaul links is the one count the paper does not give, and
``n_gateway_links = 30`` is the value that makes the total 580.  The knowledge
graph also holds ``Service -IN-> SmartCity`` (one per service), which is not a
relation of S or Gw and so is not part of M.

When a gateway fails, its sensors move to another gateway of their service.
Two named policies choose where: :func:`failover_least_loaded` (the physical
network's own re-association, used by the external loop of
:mod:`gentwin.loops`) and :func:`failover_random` (the what-if scenario's
gateway failure, :mod:`gentwin.whatif`).

Examples
--------
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
    "SERVICES",
    "NODE_KINDS",
    "RELATION_TYPES",
    "TopologyError",
    "Node",
    "Relation",
    "Instance",
    "Topology",
    "DataSet",
    "generate_topology",
    "generate_instances",
    "generate_dataset",
    "gateway_degrees",
    "failover_least_loaded",
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
    sdm_domain: str
    categories: tuple[SensorCategory, ...]


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "AQ",
        "air quality",
        "Environment",
        (
            SensorCategory("PM2.5 sensor", "AirQualityObserved", "pm25"),
            SensorCategory("PM10 sensor", "AirQualityObserved", "pm10"),
            SensorCategory("NO2 sensor", "AirQualityObserved", "no2"),
            SensorCategory("O3 sensor", "AirQualityObserved", "o3"),
        ),
    ),
    ServiceSpec(
        "TR",
        "transportation",
        "Transportation",
        (
            SensorCategory("traffic-flow sensor", "TrafficFlowObserved", "intensity"),
            SensorCategory("lane-occupancy sensor", "TrafficFlowObserved", "occupancy"),
            SensorCategory("vehicle-speed sensor", "TrafficFlowObserved", "averageVehicleSpeed"),
        ),
    ),
    ServiceSpec(
        "WM",
        "waste management",
        "WasteManagement",
        (
            SensorCategory("fill-level sensor", "WasteContainer", "fillingLevel"),
            SensorCategory("container-temperature sensor", "WasteContainer", "temperature"),
        ),
    ),
)

#: Centre of the generated city (Barcelona-like coordinates; only for realism of the metadata).
_CITY_CENTRE = (41.3874, 2.1686)
CITY_ID = "CITY"


class TopologyError(ValueError):
    """A topology or log is inconsistent (dangling reference, duplicate id, ...)."""


@dataclass(frozen=True)
class Node:
    """One entity of the smart city.

    ``gateway`` is set for sensors (eq. 2's g_{s_i}); ``service`` for sensors and
    gateways; ``category``/``controlled_property``/``sdm_type`` for sensors.
    ``properties`` holds the entity's other attributes when it was read from
    Smart Data Models files (:mod:`gentwin.ingest`), None otherwise; it takes
    part in equality but not in the hash (a dict is not hashable).

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
            raise TopologyError(
                f"relation {self.head!r} -> {self.tail!r}: type = {self.type!r} must be one of "
                f"{', '.join(RELATION_TYPES)}"
            )

    def as_text(self) -> str:
        """The fixed text form used for training targets: ``(head, TYPE, tail)``."""
        return f"({self.head}, {self.type}, {self.tail})"


@dataclass(frozen=True)
class Instance:
    """One time-stamped sensor-log record: node ``node_id`` observed at ``timestamp``.

    ``present`` is the presence coefficient of eq. (1) for that observation.
    """

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

    # -- integrity -------------------------------------------------------
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

    # -- look-ups --------------------------------------------------------
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
        return {
            "sensors": len(self.sensors()),
            "gateways": len(self.gateways()),
            "services": len(self.services()),
            "device nodes": len(self.devices()),
            "unique relations": len(set(self.device_relations())),
        }


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

        kinds = {nid: n.kind for nid, n in self.topology.nodes.items()}
        return pd.DataFrame(
            {
                "index": [i.index for i in self.instances],
                "timestamp": [i.timestamp for i in self.instances],
                "node_id": [i.node_id for i in self.instances],
                "kind": [kinds[i.node_id] for i in self.instances],
                "present": [i.present for i in self.instances],
                "split": [i.split for i in self.instances],
            }
        )

    def counts(self) -> dict[str, int]:
        out = self.topology.counts()
        out["instances"] = len(self.instances)
        for name in SPLITS:
            out[f"{name} instances"] = sum(1 for i in self.instances if i.split == name)
        return out


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------


def generate_topology(cfg: TopologyConfig) -> Topology:
    """A smart city with ``cfg.n_services`` services, gateways and sensors.

    Deterministic in ``cfg.data_seed``.  Sensors and gateways are spread evenly
    over the services; within a service every gateway serves at least one
    sensor (while there are at least as many sensors as gateways) and the rest
    are assigned at random, so gateways differ in d_i (which is what gives
    eqs. (3)-(6) something to rank).
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
            nodes[gid] = Node(
                gid, "gateway", service=spec.code, name=f"{spec.name} gateway",
                latitude=round(lat0 + rng.normal(0, 0.01), 6), longitude=round(lon0 + rng.normal(0, 0.01), 6),
            )
        # every gateway gets one sensor while sensors last (with fewer sensors than
        # gateways some gateways serve none, d_i = 0); the rest are spread at random (uneven d_i)
        first = min(n_gw, n_s)
        owners = list(rng.permutation(n_gw)[:first]) + list(rng.integers(0, n_gw, size=n_s - first))
        owners = list(rng.permutation(owners))
        for k, owner in enumerate(owners):
            sid = f"{spec.code}-S{k + 1:03d}"
            cat = spec.categories[int(rng.integers(0, len(spec.categories)))]
            gw = nodes[gw_ids[int(owner)]]
            nodes[sid] = Node(
                sid, "sensor", service=spec.code, gateway=gw.id, category=cat.name, sdm_type=cat.sdm_type,
                controlled_property=cat.controlled_property, name=cat.name,
                latitude=round(float(gw.latitude) + rng.normal(0, 0.002), 6),
                longitude=round(float(gw.longitude) + rng.normal(0, 0.002), 6),
            )

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
    """``n_links`` distinct fog links, each between two gateways of one service.

    A link is stored once, from the lower to the higher gateway id.
    """
    candidates = [
        (a, b) for gws in service_gateways.values() for i, a in enumerate(gws) for b in gws[i + 1:]
    ]
    if n_links > len(candidates):
        raise TopologyError(
            f"n_gateway_links = {n_links}: at most {len(candidates)} links fit between gateways of the same service"
        )
    chosen = rng.choice(len(candidates), size=n_links, replace=False) if n_links else []
    return [Relation(candidates[int(k)][0], "CONNECTED_TO", candidates[int(k)][1]) for k in sorted(chosen)]


def generate_instances(topology: Topology, cfg: TopologyConfig) -> list[Instance]:
    """The sensor log: ``cfg.n_instances`` time-stamped observations of the devices.

    The split is by node (all observations of a node fall in one split), made
    separately for sensors and gateways so each split has both; then instance
    counts are distributed so the three splits hold exactly the configured
    fractions of the instances.  Nothing about a validation or test node is
    seen in training: no (prompt, target) pair crosses splits.
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
            raise TopologyError(f"split = {cfg.split}: the {name} split gets no node; use more nodes or larger fractions")
        if total < len(members):
            raise TopologyError(
                f"n_instances = {cfg.n_instances}: the {name} split has {len(members)} nodes but only {total} instances"
            )
        extra = rng.multinomial(total - len(members), np.full(len(members), 1.0 / len(members)))
        for nid, e in zip(members, extra):
            per_node[nid] = 1 + int(e)

    log_nodes = [nid for nid in sorted(per_node) for _ in range(per_node[nid])]
    log_nodes = [log_nodes[int(k)] for k in rng.permutation(len(log_nodes))]
    present = rng.random(len(log_nodes)) >= cfg.p_inactive
    return [
        Instance(
            index=k, timestamp=round(k * cfg.instance_period_s, 6), node_id=nid, present=bool(present[k]),
            split=node_split[nid],
        )
        for k, nid in enumerate(log_nodes)
    ]


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


# ---------------------------------------------------------------------------
# Gateway degrees and fail-over
# ---------------------------------------------------------------------------


def gateway_degrees(assignment: Sequence[int] | np.ndarray, n_gateways: int) -> np.ndarray:
    """d_i (Table II, eqs. 2 and 5): how many sensors each gateway serves.

    Parameters
    ----------
    assignment
        One gateway index (0 .. n_gateways - 1) per sensor: its ``CONNECTED_TO``.
    n_gateways : int
        Number of gateways; a gateway no sensor uses gets d_i = 0.

    Returns
    -------
    numpy.ndarray
        Integer array of shape (n_gateways,).

    Examples
    --------
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

    It applies to the physical network's own re-association (the external closed
    loop of :mod:`gentwin.loops`): one control command moves the failed
    gateway's sensors to the live gateway of their service with most spare
    capacity.  Ties go to the first candidate; nothing random is drawn.

    Parameters
    ----------
    candidates
        The live gateways the sensors may move to (ids or indices).
    load
        d_i of each candidate, in the order of ``candidates``.

    Returns
    -------
    The chosen element of ``candidates``.

    Examples
    --------
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

    It applies to the what-if scenario's gateway failure (:mod:`gentwin.whatif`),
    which only has to spread the sensors over their service's live gateways,
    reproducibly from its seed.  It draws ``rng.integers(0, len(candidates))``
    once per sensor, in the order of ``sensors``, and nothing else.

    Parameters
    ----------
    sensors
        The failed gateway's sensors, in the order they are moved.
    candidates
        The gateways they may move to.
    rng
        The scenario's random generator.

    Returns
    -------
    list
        One element of ``candidates`` per sensor.

    Examples
    --------
    With one candidate every sensor goes there:

    >>> failover_random(["s1", "s2"], ["GW2"], np.random.default_rng(0))
    ['GW2', 'GW2']
    """
    if len(candidates) == 0:
        raise TopologyError("candidates: need at least one live gateway to move the sensors to")
    return [candidates[int(rng.integers(0, len(candidates)))] for _ in sensors]

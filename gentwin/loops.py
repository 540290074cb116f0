"""The cyber twin and the two closed loops of Fig. 1 (Section II.A).

The paper describes both loops in prose only; here every crossing between the spaces is counted (the
errata page gives the reading).  External loop: a gateway silent for ``detect_slots`` slots while others
were heard becomes a re-homing decision (:func:`gentwin.topology.failover_least_loaded`), whose
acknowledged command moves its sensors' ``CONNECTED_TO``.  Internal loop: the twin's knowledge goes
through eqs. (1)-(6); when the largest α of eq. (7) exceeds ``version_alpha`` the pools become a new twin
version, which generation uses from then on.

How GenTwin fills a missing record: if the sensor's gateway was heard around its send time, the sensor
is recorded inactive (⊥ = 0) and nothing is generated; otherwise a flagged record carrying its last
observed reading is generated when its priority in the current version is positive (eq. 3).  Generated
records never update the twin's knowledge; the traditional twin holds observed records only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol, Sequence

import numpy as np

from . import pooling as _pooling
from .checks import check_int, check_real
from .topology import DataSet, Relation, Topology, failover_least_loaded, gateway_degrees

__all__ = [
    "ExternalCounters", "InternalCounters", "SlotView", "path_evidence", "ControlCommand", "TwinModel",
    "VersionSink", "VersionLog", "GraphStore", "CyberTwin", "ExternalLoop", "InternalLoop", "loop_table",
    "carry_forward_records", "always_generate_records",
]


class LoopError(ValueError):
    """An argument of a closed-loop component is invalid."""


def _crossing(source: str, target: str, what: str) -> Any:
    """A counter of one boundary crossing, with its row of :func:`loop_table`."""
    return field(default=0, metadata={"row": (source, target, what)})


@dataclass
class ExternalCounters:
    """Crossings of the external closed loop (Physical -> Cyber -> Service -> Cyber -> Physical)."""

    readings_collected: int = _crossing("physical", "cyber", "data collection: readings")  #: received in time
    heartbeats_collected: int = _crossing("physical", "cyber", "data collection: gateway heartbeats")
    information_reports: int = _crossing("cyber", "service", "information: gateway-status reports")  #: one a slot
    gateway_statuses: int = _crossing("cyber", "service", "information: gateway statuses")
    insights: int = _crossing("service", "cyber", "actionable insights (re-homing decisions)")
    unresolved_failures: int = _crossing("service", "cyber", "failures with no live gateway of the service")
    control_commands: int = _crossing("cyber", "physical", "control flow: re-homing commands")
    control_acks: int = _crossing("physical", "cyber", "control acknowledgements")
    rehomed_sensors: int = _crossing("physical", "physical", "sensors re-homed")


@dataclass
class InternalCounters:
    """Crossings of the internal closed loop (priority pooling -> twin models -> new twin version)."""

    records_pooled: int = _crossing("twin knowledge", "priority pooling", "node records")  #: that changed its input
    pooling_runs: int = _crossing("priority pooling", "priority pooling", "pooling runs (eqs. 1-6)")
    pool_assignments: int = _crossing("priority pooling", "twin models", "pool assignments")
    versions_committed: int = _crossing("twin models", "twin store", "new twin versions")
    versions_skipped: int = _crossing("twin models", "twin store", "runs with alpha <= version_alpha (no version)")


@dataclass(frozen=True)
class SlotView:
    """The cyber twin's view of one closed reading slot."""

    slot: int
    time_s: float
    received: np.ndarray  #: bool per sensor, reading observed
    generated: np.ndarray  #: bool per sensor, GenTwin generated a flagged record
    generated_values: np.ndarray  #: float per sensor, the carried reading (NaN where not generated)
    inferred_inactive: np.ndarray  #: bool per sensor, missing while its path was heard
    gateway_heard: np.ndarray  #: bool per gateway
    gateway_silent: np.ndarray  #: bool per gateway, not heard while the flow was alive elsewhere
    flow_alive: bool  #: anything at all arrived for this slot
    heartbeats: int


@dataclass(frozen=True)
class ControlCommand:
    """Re-home ``sensors`` (indices) from a failed gateway to ``to_gateway`` (indices into the gateway list)."""

    issued_s: float
    slot: int
    from_gateway: int
    to_gateway: int
    sensors: tuple[int, ...]


@dataclass(frozen=True)
class TwinModel:
    """One twin version: the knowledge graph's node states with their pools (what the store keeps)."""

    version: int
    time_s: float
    node_ids: tuple[str, ...]
    presence: np.ndarray  #: ⊥_i, last known (eq. 1)
    priority: np.ndarray  #: p_i (eq. 3)
    pool_codes: np.ndarray  #: 0/1/2 = H/M/L, -1 none (eq. 4)
    pool_weights: dict[str, float]  #: W_p (eq. 6)
    alpha: dict[str, float]  #: eq. (7) against the previous version
    sensor_ids: tuple[str, ...]  #: the sensors, in the order of ``assignment``
    assignment: tuple[str, ...]  #: each sensor's gateway id (CONNECTED_TO), in sensor order

    def sizes(self) -> dict[str, int]:
        return {lab: int((self.pool_codes == k).sum()) for k, lab in enumerate(_pooling.POOLS)}


class VersionSink(Protocol):
    """Where the internal loop commits twin versions (``gentwin.graph`` can provide one)."""

    def commit(self, model: TwinModel) -> int:
        """Store ``model`` as a new version and return its version number."""

    def latest(self) -> TwinModel | None:
        """The newest version (None before the first commit)."""


class VersionLog:
    """A minimal in-memory twin store: the newest model plus one summary row per version."""

    def __init__(self) -> None:
        self._latest: TwinModel | None = None
        self.summaries: list[dict] = []

    def commit(self, model: TwinModel) -> int:
        version = len(self.summaries) + 1
        if model.version != version:
            raise LoopError(f"model.version = {model.version}: the next version of this store is {version}")
        self._latest = model
        row = {"version": version, "time_s": model.time_s, **{f"size_{k}": v for k, v in model.sizes().items()}}
        row.update({f"alpha_{k}": v for k, v in model.alpha.items()})
        self.summaries.append(row)
        return version

    def latest(self) -> TwinModel | None:
        return self._latest


def path_evidence(gateway: np.ndarray, expected: np.ndarray, heard_via: np.ndarray, heard_at: np.ndarray,
                  *, before_s: float, until_s: float) -> np.ndarray:
    """Did each sensor's gateway demonstrably work around the sensor's scheduled send time?

    Yes for sensor s when messages through ``gateway[s]`` (any reading or heartbeat: ``heard_via``,
    ``heard_at``) were sent in ``[expected[s] - before_s, expected[s])`` and in ``(expected[s], until_s]``.
    Gateway 0 was heard at 1.0 and 3.0, gateway 1 only at 1.0:

    >>> path_evidence(np.array([0, 0, 1]), np.array([2.0, 3.5, 2.0]), np.array([0, 0, 1]),
    ...               np.array([1.0, 3.0, 1.0]), before_s=2.0, until_s=4.0).tolist()
    [True, False, False]
    """
    g = np.asarray(gateway, dtype=np.int64)
    e = np.asarray(expected, dtype=float)
    hv = np.asarray(heard_via, dtype=np.int64)
    ht = np.asarray(heard_at, dtype=float)
    if g.shape != e.shape or hv.shape != ht.shape:
        raise LoopError("path_evidence: gateway/expected and heard_via/heard_at must have equal lengths")
    if hv.size == 0:
        return np.zeros(g.shape, dtype=bool)
    base = min(float(ht.min()), float(e.min()) - before_s)
    span = max(float(ht.max()), float(until_s), float(e.max())) - base + 1.0
    keys = np.sort(hv * span + (ht - base))  # one sorted time line, gateway after gateway
    q = g * span + (e - base)
    n_before = np.searchsorted(keys, q, side="left") - np.searchsorted(keys, q - before_s, side="left")
    n_after = (np.searchsorted(keys, g * span + (until_s - base), side="right")
               - np.searchsorted(keys, q, side="right"))
    return (n_before > 0) & (n_after > 0)


class GraphStore:
    """The internal loop's sink into a :mod:`gentwin.graph` twin store (default: an in-memory networkx one).

    The first version is the whole knowledge graph with ``active`` (⊥, eq. 1), ``pool`` (eq. 4) and
    ``priority`` (eq. 3) per device node (gateways also ``n_sensors``); each later one a change set of
    the nodes whose state changed and the moved ``CONNECTED_TO`` relations, its ``parts`` the pools
    whose α triggered it.
    """

    def __init__(self, topology: Topology, store=None, *, version_alpha: float = 0.0) -> None:
        from . import graph

        self._g = graph
        self.store = store if store is not None else graph.NetworkxStore(twin="physical-space")
        if self.store.latest() is not None:
            raise LoopError(f"store: twin {self.store.twin!r} already has versions; give the loop an empty twin")
        self._base, self._relations = graph.twin_from_topology(topology)
        self._gateway_of = {n.id: n.gateway for n in topology.sensors()}
        self._gateway_index = {g.id: j for j, g in enumerate(topology.gateways())}
        self._prev: TwinModel | None = None
        self.version_alpha = float(version_alpha)

    def _node(self, nid: str, model: TwinModel, k: int, degree: dict[str, int]):
        base = self._base[nid]
        code = int(model.pool_codes[k])
        meta = base.metadata | {"active": bool(model.presence[k]), "priority": float(model.priority[k]),
                                "pool": _pooling.POOLS[code] if code >= 0 else "none"}
        if base.kind == "gateway":
            meta["n_sensors"] = int(degree.get(nid, 0))
        elif base.kind == "sensor":
            meta["gateway"] = self._gateway_of[nid]
        return self._g.TwinNode(nid, base.kind, meta)

    def commit(self, model: TwinModel) -> int:
        """Write ``model`` as the next version of the twin store; returns its number."""
        prev = self._prev
        d = gateway_degrees([self._gateway_index[g] for g in model.assignment], len(self._gateway_index))
        degree = dict(zip(self._gateway_index, d.tolist()))
        if prev is None:
            nodes = [self._node(nid, model, k, degree) for k, nid in enumerate(model.node_ids)]
            others = [n for n in self._base.values() if n.kind not in ("sensor", "gateway")]
            info = self.store.rebuild(others + nodes, self._relations)
        else:
            moved = [(s, a, b) for s, a, b in zip(model.sensor_ids, prev.assignment, model.assignment) if a != b]
            diff = ((model.presence != prev.presence) | (model.pool_codes != prev.pool_codes)
                    | (model.priority != prev.priority))
            idx = {nid: k for k, nid in enumerate(model.node_ids)}
            for s, _, b in moved:
                self._gateway_of[s] = b
            for nid in {nid for move in moved for nid in move}:  # the sensor and both gateways
                diff[idx[nid]] = True
            nodes = [self._node(model.node_ids[k], model, int(k), degree) for k in np.flatnonzero(diff)]
            parts = tuple(p for p, a in model.alpha.items() if a > self.version_alpha)
            info = self.store.commit(self._g.ChangeSet(
                upsert_nodes=tuple(nodes), upsert_relations=tuple(Relation(s, "CONNECTED_TO", b) for s, _, b in moved),
                delete_relations=tuple(Relation(s, "CONNECTED_TO", a) for s, a, _ in moved)), parts=parts)
        if info.number != model.version:
            raise LoopError(f"store: wrote version {info.number} for twin model version {model.version}")
        self._prev = model
        return info.number

    def latest(self) -> TwinModel | None:
        """The newest twin model written (the store holds the graph itself)."""
        return self._prev


class CyberTwin:
    """The cyber space's twin of the network: its knowledge graph state and both twins' records.

    Each device node's latest presence in ``history`` is the twin's first knowledge; ``period_s`` is the
    slot length; ``relation_owner`` is the reading of N_i (default: :class:`gentwin.config.PoolingConfig`'s).
    """

    def __init__(self, topology: Topology, history: DataSet, *, period_s: float,
                 relation_owner: str | None = None) -> None:
        self.period_s = check_real("period_s", period_s, low=0.0, low_open=True, error=LoopError)
        self.arrays = (_pooling.topology_arrays(topology) if relation_owner is None
                       else _pooling.topology_arrays(topology, relation_owner))
        kinds = self.arrays.kinds
        self.sensor_pos = np.flatnonzero(kinds == "sensor")
        self.gateway_pos = np.flatnonzero(kinds == "gateway")
        if self.sensor_pos.size == 0:
            raise LoopError("topology: has no sensor; the twin needs at least one")
        ids = self.arrays.node_ids  # topology order, as the simulator indexes sensors and gateways
        self.sensor_ids = tuple(ids[i] for i in self.sensor_pos)
        self.gateway_ids = tuple(ids[i] for i in self.gateway_pos)
        gw_index = {g: j for j, g in enumerate(self.gateway_ids)}
        self.gateway_service = np.array([topology.nodes[g].service for g in self.gateway_ids])
        self.assign = np.array([gw_index[self.arrays.gateway_of[i]] for i in self.sensor_pos], dtype=np.int64)
        idx, pres = _pooling.encode_instances(self.arrays, sorted(history.instances, key=lambda i: i.index))
        n = len(ids)
        self.observations = _pooling.observation_counts(idx, n)
        self.known = _pooling.presence(idx, pres, n).astype(np.int8)
        self.last_value = np.full(self.sensor_pos.size, np.nan)
        self.phase = np.full(self.sensor_pos.size, np.nan)  # send offset inside a slot, learned
        self.priority = np.zeros(n)  # of the version in use; set by adopt()
        self.version = 0
        self.pending_records = 0  # node records since the last pooling run

    @property
    def n_sensors(self) -> int:
        return int(self.sensor_pos.size)

    @property
    def n_gateways(self) -> int:
        return int(self.gateway_pos.size)

    def gateway_degrees(self) -> np.ndarray:
        """d_i of every gateway (in ``gateway_ids`` order) under the twin's current ``CONNECTED_TO`` relations."""
        return gateway_degrees(self.assign, self.n_gateways)

    def degree(self) -> np.ndarray:
        """d_i of every device node under the twin's current ``CONNECTED_TO`` relations (0 for sensors)."""
        d = np.zeros(len(self.arrays.node_ids), dtype=np.int64)
        d[self.gateway_pos] = self.gateway_degrees()
        return d

    def adopt(self, model: TwinModel) -> None:
        """Use a new twin version for generation."""
        self.priority = np.asarray(model.priority, dtype=float)
        self.version = model.version

    def rehome(self, sensors: Sequence[int], to_gateway: int) -> None:
        """Update the knowledge graph's ``CONNECTED_TO`` for ``sensors`` (after the control acknowledgement)."""
        self.assign[np.asarray(sensors, dtype=np.int64)] = int(to_gateway)

    def close_slot(self, slot: int, time_s: float, delivery) -> SlotView:
        """Take in what arrived for ``slot``, generate what is missing and unobservable, update the knowledge.

        ``delivery`` is a :class:`gentwin.physical.Delivery`.  A missing sensor's path counts as heard by
        :func:`path_evidence` within one period around its send time (its phase learned from earlier
        readings; mid-slot while unknown); the module docstring gives the rule.
        """
        got = np.asarray(delivery.received, dtype=bool)
        hb = np.asarray(delivery.heartbeats, dtype=bool)
        if got.shape != (self.n_sensors,) or hb.shape != (self.n_gateways,):
            raise LoopError(f"delivery: shapes {got.shape}/{hb.shape} differ from "
                            f"({self.n_sensors},)/({self.n_gateways},)")
        via = np.asarray(delivery.via)[got]
        flow_alive = bool(got.any() or hb.any())
        heard = hb | (np.bincount(via, minlength=self.n_gateways) > 0)
        self.phase[got] = np.asarray(delivery.sent_at, dtype=float)[got] - slot * self.period_s
        expected = slot * self.period_s + np.nan_to_num(self.phase, nan=self.period_s / 2)
        close = float(time_s)
        path_heard = path_evidence(self.assign, expected, np.asarray(delivery.heard_via),
                                   np.asarray(delivery.heard_at, dtype=float), before_s=self.period_s, until_s=close)
        missing = ~got
        inferred_inactive = missing & path_heard
        generate = missing & ~path_heard & (self.priority[self.sensor_pos] > 0)
        gen_values = np.where(generate, self.last_value, np.nan)
        silent = ~heard & flow_alive

        # knowledge update: observations only, never generated records
        known_s = self.sensor_pos[got | inferred_inactive]
        self.known[self.sensor_pos[got]] = 1
        self.known[self.sensor_pos[inferred_inactive]] = 0
        self.known[self.gateway_pos[heard]] = 1
        self.known[self.gateway_pos[silent]] = 0
        self.observations[known_s] += 1
        self.observations[self.gateway_pos[heard | silent]] += 1
        self.last_value[got] = np.asarray(delivery.values, dtype=float)[got]
        self.pending_records += int(known_s.size + (heard | silent).sum())
        return SlotView(slot, float(time_s), got, generate, gen_values, inferred_inactive, heard, silent, flow_alive,
                        int(hb.sum()))


class ExternalLoop:
    """Data collection -> information -> actionable insight -> control flow, with counters."""

    def __init__(self, twin: CyberTwin, *, detect_slots: int) -> None:
        self.twin = twin
        self.detect_slots = check_int("detect_slots", detect_slots, low=1, error=LoopError)
        self.counters = ExternalCounters()
        self._streak = np.zeros(twin.n_gateways, dtype=np.int64)
        self._handled = np.zeros(twin.n_gateways, dtype=bool)

    def step(self, slot: int, time_s: float, view: SlotView) -> list[ControlCommand]:
        """One pass of the loop after a slot closed; returns the control commands to send."""
        c = self.counters
        c.readings_collected += int(view.received.sum())
        c.heartbeats_collected += view.heartbeats
        c.information_reports += 1  # the gateway status report
        c.gateway_statuses += self.twin.n_gateways
        self._streak[view.gateway_heard] = 0
        self._handled[view.gateway_heard] = False
        self._streak[view.gateway_silent] += 1
        commands: list[ControlCommand] = []
        failed = np.flatnonzero((self._streak >= self.detect_slots) & ~self._handled)
        for g in failed:
            self._handled[g] = True
            members = tuple(int(s) for s in np.flatnonzero(self.twin.assign == g))
            if not members:
                continue
            svc = self.twin.gateway_service[g]
            live = np.flatnonzero((self.twin.gateway_service == svc) & view.gateway_heard & (self._streak == 0))
            live = live[live != g]
            if live.size == 0:
                c.unresolved_failures += 1
                continue
            to = int(failover_least_loaded(live, self.twin.gateway_degrees()[live]))
            commands.append(ControlCommand(float(time_s), slot, int(g), to, members))
            c.insights += 1
            c.control_commands += 1
        return commands

    def acknowledge(self, cmd: ControlCommand) -> None:
        """The physical space applied ``cmd``: update the twin's knowledge graph and the counters."""
        self.twin.rehome(cmd.sensors, cmd.to_gateway)
        self.counters.control_acks += 1
        self.counters.rehomed_sensors += len(cmd.sensors)


class InternalLoop:
    """Priority pooling -> twin models -> new twin version, with counters.

    ``band``, ``pool_weight``, ``alpha_reading``, ``relation_count``: the readings of eqs. (4), (6), (7), (3)
    (:class:`gentwin.config.PoolingConfig`); a version goes into ``store`` (default: a new :class:`VersionLog`)
    when ``max(alpha) > version_alpha``.
    """

    def __init__(self, *, band: str = "corrected", pool_weight: str = "degree", alpha_reading: str = "nodes",
                 relation_count: str = "unique", version_alpha: float = 0.0, store: VersionSink | None = None) -> None:
        self.version_alpha = check_real("version_alpha", version_alpha, low=0.0, error=LoopError)
        self.band, self.pool_weight = band, pool_weight
        self.alpha_reading, self.relation_count = alpha_reading, relation_count
        self.store: VersionSink = store if store is not None else VersionLog()
        self.counters = InternalCounters()
        self._wc: np.ndarray | None = None

    def _pool(self, twin: CyberTwin):
        a = twin.arrays
        res = _pooling.pool_arrays(twin.observations, twin.known, a.kinds, twin.degree(), a.owned, a.n_relations,
                                   band=self.band, pool_weight=self.pool_weight, relation_count=self.relation_count)
        self.counters.pooling_runs += 1
        self.counters.pool_assignments += int(res.pools.size)
        return res

    def _commit(self, time_s: float, twin: CyberTwin, res, alpha: dict[str, float]) -> TwinModel:
        latest = self.store.latest()
        model = TwinModel(
            version=(latest.version + 1) if latest is not None else 1, time_s=float(time_s),
            node_ids=twin.arrays.node_ids, presence=res.presence.copy(), priority=res.priority.copy(),
            pool_codes=res.pools.copy(),
            pool_weights={lab: float(v) for lab, v in zip(_pooling.POOLS, res.pool_weights)}, alpha=alpha,
            sensor_ids=twin.sensor_ids, assignment=tuple(twin.gateway_ids[j] for j in twin.assign))
        self.store.commit(model)
        twin.adopt(model)
        self._wc = res.weight_matrix
        self.counters.versions_committed += 1
        return model

    def start(self, time_s: float, twin: CyberTwin) -> TwinModel:
        """Version 1: the twin pooled from its history, before the run."""
        return self._commit(time_s, twin, self._pool(twin), {lab: 0.0 for lab in _pooling.POOLS})

    def step(self, time_s: float, twin: CyberTwin) -> bool:
        """Pool the twin's current knowledge; commit a new version if α says so.  Returns whether it did."""
        if self._wc is None:
            raise LoopError("InternalLoop.step: call start() first (the first version comes from the history)")
        self.counters.records_pooled += twin.pending_records
        twin.pending_records = 0
        res = self._pool(twin)
        a = _pooling.update_trigger(self._wc, res.weight_matrix, self.alpha_reading)
        alpha = {lab: float(v) for lab, v in zip(_pooling.POOLS, a)}
        if float(a.max()) > self.version_alpha:
            self._commit(time_s, twin, res, alpha)
            return True
        self.counters.versions_skipped += 1
        return False


def _observed_grid(observed) -> np.ndarray:
    o = np.asarray(observed)
    if o.dtype != bool or o.ndim != 2:
        raise LoopError(f"observed: must be a boolean (sensor, slot) grid, got {o.dtype} with {o.ndim} dimension(s)")
    return o


def carry_forward_records(observed, initial) -> np.ndarray:
    """The records a last-value-carried-forward twin generates: no path evidence, no pooling.

    A sensor's presence is carried forward: ``initial`` (one bool per sensor,
    its presence before the run) until its first received reading, present
    from then on.  A missing reading of the boolean (sensor, slot) grid
    ``observed`` is generated whenever the carried state is present.

    Sensor 0 was present in the history, sensor 1 absent until it reports in slot 2:

    >>> O = np.array([[1, 0, 0, 1], [0, 0, 1, 0]], bool)
    >>> carry_forward_records(O, np.array([True, False])).astype(int).tolist()
    [[0, 1, 1, 0], [0, 0, 0, 1]]
    """
    o = _observed_grid(observed)
    init = np.asarray(initial)
    if init.dtype != bool or init.shape != (o.shape[0],):
        raise LoopError(f"initial: must be a boolean vector of one presence per sensor ({o.shape[0]}), "
                        f"got {init.dtype} {init.shape}")
    seen_before = np.zeros_like(o)
    seen_before[:, 1:] = np.logical_or.accumulate(o, axis=1)[:, :-1]
    return ~o & (init[:, None] | seen_before)


def always_generate_records(observed) -> np.ndarray:
    """The records an always-generate twin holds: one for every missing reading, present or not.

    >>> always_generate_records(np.array([[True, False], [False, False]])).astype(int).tolist()
    [[0, 1], [1, 1]]
    """
    return ~_observed_grid(observed)


def loop_table(external: ExternalCounters, internal: InternalCounters):
    """The counters of both loops as a table: loop, from, to, what crossed, count (a DataFrame)."""
    import pandas as pd

    rows = [(loop, *f.metadata["row"], getattr(counters, f.name))
            for loop, counters in (("external", external), ("internal", internal)) for f in fields(counters)]
    return pd.DataFrame(rows, columns=["loop", "from", "to", "what", "count"])

"""The what-if city, its scenarios and the four twins that answer its version requests (Algorithm 1, lines 15-21).

:class:`WhatIfCity` changes the Physical Space; after every change each twin (Fig. 8's arms) answers a
*version request* for the part of the knowledge graph the scenario needs, on the same store backend:
:class:`GenTwin` (versions gated by the update trigger α of eq. 7), :class:`IncrementalTwin` (the same
writer without pooling or gate), :class:`EventDrivenTwin` and :class:`TraditionalTwin` (reference [39]
read as one transaction per changed entity, and as a full rebuild).  A target update rate ``r`` changes
``max(1, round(r * n))`` of the ``n`` initial devices; the α that results is measured (eq. 7).  The grid of
Fig. 8 is :func:`gentwin.experiments.fig8.run_fig8`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .checks import check_int, check_real
from .graph import ChangeSet, Subgraph, TwinNode, TwinRequirement, TwinStore, node_to_twin, twin_from_topology
from .pooling import alpha as pool_alpha
from .pooling import key_value_pairs, pool_snapshot
from .topology import CITY_ID, SERVICES, DataSet, Instance, Node, Relation, Topology, failover_random

__all__ = [
    "WHATIF_SCENARIOS", "WhatIfError", "NetworkState", "WhatIfCity", "Episode", "changes_for_rate", "kv_pairs",
    "GenTwin", "IncrementalTwin", "EventDrivenTwin", "TraditionalTwin", "UpdateInfo", "respond",
]

#: The smart-city scenarios of the what-if module (Algorithm 1, line 15).
WHATIF_SCENARIOS: tuple[str, ...] = ("sensor_churn", "gateway_failure", "service_added")


class WhatIfError(ValueError):
    """A scenario, rate or twin setting is unusable."""


@dataclass(frozen=True)
class NetworkState:
    """The Physical Space at one moment, as a twin sees it (``heads``: relations by head; ``degrees``: d_i)."""

    topology: Topology
    instances: tuple[Instance, ...]
    presence: dict[str, bool]
    degrees: dict[str, int]
    heads: dict[str, tuple[Relation, ...]]

    @property
    def dataset(self) -> DataSet:
        return DataSet(self.topology, list(self.instances))

    def twin_node(self, node_id: str) -> TwinNode:
        """The knowledge-graph entity of one node in this state."""
        return node_to_twin(self.topology.nodes[node_id], self.presence.get(node_id, True),
                            self.degrees.get(node_id, 0))


def changes_for_rate(rate: float, n_devices: int) -> int:
    """Device nodes one episode changes at target update rate ``rate``: ``max(1, round(rate * n))``.

    >>> changes_for_rate(0.2, 300), changes_for_rate(1.0, 300), changes_for_rate(0.01, 30)
    (60, 300, 1)
    >>> changes_for_rate(0.0, 300)
    Traceback (most recent call last):
    ...
    gentwin.whatif.WhatIfError: rate = 0.0: must be in (0, 1]
    """
    try:
        check_real("rate", rate, low=0.0, high=1.0, low_open=True, error=WhatIfError)
    except WhatIfError:
        raise WhatIfError(f"rate = {rate!r}: must be in (0, 1]") from None
    n_devices = check_int("n_devices", n_devices, low=1, error=WhatIfError)
    return max(1, int(round(rate * n_devices)))


@dataclass(frozen=True)
class Episode:
    """One what-if episode: the scenario, what changed, and the twin requirement it needs (line 17)."""

    kind: str
    rate: float
    size: int  #: device nodes the scenario was asked to change (m)
    changed: frozenset[str]  #: entities whose knowledge-graph record changed
    requirement: TwinRequirement


class WhatIfCity:
    """A mutable smart city that the what-if scenarios change, starting from a data set.

    Scenarios (Algorithm 1, line 15), each changing about ``m`` device nodes: ``sensor_churn`` (an active
    sensor disappears, an inactive one is replaced by a new sensor on an active gateway of its service),
    ``gateway_failure`` (an active gateway fails and its sensors move to active gateways of its service
    by :func:`gentwin.topology.failover_random`; a failed one recovers) and ``service_added`` (a service
    with ``m`` devices, one gateway per six, joins; the next time it leaves).  Every change is logged as
    presence instances, so Priority Pooling sees it; removed devices leave the log.
    """

    def __init__(self, dataset: DataSet, seed: int | Sequence[int], *, period_s: float = 2.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: dict[str, Node] = dict(dataset.topology.nodes)
        self.relations: dict[Relation, None] = dict.fromkeys(dataset.topology.relations)
        self.instances: list[Instance] = sorted(dataset.instances, key=lambda i: i.index)
        self.period_s = period_s
        self.presence: dict[str, bool] = ({n.id: True for n in dataset.topology.devices()}
                                          | {i.node_id: bool(i.present) for i in self.instances})
        self.members: dict[str, set[str]] = {n.id: set() for n in self.nodes.values() if n.kind == "gateway"}
        for n in self.nodes.values():
            if n.kind == "sensor" and n.gateway is not None:
                self.members[n.gateway].add(n.id)
        self._next_index = (self.instances[-1].index + 1) if self.instances else 0
        self._counter = 0
        self.added_services: list[str] = []
        self.n_devices0 = len(dataset.topology.devices())

    # -- bookkeeping -----------------------------------------------------------
    def _log(self, node_id: str, present: bool) -> None:
        k = self._next_index
        self.instances.append(Instance(k, round(k * self.period_s, 6), node_id, present, "test"))
        self._next_index += 1
        self.presence[node_id] = present

    def _add_node(self, node: Node, rels: Iterable[Relation]) -> None:
        self.nodes[node.id] = node
        for r in rels:
            self.relations[r] = None
        if node.kind == "gateway":
            self.members[node.id] = set()
        if node.kind == "sensor":
            self.members[node.gateway].add(node.id)  # type: ignore[index]
        if node.kind in ("sensor", "gateway"):
            self._log(node.id, True)

    def _remove_nodes(self, ids: set[str]) -> None:
        for r in [r for r in self.relations if r.head in ids or r.tail in ids]:
            del self.relations[r]
        for nid in ids:
            node = self.nodes.pop(nid)
            self.presence.pop(nid, None)
            if node.kind == "sensor" and node.gateway in self.members:
                self.members[node.gateway].discard(nid)
            if node.kind == "gateway":
                self.members.pop(nid, None)
        self.instances = [i for i in self.instances if i.node_id not in ids]

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        while f"{prefix}-N{self._counter:04d}" in self.nodes:
            self._counter += 1
        return f"{prefix}-N{self._counter:04d}"

    def _active_gateways(self, service: str, exclude: str | None = None) -> list[str]:
        return sorted(g for g in self.members
                      if self.nodes[g].service == service and g != exclude and self.presence.get(g, False))

    def state(self) -> NetworkState:
        """A frozen view of the current network (copies; later changes do not alter it)."""
        heads: dict[str, list[Relation]] = {}
        for r in self.relations:
            heads.setdefault(r.head, []).append(r)
        topology = Topology(nodes=dict(self.nodes), relations=list(self.relations))
        return NetworkState(topology, tuple(self.instances), dict(self.presence), topology.gateway_degrees(),
                            {k: tuple(v) for k, v in heads.items()})

    # -- scenarios ---------------------------------------------------------------
    def apply(self, kind: str, rate: float) -> Episode:
        """Run one scenario at target update rate ``rate`` (changes this space); return the episode."""
        if kind not in WHATIF_SCENARIOS:
            raise WhatIfError(f"kind = {kind!r}: must be one of {', '.join(WHATIF_SCENARIOS)}")
        m = changes_for_rate(rate, self.n_devices0)
        changed, seeds = getattr(self, "_" + kind)(m)
        return Episode(kind, float(rate), m, frozenset(changed), TwinRequirement(seeds=tuple(sorted(seeds)), hops=1))

    def _sensor_churn(self, m: int) -> tuple[set[str], set[str]]:
        sensors = sorted(n.id for n in self.nodes.values() if n.kind == "sensor")
        picked = [sensors[int(k)] for k in self.rng.choice(len(sensors), size=min(m, len(sensors)), replace=False)]
        changed: set[str] = set()
        retired: set[str] = set()
        for sid in picked:
            node = self.nodes[sid]
            if self.presence.get(sid, True):
                self._log(sid, False)  # disappears: presence 0
                changed.add(sid)
                continue
            retired.add(sid)  # gone for good; a new sensor appears in its place
            targets = self._active_gateways(str(node.service)) or sorted(
                g for g in self.members if self.nodes[g].service == node.service)
            gw = self.nodes[targets[int(self.rng.integers(0, len(targets)))]]
            spec = next((s for s in SERVICES if s.code == node.service), None)
            cat = spec.categories[int(self.rng.integers(0, len(spec.categories)))] if spec else None
            fields = dict(category=cat.name, sdm_type=cat.sdm_type, controlled_property=cat.controlled_property,
                          name=cat.name) if cat else {}
            new = dataclasses.replace(node, id=self._new_id(str(node.service)), gateway=gw.id, latitude=gw.latitude,
                                      longitude=gw.longitude, properties=None, **fields)
            self.members[str(node.gateway)].discard(sid)
            self._add_node(new, [Relation(new.id, "CONNECTED_TO", gw.id),
                                 Relation(new.id, "SERVES_IN", str(node.service))])
            changed |= {sid, new.id, str(node.gateway), gw.id}
        if retired:
            self._remove_nodes(retired)
        seeds = {self.nodes[s].gateway for s in changed if s in self.nodes and self.nodes[s].kind == "sensor"}
        seeds |= {g for g in changed if g in self.nodes and self.nodes[g].kind == "gateway"}
        return changed, {str(s) for s in seeds if s is not None}

    def _gateway_failure(self, m: int) -> tuple[set[str], set[str]]:
        gateways = sorted(self.members)
        order = [gateways[int(k)] for k in self.rng.permutation(len(gateways))]
        changed: set[str] = set()
        seeds: set[str] = set()
        affected = 0
        for gid in order:
            if affected >= m:
                break
            seeds.add(gid)
            changed.add(gid)
            fails = self.presence.get(gid, True)
            self._log(gid, not fails)  # a failed one recovers; its old sensors stay where they moved
            affected += 1
            targets = self._active_gateways(str(self.nodes[gid].service), exclude=gid) if fails else []
            if not targets:
                continue
            moving = sorted(self.members[gid])
            for sid, to in zip(moving, failover_random(moving, targets, self.rng)):
                node = self.nodes[sid]
                del self.relations[Relation(sid, "CONNECTED_TO", gid)]
                self.relations[Relation(sid, "CONNECTED_TO", to)] = None
                self.nodes[sid] = dataclasses.replace(node, gateway=to)
                self.members[gid].discard(sid)
                self.members[to].add(sid)
                changed |= {sid, to}
                seeds.add(to)
                affected += 1
        return changed, seeds

    def _service_added(self, m: int) -> tuple[set[str], set[str]]:
        if self.added_services:
            code = self.added_services.pop()
            gone = {n.id for n in self.nodes.values() if n.id == code or n.service == code}
            self._remove_nodes(gone)
            return gone, {CITY_ID}
        k = len([1 for n in self.nodes.values() if n.kind == "service"]) + 1
        code = f"SV{k}"
        while code in self.nodes:
            k += 1
            code = f"SV{k}"
        self.added_services.append(code)
        n_gw = max(1, m // 6)
        gws = [Node(f"{code}-GW{j + 1:02d}", "gateway", service=code, name=f"new service {k} gateway")
               for j in range(n_gw)]
        sensors = [Node(f"{code}-S{j + 1:03d}", "sensor", service=code, gateway=gws[j % n_gw].id,
                        category="environment sensor", sdm_type="Device", controlled_property="value",
                        name="environment sensor") for j in range(max(0, m - n_gw))]
        self._add_node(Node(code, "service", name=f"new service {k}"), [Relation(code, "IN", CITY_ID)])
        for g in gws:
            self._add_node(g, [Relation(g.id, "SERVES_IN", code)])
        for s in sensors:
            self._add_node(s, [Relation(s.id, "CONNECTED_TO", str(s.gateway)), Relation(s.id, "SERVES_IN", code)])
        return {code} | {n.id for n in gws + sensors}, {code}


def kv_pairs(state: NetworkState, ids: Iterable[str]) -> list[tuple[str, tuple]]:
    """Algorithm 1, line 18: the (k, v) pairs of eq. (2) for the devices among ``ids``.

    ``([:s], (sensor id, its gateway))`` and ``([:gw], (gateway id, d_i))``, from
    :func:`gentwin.pooling.key_value_pairs`; ids that are no device of ``state`` are skipped.
    """
    nodes = state.topology.nodes
    devices = [nodes[i] for i in ids if i in nodes and nodes[i].kind in ("sensor", "gateway")]
    return key_value_pairs([n.id for n in devices], [n.kind for n in devices], [n.gateway for n in devices],
                           [state.degrees.get(n.id, 0) for n in devices])


#: Order in which one-entity events are written: a relation's tail (city, service, gateway) before its head.
_KIND_RANK = {"city": 0, "service": 1, "gateway": 2, "sensor": 3}


@dataclass(frozen=True)
class UpdateInfo:
    """What one twin update did and how long its parts took (seconds)."""

    pooling_s: float  #: eqs. (1)-(7) (GenTwin only; 0 for the other twins)
    write_s: float  #: working out the records and writing them to the store
    n_written: int  #: records the new version(s) opened or ended (0: no new version)
    version: int | None  #: the (last) version written (None: none)
    alpha: dict[str, float]  #: eq. (7) per pool (empty for the twins without pooling)
    fired: tuple[str, ...]  #: parts re-versioned
    stale: int  #: changed entities the twin has not written yet (what a read served now misses)
    transactions: int = 1  #: store transactions the update ran (0: nothing written)


class IncrementalTwin:
    """A twin that writes every change at once, in one transaction: GenTwin minus pooling and the α gate.

    It writes only the changed entities, worked out from its own mirror of the store (nodes, relations by
    head and tail) without reading the store back: the arm that shows what pooling costs.
    """

    name = "incremental"

    def __init__(self, store: TwinStore, state: NetworkState) -> None:
        self.store = store
        nodes, rels = twin_from_topology(state.topology, state.presence)
        self.nodes: dict[str, TwinNode] = nodes
        self.heads: dict[str, set[Relation]] = {}
        self.tails: dict[str, set[Relation]] = {}
        for r in rels:
            self.heads.setdefault(r.head, set()).add(r)
            self.tails.setdefault(r.tail, set()).add(r)
        self.pending: set[str] = set()
        store.rebuild(nodes.values(), rels, name="initial")

    def _with_new_tails(self, state: NetworkState, write: set[str]) -> set[str]:
        """``write`` plus the new tails its relations need (a written relation needs its tail in the twin)."""
        write = set(write)
        stack = list(write)
        while stack:
            nid = stack.pop()
            for r in state.heads.get(nid, ()):
                if r.tail not in self.nodes and r.tail not in write and r.tail in state.topology.nodes:
                    write.add(r.tail)
                    stack.append(r.tail)
        return write

    def _entity_changes(self, state: NetworkState, write: Iterable[str]) -> list[ChangeSet]:
        """One change set per entity of ``write`` that differs from the mirror, tails before heads, deletions last."""
        write = set(write)
        gone = {nid for nid in write if nid not in state.topology.nodes and nid in self.nodes}
        kind = {nid: (state.topology.nodes[nid].kind if nid in state.topology.nodes else self.nodes[nid].kind)
                for nid in write if nid in state.topology.nodes or nid in self.nodes}
        live = sorted((n for n in kind if n not in gone), key=lambda n: (_KIND_RANK.get(kind[n], 1), n))
        out: list[ChangeSet] = []
        for nid in live:
            tn = state.twin_node(nid)
            ups = (tn,) if self.nodes.get(nid) != tn else ()
            now = set(state.heads.get(nid, ()))
            before = self.heads.get(nid, set())
            rup = tuple(sorted(now - before))
            rdel = tuple(sorted(r for r in before - now if r.tail not in gone))  # gone tails end them themselves
            if ups or rup or rdel:
                out.append(ChangeSet(ups, (), rup, rdel))
        for nid in sorted(gone, key=lambda n: (-_KIND_RANK.get(kind[n], 1), n)):
            out.append(ChangeSet((), (nid,), (), ()))
        return out

    def _write(self, changes: list[ChangeSet], parts: Sequence[str], *,
               per_entity: bool) -> tuple[int | None, int, int]:
        """Commit ``changes`` (one transaction, or one per entity); returns (last version, records, transactions)."""
        if not changes:
            return None, 0, 0
        if not per_entity:
            changes = [ChangeSet(*(tuple(x for cs in changes for x in getattr(cs, f)) for f in
                                   ("upsert_nodes", "delete_nodes", "upsert_relations", "delete_relations")))]
        version, n_written = None, 0
        for cs in changes:
            info = self.store.commit(cs, parts=tuple(sorted(parts)))
            version, n_written = info.number, n_written + info.n_written
            self._mirror(cs)
        return version, n_written, len(changes)

    def _mirror(self, cs: ChangeSet) -> None:
        for nid in cs.delete_nodes:
            for r in list(self.heads.pop(nid, ())) + list(self.tails.pop(nid, ())):
                self.heads.get(r.head, set()).discard(r)
                self.tails.get(r.tail, set()).discard(r)
            self.nodes.pop(nid, None)
        for r in cs.delete_relations:
            self.heads[r.head].discard(r)
            self.tails[r.tail].discard(r)
        for n in cs.upsert_nodes:
            self.nodes[n.id] = n
        for r in cs.upsert_relations:
            self.heads.setdefault(r.head, set()).add(r)
            self.tails.setdefault(r.tail, set()).add(r)

    #: one transaction per changed entity (event-driven) instead of one for all
    per_entity = False

    def update(self, state: NetworkState, changed: Iterable[str]) -> UpdateInfo:
        """Write every changed entity now (no pooling, no gate), in one transaction or one per entity."""
        t0 = time.perf_counter()
        write = self._with_new_tails(state, set(changed))
        version, n_written, n_tx = self._write(self._entity_changes(state, write), ("ALL",),
                                               per_entity=self.per_entity)
        return UpdateInfo(0.0, time.perf_counter() - t0, n_written, version, {}, ("ALL",), 0, n_tx)


class EventDrivenTwin(IncrementalTwin):
    """The knowledge-graph twin of reference [39] read as event-driven: one transaction per changed entity.

    Each event writes one entity's record and outgoing relations; tails go before the heads that point at
    them and deletions last, so every transaction is valid on its own.
    """

    name = "event-driven"
    per_entity = True


class GenTwin(IncrementalTwin):
    """The GenTwin twin: versions follow the update trigger α (eq. 7) of Priority Pooling.

    After a change it recomputes the pools and α_p (eqs. 1-7, readings as in
    :func:`gentwin.pooling.pool_snapshot`) and adds α_p to the pool's α since its last version.  A pool
    *fires* when that sum exceeds ``alpha_threshold``: its changed entities are written (one transaction)
    and its sum restarts from 0; changes in other pools wait (*stale*: a read now misses them).  Entities
    outside the pools (services, the city) form the part ``"S"``, written whenever they change.
    """

    name = "GenTwin"

    def __init__(self, store: TwinStore, state: NetworkState, *, band: str = "corrected",
                 pool_weight: str = "degree", alpha_reading: str = "nodes", relation_count: str = "unique",
                 relation_owner: str | None = None, alpha_threshold: float = 0.0) -> None:
        check_real("alpha_threshold", alpha_threshold, low=0.0, error=WhatIfError)
        self.readings = dict(band=band, pool_weight=pool_weight, alpha_reading=alpha_reading,
                             relation_count=relation_count)
        if relation_owner is not None:  # None: pooling's default reading
            self.readings["relation_owner"] = relation_owner
        self.alpha_threshold = float(alpha_threshold)
        self.snapshot = pool_snapshot(state.dataset, **self.readings)
        self._pool = dict(zip(self.snapshot.node_ids, self.snapshot.pool))
        self.alpha_since: dict[str, float] = {}  #: α per pool accumulated since the pool's last version
        super().__init__(store, state)

    def _part(self, nid: str, new_pool: dict[str, str | None]) -> set[str]:
        labels = {self._pool.get(nid), new_pool.get(nid)} - {None}
        return labels if labels else {"S"}

    def fires(self, alpha: dict[str, float]) -> set[str]:
        """The pools whose α since their last version, plus ``alpha``, exceeds the threshold (and ``"S"``).

        >>> twin = GenTwin.__new__(GenTwin)
        >>> twin.alpha_threshold, twin.alpha_since = 0.5, {"H": 0.3}
        >>> sorted(twin.fires({"H": 0.3, "M": 0.4, "L": 0.0}))
        ['H', 'S']
        >>> twin.alpha_threshold = 0.0
        >>> sorted(twin.fires({"H": 0.0, "M": 0.4, "L": 0.0}))
        ['H', 'M', 'S']
        """
        acc = {p: self.alpha_since.get(p, 0.0) + a for p, a in alpha.items()}
        return {p for p, a in acc.items() if a > self.alpha_threshold} | {"S"}

    def update(self, state: NetworkState, changed: Iterable[str]) -> UpdateInfo:
        """Algorithm 1 lines 2-8 on the new state, then a version of the pools that fired."""
        t0 = time.perf_counter()
        snap = pool_snapshot(state.dataset, **self.readings)
        al = pool_alpha(self.snapshot, snap)
        t1 = time.perf_counter()
        new_pool = dict(zip(snap.node_ids, snap.pool))
        fired = self.fires(al)
        for p, a in al.items():
            self.alpha_since[p] = 0.0 if p in fired else self.alpha_since.get(p, 0.0) + a
        cand = self.pending | set(changed)
        write: set[str] = set()
        parts: set[str] = set()
        for nid in cand:
            hit = self._part(nid, new_pool) & fired
            if hit:
                write.add(nid)
                parts |= hit
        full = self._with_new_tails(state, write)
        for nid in full - write:
            parts |= self._part(nid, new_pool)
        self.pending = cand - full
        version, n_written, n_tx = self._write(self._entity_changes(state, full), tuple(parts), per_entity=False)
        t2 = time.perf_counter()
        self.snapshot, self._pool = snap, new_pool
        return UpdateInfo(t1 - t0, t2 - t1, n_written, version, al, tuple(sorted(parts)), len(self.pending), n_tx)


class TraditionalTwin:
    """The traditional twin of reference [39] read as a rebuild: the knowledge graph rebuilt on every change."""

    name = "traditional"

    def __init__(self, store: TwinStore, state: NetworkState) -> None:
        self.store = store
        nodes, rels = twin_from_topology(state.topology, state.presence)
        store.rebuild(nodes.values(), rels, name="initial")

    def update(self, state: NetworkState, changed: Iterable[str]) -> UpdateInfo:
        t0 = time.perf_counter()
        nodes, rels = twin_from_topology(state.topology, state.presence)
        info = self.store.rebuild(nodes.values(), rels)
        t1 = time.perf_counter()
        return UpdateInfo(0.0, t1 - t0, info.n_written, info.number, {}, ("ALL",), 0, 1)


def respond(twin: Any, state: NetworkState, episode: Episode) -> tuple[dict[str, Any], Subgraph]:
    """Algorithm 1, lines 17-20 for one twin: update, list (k, v) pairs, request the version, time it.

    The clock (``time.perf_counter``) starts after the Physical Space changed and stops when the subgraph
    is back: ``response_ms`` = ``update_ms`` (pooling and write) + ``read_ms`` ((k, v) pairs and request).
    Returns one result row (times in ms; ``stale``: changed entities not yet written) and the subgraph.
    """
    t0 = time.perf_counter()
    upd = twin.update(state, episode.changed)
    t1 = time.perf_counter()
    pairs = kv_pairs(state, episode.requirement.seeds)  # line 18
    sub = twin.store.request(episode.requirement)  # line 19
    t2 = time.perf_counter()  # line 20
    row = {
        "twin": twin.name, "kind": episode.kind, "rate": episode.rate, "changes": episode.size,
        "changed_entities": len(episode.changed), "response_ms": (t2 - t0) * 1e3,
        "update_ms": (t1 - t0) * 1e3, "read_ms": (t2 - t1) * 1e3,
        "pooling_ms": upd.pooling_s * 1e3, "write_ms": upd.write_s * 1e3,
        "request_ms": (t2 - t0 - upd.pooling_s - upd.write_s) * 1e3,
        "n_written": upd.n_written, "transactions": upd.transactions, "version": sub.version, "stale": upd.stale,
        "kv_pairs": len(pairs), "answered_nodes": len(sub.nodes),
        "alpha_max": max(upd.alpha.values()) if upd.alpha else float("nan"),
        "alpha_sum": sum(upd.alpha.values()) if upd.alpha else float("nan"),
        "parts": ",".join(upd.fired),
    }
    return row, sub

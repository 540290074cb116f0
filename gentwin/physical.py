"""The Physical Space: a SimPy discrete-event simulator of the smart-city IoT network and its Table IV scenarios.

It replaces the paper's AnyLogic simulator (proprietary), keeping to Section III.C.  The cyber side
(:mod:`gentwin.loops`) reads the network only through :meth:`PhysicalSpace.collect` and steers it only through
:meth:`PhysicalSpace.rehome`; :func:`gentwin.experiments.table4.simulate` wires the two together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .checks import check_int, check_real
from .config import PhysicalConfig, topology_config_for
from .topology import DataSet, Topology

__all__ = [
    "PhysicalError", "TABLE4_SCENARIOS", "REASONS", "topology_config_for", "last_presence", "presence_chain",
    "outage_window", "Delivery", "PhysicalSpace",
]

#: Table IV's scenarios: 1, no interruption; 2, the flow from the physical space is cut once.
TABLE4_SCENARIOS: tuple[int, ...] = (1, 2)

#: What happened to the reading of one (sensor, slot) cell, as stored in ``SimulationResult.reason``.
REASONS: tuple[str, ...] = ("delivered", "inactive", "cut", "gateway_down", "packet_loss", "late")
DELIVERED, INACTIVE, CUT, GATEWAY_DOWN, PACKET_LOSS, LATE = range(len(REASONS))


class PhysicalError(ValueError):
    """An argument of the simulator is invalid."""


def last_presence(dataset: DataSet) -> dict[str, bool]:
    """Each node's presence in its latest instance of the data set's log (nodes it never mentions left out)."""
    return {i.node_id: bool(i.present) for i in sorted(dataset.instances, key=lambda i: (i.timestamp, i.index))}


def presence_chain(initial: np.ndarray, n_slots: int, p_inactive: float, dwell_slots: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Presence (eq. 1) of each sensor in each reading slot: a two-state Markov chain, (sensors, n_slots) bool.

    An inactive sensor wakes with probability ``b = 1 / dwell_slots`` per slot; an active one falls asleep
    with ``a = b p / (1 - p)``, which makes the long-run inactive share ``a / (a + b) = p_inactive``.
    ``initial`` (bool per sensor) is slot 0.  With ``p_inactive = 0`` nobody falls asleep and sleepers wake at
    once (``dwell_slots = 1``):

    >>> presence_chain(np.array([True, False]), 3, 0.0, 1.0, np.random.default_rng(0)).astype(int).tolist()
    [[1, 1, 1], [0, 1, 1]]
    """
    init = np.asarray(initial)
    if init.dtype != bool or init.ndim != 1:
        raise PhysicalError("initial: must be a one-dimensional boolean array (presence in slot 0)")
    n_slots = check_int("n_slots", n_slots, low=1, error=PhysicalError)
    p_inactive = check_real("p_inactive", p_inactive, low=0.0, high=1.0, high_open=True, error=PhysicalError)
    dwell_slots = check_real("presence_dwell_s / report_period_s", dwell_slots, low=1.0, error=PhysicalError)
    b = 1.0 / dwell_slots
    a = b * p_inactive / (1.0 - p_inactive)
    if a > 1.0:
        raise PhysicalError(f"presence_dwell_s: with p_inactive = {p_inactive} an inactive spell of {dwell_slots:g} "
                            f"slots needs an active sensor to fall asleep with probability {a:.3g} > 1 per slot; "
                            "use a longer dwell")
    out = np.empty((init.size, n_slots), dtype=bool)
    out[:, 0] = init
    u = rng.random((init.size, n_slots))
    for k in range(1, n_slots):
        out[:, k] = np.where(out[:, k - 1], u[:, k] >= a, u[:, k] < b)
    return out


def outage_window(physical: PhysicalConfig, scenario: int) -> tuple[float, float] | None:
    """The cut ``[start, end)`` of a scenario (``None`` for Scenario 1 or a zero-length cut); a reading sent
    inside it is lost, one already in flight still arrives."""
    if scenario not in TABLE4_SCENARIOS:
        raise PhysicalError(f"scenario = {scenario!r}: must be 1 (no interruption) or 2 (the flow is cut)")
    if scenario == 1 or physical.outage_s == 0:
        return None
    return (physical.outage_start_s, physical.outage_start_s + physical.outage_s)


@dataclass(frozen=True)
class Delivery:
    """What crossed from the physical to the cyber space for one reading slot, by the slot's close."""

    received: np.ndarray  #: bool per sensor, its slot reading arrived in time
    values: np.ndarray  #: float per sensor, the reading (NaN where not received)
    sent_at: np.ndarray  #: float per sensor, send time of the received reading (like NGSI-LD observedAt; else NaN)
    via: np.ndarray  #: int per sensor, gateway index the reading came through (-1 otherwise)
    heartbeats: np.ndarray  #: bool per gateway, its slot heartbeat arrived in time
    heard_via: np.ndarray  #: int, gateway of every message received so far that was sent from the previous slot on
    heard_at: np.ndarray  #: float, its send time


class PhysicalSpace:
    """Sensors, gateways and the network as SimPy processes.

    One process per sensor sends its reading once per slot at a fixed phase, one per gateway a heartbeat;
    with ``gateway_mtbf_s > 0`` (or a scripted ``gateway_failures`` list of (gateway id, start, end)) one
    process per gateway fails and repairs it.  Every reading's fate is written into (sensor, slot) grids.
    """

    def __init__(self, env, topology: Topology, physical: PhysicalConfig, *, scenario: int, presence: np.ndarray,
                 seed: int, gateway_failures: Sequence[tuple[str, float, float]] | None = None) -> None:
        self.env, self.cfg, self.presence = env, physical, presence
        self.period = physical.report_period_s
        self.n_slots = presence.shape[1]
        self.sensor_ids = tuple(n.id for n in topology.sensors())
        self.gateway_ids = tuple(n.id for n in topology.gateways())
        gw_index = {g: j for j, g in enumerate(self.gateway_ids)}
        self.assignment = np.array([gw_index[n.gateway] for n in topology.sensors()], dtype=np.int64)
        self.gateway_up = np.ones(len(self.gateway_ids), dtype=bool)
        self.outage = outage_window(physical, scenario)
        n, k = presence.shape
        g = len(self.gateway_ids)
        r_phase, r_loss, r_delay, r_value, r_fail, r_hb = map(np.random.default_rng,
                                                              np.random.SeedSequence([int(seed), 6]).spawn(6))
        self.phase = r_phase.uniform(0.0, self.period, n)
        self.hb_phase = r_phase.uniform(0.0, self.period, g)
        self._lost = r_loss.random((n, k)) < physical.packet_loss
        self._hb_lost = r_hb.random((g, k)) < physical.packet_loss
        self._delay, self._hb_delay = ((r_delay.exponential(physical.delay_mean_s, (m, k))
                                        if physical.delay_mean_s > 0 else np.zeros((m, k))) for m in (n, g))
        self.values = np.cumsum(r_value.normal(0.0, 1.0, (n, k)), axis=1)  # a random walk per sensor
        self._fail_rng = r_fail
        self.sent_at = np.full((n, k), np.nan)
        self.arrival = np.full((n, k), np.inf)
        self.reason = np.full((n, k), INACTIVE, dtype=np.int8)
        self.via = np.full((n, k), -1, dtype=np.int64)
        self.hb_arrival = np.full((g, k), np.inf)
        self.hb_sent = np.full((g, k), np.nan)
        self.down_intervals: list[tuple[int, float, float]] = []
        self.rehomes: list[tuple[float, int, int, int]] = []  # (time, sensor, from, to)
        for s in range(n):
            env.process(self._sensor(s))
        for j in range(g):
            env.process(self._heartbeat(j))
        if gateway_failures is not None:
            for gid, start, end in gateway_failures:
                if gid not in gw_index:
                    raise PhysicalError(f"gateway_failures: {gid!r} is not a gateway of the topology")
                if not (0.0 <= start < end):
                    raise PhysicalError(f"gateway_failures: {gid!r} needs 0 <= start < end (got {start}, {end})")
                env.process(self._failures(gw_index[gid], (float(start), float(end))))
        elif physical.gateway_mtbf_s > 0:
            for j in range(g):
                env.process(self._failures(j))

    def _cut(self, t: float) -> bool:
        return self.outage is not None and self.outage[0] <= t < self.outage[1]

    def _sensor(self, s: int):
        env, assignment, gateway_up = self.env, self.assignment, self.gateway_up
        present = self.presence[s].tolist()  # Python lists: scalar numpy indexing is slow in the hot loop
        lost, delay = self._lost[s].tolist(), self._delay[s].tolist()
        sent_at, arrival, reason, via = self.sent_at[s], self.arrival[s], self.reason[s], self.via[s]
        yield env.timeout(self.phase[s])
        for k in range(self.n_slots):
            if present[k]:
                now = env.now
                gw = assignment[s]
                sent_at[k], via[k] = now, gw
                if self._cut(now):
                    reason[k] = CUT
                elif not gateway_up[gw]:
                    reason[k] = GATEWAY_DOWN
                elif lost[k]:
                    reason[k] = PACKET_LOSS
                else:
                    reason[k] = DELIVERED
                    arrival[k] = now + delay[k]
            yield env.timeout(self.period)

    def _heartbeat(self, j: int):
        yield self.env.timeout(self.hb_phase[j])
        for k in range(self.n_slots):
            now = self.env.now
            if self.gateway_up[j] and not self._cut(now) and not self._hb_lost[j, k]:
                self.hb_sent[j, k] = now
                self.hb_arrival[j, k] = now + self._hb_delay[j, k]
            yield self.env.timeout(self.period)

    def _failures(self, j: int, script: tuple[float, float] | None = None):
        """Gateway ``j`` fails and is repaired: once at the scripted (start, end), or forever at random."""
        while True:
            yield self.env.timeout(script[0] if script else self._fail_rng.exponential(self.cfg.gateway_mtbf_s))
            start = self.env.now
            self.gateway_up[j] = False
            yield self.env.timeout(script[1] - script[0] if script else
                                   self._fail_rng.exponential(self.cfg.gateway_mttr_s))
            self.gateway_up[j] = True
            self.down_intervals.append((j, start, script[1] if script else self.env.now))
            if script:
                return

    def collect(self, k: int) -> Delivery:
        """What the cyber space has received of slot ``k`` by now (see :class:`Delivery`)."""
        now = self.env.now
        got = self.arrival[:, k] <= now
        # every message received so far that was sent from slot k - 1 on (records carry send time and gateway)
        lo = max(0, k - 1)
        hi = min(self.n_slots, k + 2 + int(math.ceil(self.cfg.slot_grace_s / self.period)))
        ok = self.arrival[:, lo:hi] <= now
        hb_ok = self.hb_arrival[:, lo:hi] <= now
        gw = np.broadcast_to(np.arange(len(self.gateway_ids))[:, None], hb_ok.shape)
        return Delivery(
            received=got, values=np.where(got, self.values[:, k], np.nan),
            sent_at=np.where(got, self.sent_at[:, k], np.nan), via=np.where(got, self.via[:, k], -1),
            heartbeats=self.hb_arrival[:, k] <= now, heard_via=np.concatenate([self.via[:, lo:hi][ok], gw[hb_ok]]),
            heard_at=np.concatenate([self.sent_at[:, lo:hi][ok], self.hb_sent[:, lo:hi][hb_ok]]))

    def rehome(self, sensor: int, gateway: int) -> None:
        """Control flow of the external loop: route ``sensor``'s readings through ``gateway`` from now on."""
        self.rehomes.append((float(self.env.now), int(sensor), int(self.assignment[sensor]), int(gateway)))
        self.assignment[sensor] = gateway

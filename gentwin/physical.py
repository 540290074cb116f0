"""The Physical Space: a SimPy discrete-event simulator of the smart-city IoT network.

The paper built its Physical Space in AnyLogic, which is proprietary (READING.md
point 12).  This module puts an open discrete-event simulator, SimPy, in its
place and keeps to what Section III.C says the simulator did:

* every sensor sends its unique id and a reading through its gateway once per
  reading slot of ``report_period_s`` (2 s in the paper), at a fixed phase
  inside the slot;
* the network loses a reading with probability ``packet_loss`` and delays it
  by an exponential time of mean ``delay_mean_s``;
* gateways fail and recover (exponential up and down times, ``gateway_mtbf_s``
  and ``gateway_mttr_s``; ``gateway_mtbf_s = 0`` means they never fail);
* a sensor's presence (eq. 1) changes over time: a two-state Markov chain per
  reading slot whose long-run inactive share is the data set's ``p_inactive``
  and whose inactive spells last ``presence_dwell_s`` on average; it starts
  from each sensor's last presence in the generated data set, so the
  simulation continues the data set's log;
* Scenario 1 runs undisturbed; Scenario 2 cuts the flow from the physical
  space for ``outage_s`` seconds from ``outage_start_s`` (10 s in the paper).

The cyber side (both twins, the external and the internal closed loop of
Fig. 1) lives in :mod:`gentwin.loops`; :func:`simulate` wires the two together
and scores the run with :func:`completeness`, the Table IV metric.

Examples
--------
>>> from gentwin.config import resolve
>>> s = resolve("quick")
>>> topo_cfg = topology_config_for(5, s.topology, s.physical)
>>> topo_cfg.n_sensors, topo_cfg.n_gateways
(5, 3)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .config import PhysicalConfig, PoolingConfig, Settings, TopologyConfig
from .topology import DataSet, Topology, generate_dataset

__all__ = [
    "PhysicalError",
    "SCENARIOS",
    "REASONS",
    "CompletenessScore",
    "completeness",
    "topology_config_for",
    "last_presence",
    "presence_chain",
    "outage_window",
    "Delivery",
    "PhysicalSpace",
    "SimulationResult",
    "simulate",
    "table4_runs",
    "size_labels",
    "summarise_table4",
]

#: Scenario 1, no interruption; Scenario 2, the flow from the physical space is cut once.
SCENARIOS: tuple[int, ...] = (1, 2)

#: What happened to the reading of one (sensor, slot) cell, as stored in ``SimulationResult.reason``.
REASONS: tuple[str, ...] = ("delivered", "inactive", "cut", "gateway_down", "packet_loss", "late")
DELIVERED, INACTIVE, CUT, GATEWAY_DOWN, PACKET_LOSS, LATE = range(len(REASONS))


class PhysicalError(ValueError):
    """An argument of the simulator or of the completeness metric is invalid."""


# ---------------------------------------------------------------------------
# The Table IV metric
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CompletenessScore:
    """Data completeness of one twin over one run (Table IV), with its parts.

    ``completeness`` is the share of ground-truth records the twin holds,
    observed or generated-and-correct; ``observed_share`` counts observed
    records only (the traditional twin's completeness);
    ``generated_precision`` is the share of generated records that are
    correct (NaN when the twin generated none); ``false_record_rate`` is the
    number of wrong generated records per ground-truth record.
    """

    n_truth: int
    n_observed: int
    n_generated: int
    n_generated_correct: int
    completeness: float
    observed_share: float
    generated_precision: float
    false_record_rate: float

    @property
    def n_generated_wrong(self) -> int:
        return self.n_generated - self.n_generated_correct


def _as_bool_grid(name: str, a: object, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != bool:
        raise PhysicalError(f"{name}: must be a boolean array (got dtype {arr.dtype})")
    if arr.ndim != 2:
        raise PhysicalError(f"{name}: must be a (sensor, slot) grid, got {arr.ndim} dimension(s)")
    if shape is not None and arr.shape != shape:
        raise PhysicalError(f"{name}: shape {arr.shape} differs from truth's shape {shape}")
    return arr


def completeness(truth: np.ndarray, observed: np.ndarray, generated: np.ndarray | None = None) -> CompletenessScore:
    """Data completeness (Table IV) of a twin against the simulator's ground truth.

    The paper reports completeness as "how much GenTwin can maintain data in
    cyberspace" without a formula.  The reading used here, over the
    (sensor, reading-slot) cells of one run:

    .. math::

        T &= \\{(s, k) : \\text{sensor } s \\text{ sent a reading in slot } k\\} \\\\
        \\text{completeness} &= \\frac{|O| + |G \\cap T|}{|T|}, \\qquad
        \\text{precision} = \\frac{|G \\cap T|}{|G|}, \\qquad
        \\text{false-record rate} = \\frac{|G \\setminus T|}{|T|}

    with ``O`` the records the twin observed and ``G`` the records it
    generated.  A sensor that is truly inactive in a slot sent nothing, so its
    cell is not in ``T``; a record generated there is wrong: it does not raise
    completeness and it lowers the precision.  A generated record never counts
    as observed (``O`` and ``G`` must be disjoint).

    Parameters
    ----------
    truth, observed
        Boolean arrays of shape (n_sensors, n_slots): the ground truth (a
        reading was sent) and what the twin received in time.  ``observed``
        must lie inside ``truth``: the network cannot deliver a reading nobody
        sent.
    generated
        Boolean array of the same shape: records the twin generated (flagged as
        generated).  ``None`` (default) for the traditional twin, which never
        generates.

    Returns
    -------
    CompletenessScore

    Raises
    ------
    PhysicalError
        Wrong dtype or shape, an observed record outside ``truth``, a cell both
        observed and generated, or an empty ``truth``.

    Examples
    --------
    Two sensors, three slots; sensor 1 is inactive in slot 2; slot 1 is cut;
    the twin generates both cut cells and a record for sensor 1 in slot 2:

    >>> T = np.array([[1, 1, 1], [1, 1, 0]], bool)
    >>> O = np.array([[1, 0, 1], [1, 0, 0]], bool)
    >>> G = np.array([[0, 1, 0], [0, 1, 1]], bool)
    >>> s = completeness(T, O, G)
    >>> s.n_truth, s.n_observed, s.n_generated, s.n_generated_correct
    (5, 3, 3, 2)
    >>> s.completeness, round(s.generated_precision, 4), s.false_record_rate
    (1.0, 0.6667, 0.2)
    >>> completeness(T, O).completeness   # the traditional twin: 3 of 5
    0.6
    """
    t = _as_bool_grid("truth", truth)
    o = _as_bool_grid("observed", observed, t.shape)
    g = np.zeros_like(t) if generated is None else _as_bool_grid("generated", generated, t.shape)
    n_truth = int(t.sum())
    if n_truth == 0:
        raise PhysicalError("truth: holds no record (no sensor sent a reading); completeness is undefined")
    stray = o & ~t
    if stray.any():
        s, k = np.argwhere(stray)[0]
        raise PhysicalError(
            f"observed: cell (sensor {s}, slot {k}) is observed but the ground truth has no reading there"
        )
    both = o & g
    if both.any():
        s, k = np.argwhere(both)[0]
        raise PhysicalError(
            f"generated: cell (sensor {s}, slot {k}) is both observed and generated; "
            "a generated record must never stand for an observed one"
        )
    n_obs = int(o.sum())
    n_gen = int(g.sum())
    n_good = int((g & t).sum())
    return CompletenessScore(
        n_truth=n_truth,
        n_observed=n_obs,
        n_generated=n_gen,
        n_generated_correct=n_good,
        completeness=(n_obs + n_good) / n_truth,
        observed_share=n_obs / n_truth,
        generated_precision=(n_good / n_gen) if n_gen else math.nan,
        false_record_rate=(n_gen - n_good) / n_truth,
    )


# ---------------------------------------------------------------------------
# Set-up helpers
# ---------------------------------------------------------------------------


def topology_config_for(size: int, topology: TopologyConfig, physical: PhysicalConfig) -> TopologyConfig:
    """The topology of one Table IV size: ``size`` sensors and ``size / sensors_per_gateway`` gateways.

    The paper gives only the sensor counts of the three sizes (30 / 100 /
    250); we keep its 250 / 50 = 5 sensors per gateway (``sensors_per_gateway``),
    at least one gateway per service, fog links in the paper's 30 / 50 ratio
    (as many as fit), and at least enough log instances for every node.
    Everything else (services, ``p_inactive``, ``data_seed``) comes from
    ``topology``.

    >>> from gentwin.config import TopologyConfig, PhysicalConfig
    >>> c = topology_config_for(250, TopologyConfig(), PhysicalConfig())
    >>> c.n_sensors, c.n_gateways, c.n_gateway_links, c.n_instances
    (250, 50, 30, 1000)
    >>> c = topology_config_for(30, TopologyConfig(), PhysicalConfig())
    >>> c.n_sensors, c.n_gateways, c.n_gateway_links
    (30, 6, 3)
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise PhysicalError(f"size = {size!r}: must be an integer >= 1 (number of sensors)")
    size = int(size)
    n_gw = max(topology.n_services, int(round(size / physical.sensors_per_gateway)))
    per_service = [n_gw // topology.n_services + (1 if k < n_gw % topology.n_services else 0)
                   for k in range(topology.n_services)]
    max_links = sum(m * (m - 1) // 2 for m in per_service)
    links = min(max_links, int(round(n_gw * 30 / 50)))
    return dataclasses.replace(
        topology,
        n_sensors=size,
        n_gateways=n_gw,
        n_gateway_links=links,
        n_instances=max(topology.n_instances, size + n_gw),
    )


def last_presence(dataset: DataSet) -> dict[str, bool]:
    """Each node's presence in its latest instance of the data set's log.

    Nodes the log never mentions are left out.

    >>> from gentwin.topology import Instance
    >>> from gentwin.config import TopologyConfig
    >>> ds = generate_dataset(TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60))
    >>> ds.instances = [Instance(0, 0.0, "AQ-S001", True, "train"), Instance(1, 2.0, "AQ-S001", False, "train")]
    >>> last_presence(ds)
    {'AQ-S001': False}
    """
    out: dict[str, bool] = {}
    for inst in sorted(dataset.instances, key=lambda i: (i.timestamp, i.index)):
        out[inst.node_id] = bool(inst.present)
    return out


def presence_chain(
    initial: np.ndarray, n_slots: int, p_inactive: float, dwell_slots: float, rng: np.random.Generator
) -> np.ndarray:
    """Presence (eq. 1) of each sensor in each reading slot: a two-state Markov chain.

    An inactive sensor wakes up with probability ``b = 1 / dwell_slots`` per
    slot (so inactive spells last ``dwell_slots`` slots on average); an active
    one falls asleep with probability ``a = b p / (1 - p)``, which makes the
    long-run inactive share ``a / (a + b) = p``, the data set's
    ``p_inactive``.  ``dwell_slots = 1`` makes every slot independent (as the
    generated log is).  The result is a boolean array of shape
    (n_sensors, n_slots).

    Parameters
    ----------
    initial
        Boolean array of shape (n_sensors,): presence in slot 0.
    n_slots : int
        Slots to produce (>= 1).
    p_inactive : float
        Long-run inactive share, in [0, 1).
    dwell_slots : float
        Mean inactive spell in slots, >= 1.
    rng
        A numpy random generator.

    Examples
    --------
    With ``p_inactive = 0`` nobody falls asleep and sleepers wake at once
    (``dwell_slots = 1``):

    >>> presence_chain(np.array([True, False]), 3, 0.0, 1.0, np.random.default_rng(0)).astype(int).tolist()
    [[1, 1, 1], [0, 1, 1]]
    """
    init = np.asarray(initial)
    if init.dtype != bool or init.ndim != 1:
        raise PhysicalError("initial: must be a one-dimensional boolean array (presence in slot 0)")
    if isinstance(n_slots, bool) or not isinstance(n_slots, (int, np.integer)) or n_slots < 1:
        raise PhysicalError(f"n_slots = {n_slots!r}: must be an integer >= 1")
    if not (isinstance(p_inactive, (int, float)) and 0.0 <= p_inactive < 1.0):
        raise PhysicalError(f"p_inactive = {p_inactive!r}: must be in [0, 1)")
    if not (isinstance(dwell_slots, (int, float)) and math.isfinite(dwell_slots) and dwell_slots >= 1.0):
        raise PhysicalError(f"presence_dwell_s / report_period_s = {dwell_slots!r}: must be a number >= 1")
    b = 1.0 / dwell_slots
    a = b * p_inactive / (1.0 - p_inactive)
    if a > 1.0:
        raise PhysicalError(
            f"presence_dwell_s: with p_inactive = {p_inactive} an inactive spell of {dwell_slots:g} slots "
            f"needs an active sensor to fall asleep with probability {a:.3g} > 1 per slot; use a longer dwell"
        )
    out = np.empty((init.size, int(n_slots)), dtype=bool)
    out[:, 0] = init
    u = rng.random((init.size, int(n_slots)))
    for k in range(1, int(n_slots)):
        prev = out[:, k - 1]
        out[:, k] = np.where(prev, u[:, k] >= a, u[:, k] < b)
    return out


def outage_window(physical: PhysicalConfig, scenario: int) -> tuple[float, float] | None:
    """The cut ``[start, end)`` of a scenario (``None`` for Scenario 1 or a zero-length cut).

    A reading is lost to the cut when it is *sent* inside the half-open
    interval; readings already in flight when the cut starts still arrive.

    >>> from gentwin.config import PhysicalConfig
    >>> outage_window(PhysicalConfig(), 2), outage_window(PhysicalConfig(), 1)
    ((60.0, 70.0), None)
    """
    if scenario not in SCENARIOS:
        raise PhysicalError(f"scenario = {scenario!r}: must be 1 (no interruption) or 2 (the flow is cut)")
    if scenario == 1 or physical.outage_s == 0:
        return None
    return (physical.outage_start_s, physical.outage_start_s + physical.outage_s)


# ---------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What crossed from the physical to the cyber space for one reading slot, by the slot's close.

    Each received record carries the sensor's id, its reading, its send time
    (like NGSI-LD's ``observedAt``) and the gateway it came through.
    """

    received: np.ndarray  #: bool per sensor, its slot reading arrived in time
    values: np.ndarray  #: float per sensor, the reading (NaN where not received)
    sent_at: np.ndarray  #: float per sensor, send time of the received reading (NaN otherwise)
    via: np.ndarray  #: int per sensor, gateway index the reading came through (-1 otherwise)
    heartbeats: np.ndarray  #: bool per gateway, its slot heartbeat arrived in time
    heard_via: np.ndarray  #: int, gateway of every message received so far that was sent from the previous slot on
    heard_at: np.ndarray  #: float, its send time


class PhysicalSpace:
    """Sensors, gateways and the network as SimPy processes.

    One process per sensor sends its reading once per slot; one process per
    gateway sends a heartbeat once per slot; with ``gateway_mtbf_s > 0`` (or a
    scripted failure list) one process per gateway fails and repairs it.
    Every reading's fate is written into (sensor, slot) grids; the cyber twin
    reads them only through :meth:`collect`, i.e. only what arrived by then.

    :meth:`rehome` is the control input of the external closed loop.
    """

    def __init__(
        self,
        env,
        topology: Topology,
        physical: PhysicalConfig,
        *,
        scenario: int,
        presence: np.ndarray,
        seed: int,
        gateway_failures: Sequence[tuple[str, float, float]] | None = None,
    ) -> None:
        self.env = env
        self.cfg = physical
        self.period = physical.report_period_s
        self.n_slots = presence.shape[1]
        self.sensor_ids = tuple(n.id for n in topology.sensors())
        self.gateway_ids = tuple(n.id for n in topology.gateways())
        gw_index = {g: j for j, g in enumerate(self.gateway_ids)}
        self.assignment = np.array([gw_index[n.gateway] for n in topology.sensors()], dtype=np.int64)
        self.gateway_up = np.ones(len(self.gateway_ids), dtype=bool)
        self.outage = outage_window(physical, scenario)
        self.presence = presence
        n, k = presence.shape
        g = len(self.gateway_ids)
        ss = np.random.SeedSequence([int(seed), 6])
        r_phase, r_loss, r_delay, r_value, r_fail, r_hb = (np.random.default_rng(x) for x in ss.spawn(6))
        self.phase = r_phase.uniform(0.0, self.period, n)
        self.hb_phase = r_phase.uniform(0.0, self.period, g)
        self._lost = r_loss.random((n, k)) < physical.packet_loss
        self._hb_lost = r_hb.random((g, k)) < physical.packet_loss
        if physical.delay_mean_s > 0:
            self._delay = r_delay.exponential(physical.delay_mean_s, (n, k))
            self._hb_delay = r_delay.exponential(physical.delay_mean_s, (g, k))
        else:
            self._delay = np.zeros((n, k))
            self._hb_delay = np.zeros((g, k))
        #: the reading's value, a random walk per sensor (arbitrary units)
        self.values = np.cumsum(r_value.normal(0.0, 1.0, (n, k)), axis=1)
        self._fail_rng = r_fail
        #: outcome grids
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
                env.process(self._scripted_failure(gw_index[gid], float(start), float(end)))
        elif physical.gateway_mtbf_s > 0:
            for j in range(g):
                env.process(self._failures(j))

    # -- processes -------------------------------------------------------
    def _cut(self, t: float) -> bool:
        return self.outage is not None and self.outage[0] <= t < self.outage[1]

    def _sensor(self, s: int):
        env = self.env
        period = self.period
        present = self.presence[s].tolist()  # Python lists: scalar numpy indexing is slow in the hot loop
        lost = self._lost[s].tolist()
        delay = self._delay[s].tolist()
        sent_at, arrival, reason, via = self.sent_at[s], self.arrival[s], self.reason[s], self.via[s]
        assignment, gateway_up = self.assignment, self.gateway_up
        yield env.timeout(self.phase[s])
        for k in range(self.n_slots):
            if present[k]:
                now = env.now
                gw = assignment[s]
                sent_at[k] = now
                via[k] = gw
                if self._cut(now):
                    reason[k] = CUT
                elif not gateway_up[gw]:
                    reason[k] = GATEWAY_DOWN
                elif lost[k]:
                    reason[k] = PACKET_LOSS
                else:
                    reason[k] = DELIVERED
                    arrival[k] = now + delay[k]
            yield env.timeout(period)

    def _heartbeat(self, j: int):
        env = self.env
        yield env.timeout(self.hb_phase[j])
        for k in range(self.n_slots):
            now = env.now
            if self.gateway_up[j] and not self._cut(now) and not self._hb_lost[j, k]:
                self.hb_sent[j, k] = now
                self.hb_arrival[j, k] = now + self._hb_delay[j, k]
            yield env.timeout(self.period)

    def _failures(self, j: int):
        env = self.env
        while True:
            yield env.timeout(self._fail_rng.exponential(self.cfg.gateway_mtbf_s))
            start = env.now
            self.gateway_up[j] = False
            yield env.timeout(self._fail_rng.exponential(self.cfg.gateway_mttr_s))
            self.gateway_up[j] = True
            self.down_intervals.append((j, start, env.now))

    def _scripted_failure(self, j: int, start: float, end: float):
        yield self.env.timeout(start)
        self.gateway_up[j] = False
        yield self.env.timeout(end - start)
        self.gateway_up[j] = True
        self.down_intervals.append((j, start, end))

    # -- interface to the cyber space -------------------------------------
    def collect(self, k: int) -> "Delivery":
        """What the cyber space has received of slot ``k`` by now (see :class:`Delivery`)."""
        now = self.env.now
        got = self.arrival[:, k] <= now
        # every message received so far that was sent from slot k - 1 on: records carry their
        # send time and the gateway they came through
        lo = max(0, k - 1)
        hi = min(self.n_slots, k + 2 + int(math.ceil(self.cfg.slot_grace_s / self.period)))
        ok = self.arrival[:, lo:hi] <= now
        hb_ok = self.hb_arrival[:, lo:hi] <= now
        gw = np.broadcast_to(np.arange(len(self.gateway_ids))[:, None], hb_ok.shape)
        return Delivery(
            received=got,
            values=np.where(got, self.values[:, k], np.nan),
            sent_at=np.where(got, self.sent_at[:, k], np.nan),
            via=np.where(got, self.via[:, k], -1),
            heartbeats=self.hb_arrival[:, k] <= now,
            heard_via=np.concatenate([self.via[:, lo:hi][ok], gw[hb_ok]]),
            heard_at=np.concatenate([self.sent_at[:, lo:hi][ok], self.hb_sent[:, lo:hi][hb_ok]]),
        )

    def rehome(self, sensor: int, gateway: int) -> None:
        """Control flow of the external loop: route ``sensor``'s readings through ``gateway`` from now on."""
        old = int(self.assignment[sensor])
        self.assignment[sensor] = gateway
        self.rehomes.append((float(self.env.now), int(sensor), old, int(gateway)))


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationResult:
    """Everything one run produced: ground truth, both twins' holdings, scores and loop counters."""

    scenario: int
    seed: int
    size: int
    n_gateways: int
    period_s: float
    outage: tuple[float, float] | None
    sensor_ids: tuple[str, ...]
    gateway_ids: tuple[str, ...]
    truth: np.ndarray  #: bool (sensor, slot), the sensor sent a reading
    observed: np.ndarray  #: bool (sensor, slot), the reading reached the twin in time (both twins)
    generated: np.ndarray  #: bool (sensor, slot), GenTwin generated a (flagged) record
    reason: np.ndarray  #: int8 (sensor, slot), index into REASONS
    sent_at: np.ndarray  #: float (sensor, slot), send time (NaN when inactive)
    generated_value_mae: float  #: mean absolute error of the carried readings over correct generated records
    gentwin: CompletenessScore
    traditional: CompletenessScore
    external: object  #: gentwin.loops.ExternalCounters
    internal: object  #: gentwin.loops.InternalCounters
    events: tuple = field(repr=False, default=())  #: gentwin.loops.LoopEvent log
    gateway_down: tuple[tuple[str, float, float], ...] = ()
    rehomes: tuple[tuple[float, str, str, str], ...] = ()  #: (time, sensor, from gateway, to gateway)

    @property
    def n_slots(self) -> int:
        return int(self.truth.shape[1])

    def timeline(self):
        """Per slot: records in the ground truth and what each twin holds (a long DataFrame)."""
        import pandas as pd

        t = np.arange(self.n_slots) * self.period_s
        truth = self.truth.sum(axis=0)
        obs = self.observed.sum(axis=0)
        good = (self.generated & self.truth).sum(axis=0)
        bad = (self.generated & ~self.truth).sum(axis=0)
        rows = []
        for what, vals in (
            ("ground truth", truth),
            ("traditional twin", obs),
            ("GenTwin", obs + good),
            ("GenTwin: wrong generated", bad),
        ):
            rows.append(pd.DataFrame({"slot": np.arange(self.n_slots), "time_s": t, "series": what,
                                      "records": vals.astype(int)}))
        return pd.concat(rows, ignore_index=True)

    def loss_table(self):
        """How many readings ended how (delivered, cut, gateway down, ...)."""
        import pandas as pd

        counts = np.bincount(self.reason.ravel(), minlength=len(REASONS))
        return pd.DataFrame({"fate": REASONS, "cells": counts.astype(int)})

    def rows(self) -> list[dict]:
        """One row per twin for a results table (with how many readings were lost to what)."""
        out = []
        fates = np.bincount(self.reason.ravel(), minlength=len(REASONS))
        lost = {f"lost_{REASONS[k]}": int(fates[k]) for k in (CUT, GATEWAY_DOWN, PACKET_LOSS, LATE)}
        for twin, sc in (("GenTwin", self.gentwin), ("traditional", self.traditional)):
            out.append(dict(
                size=self.size, scenario=self.scenario, seed=self.seed, twin=twin,
                completeness_pct=100.0 * sc.completeness, observed_pct=100.0 * sc.observed_share,
                generated=sc.n_generated, generated_correct=sc.n_generated_correct,
                generated_precision=sc.generated_precision, false_record_pct=100.0 * sc.false_record_rate,
                truth_records=sc.n_truth, **lost,
            ))
        return out


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhysicalError(f"seed = {seed!r}: must be an integer >= 0")
    return int(seed)


def simulate(
    physical: PhysicalConfig,
    topology_cfg: TopologyConfig,
    *,
    scenario: int,
    seed: int,
    pooling: PoolingConfig | None = None,
    dataset: DataSet | None = None,
    presence: np.ndarray | None = None,
    gateway_failures: Sequence[tuple[str, float, float]] | None = None,
    store=None,
    keep_events: bool = True,
) -> SimulationResult:
    """Run one scenario on one topology and score both twins.

    Parameters
    ----------
    physical : PhysicalConfig
        Rates, loss, delay, outage, failures, loop settings.
    topology_cfg : TopologyConfig
        The network (use :func:`topology_config_for` for a Table IV size).
    scenario : {1, 2}
        1: no interruption; 2: the flow is cut for ``outage_s`` from ``outage_start_s``.
    seed : int
        Seed of everything random in the run (phases, presence, loss, delays,
        failures); the topology comes from ``topology_cfg.data_seed``.
    pooling : PoolingConfig, optional
        eq. (4) band and eq. (6) reading for the internal loop.
    dataset : DataSet, optional
        The history the run continues (default ``generate_dataset(topology_cfg)``):
        the twin's first version is pooled from it and each sensor starts with
        its last presence in it.
    presence
        Optional boolean array of shape (n_sensors, n_slots): ground-truth
        presence to use instead of the Markov chain (for hand-worked tests).
    gateway_failures
        Optional list of (gateway id, start, end): scripted failures instead
        of random ones.
    store
        Optional; where the internal loop commits twin versions.  A :mod:`gentwin.graph`
        store (networkx or Neo4j; it must hold no version yet) receives the
        knowledge graph through :class:`gentwin.loops.GraphStore`; default: a
        new in-memory :class:`gentwin.graph.NetworkxStore`.
    keep_events : bool
        Keep the per-slot log of loop crossings (counters are kept anyway).

    Returns
    -------
    SimulationResult
    """
    import simpy

    from . import loops

    if not isinstance(physical, PhysicalConfig):
        raise PhysicalError(f"physical = {type(physical).__name__}: must be a PhysicalConfig")
    if not isinstance(topology_cfg, TopologyConfig):
        raise PhysicalError(f"topology_cfg = {type(topology_cfg).__name__}: must be a TopologyConfig")
    outage_window(physical, scenario)  # validates the scenario
    seed = _check_seed(seed)
    pooling = pooling or PoolingConfig()
    ds = dataset if dataset is not None else generate_dataset(topology_cfg)
    topo = ds.topology
    sensors = topo.sensors()
    if not sensors:
        raise PhysicalError("topology: has no sensor (n_sensors must be >= 1)")
    period = physical.report_period_s
    n_slots = int(math.floor(physical.duration_s / period + 1e-9))
    if presence is None:
        hist = last_presence(ds)
        init = np.array([hist.get(n.id, True) for n in sensors], dtype=bool)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        truth = presence_chain(init, n_slots, topology_cfg.p_inactive, physical.presence_dwell_s / period, rng)
    else:
        truth = np.asarray(presence)
        if truth.dtype != bool or truth.shape != (len(sensors), n_slots):
            raise PhysicalError(
                f"presence: must be a boolean array of shape (n_sensors, n_slots) = ({len(sensors)}, {n_slots}), "
                f"got {truth.dtype} {truth.shape}"
            )

    env = simpy.Environment()
    space = PhysicalSpace(env, topo, physical, scenario=scenario, presence=truth, seed=seed,
                          gateway_failures=gateway_failures)
    twin = loops.CyberTwin(topo, ds, period_s=period)
    from . import graph

    if store is None or isinstance(store, graph.TwinStore):
        store = loops.GraphStore(topo, store, version_alpha=physical.version_alpha)
    internal = loops.InternalLoop(
        band=pooling.band, pool_weight=pooling.pool_weight,
        alpha_reading=getattr(pooling, "alpha_reading", "nodes"),
        relation_count=getattr(pooling, "relation_count", "unique"),
        version_alpha=physical.version_alpha, store=store, keep_events=keep_events,
    )
    internal.start(0.0, twin)
    external = loops.ExternalLoop(twin, detect_slots=physical.detect_slots, keep_events=keep_events)
    generated = np.zeros_like(truth)
    gen_values = np.full(truth.shape, np.nan)
    observed = np.zeros_like(truth)

    def apply_control(cmd: "loops.ControlCommand"):
        yield env.timeout(physical.control_delay_s)
        for s in cmd.sensors:
            space.rehome(s, cmd.to_gateway)
        external.acknowledge(cmd, env.now)

    def cyber_clock():
        for k in range(n_slots):
            close = (k + 1) * period + physical.slot_grace_s
            if close > env.now:
                yield env.timeout(close - env.now)
            delivery = space.collect(k)
            observed[:, k] = delivery.received
            view = twin.close_slot(k, env.now, delivery)
            generated[:, k] = view.generated
            gen_values[:, k] = view.generated_values
            for cmd in external.step(k, env.now, view):
                env.process(apply_control(cmd))
            internal.step(env.now, twin, slot=k)

    env.process(cyber_clock())
    end = n_slots * period + physical.slot_grace_s
    env.run(until=end + physical.control_delay_s + 1e-9)

    # readings that arrived after their slot closed are late (lost to the twin)
    late = (space.reason == DELIVERED) & ~observed
    space.reason[late] = LATE
    good = generated & truth
    mae = float(np.mean(np.abs(gen_values[good] - space.values[good]))) if good.any() else math.nan
    down = [(space.gateway_ids[j], a, b) for j, a, b in space.down_intervals]
    down += [(space.gateway_ids[int(j)], math.nan, end) for j in np.flatnonzero(~space.gateway_up)]
    return SimulationResult(
        scenario=scenario,
        seed=seed,
        size=len(sensors),
        n_gateways=len(space.gateway_ids),
        period_s=period,
        outage=space.outage,
        sensor_ids=space.sensor_ids,
        gateway_ids=space.gateway_ids,
        truth=truth,
        observed=observed,
        generated=generated,
        reason=space.reason,
        sent_at=space.sent_at,
        generated_value_mae=mae,
        gentwin=completeness(truth, observed, generated),
        traditional=completeness(truth, observed),
        external=external.counters,
        internal=internal.counters,
        events=tuple(external.events) + tuple(internal.events),
        gateway_down=tuple(down),
        rehomes=tuple((t, space.sensor_ids[s], space.gateway_ids[a], space.gateway_ids[b])
                      for t, s, a, b in space.rehomes),
    )


def table4_runs(settings: Settings, *, progress: bool = False, keep: Iterable[tuple[int, int, int]] = ()):
    """All Table IV runs: every size x scenario x seed of ``settings.physical``.

    Returns ``(frame, kept)``: a DataFrame with one row per run and twin
    (see :meth:`SimulationResult.rows`) and a dict of the full
    :class:`SimulationResult` for the (size, scenario, seed) triples in
    ``keep`` (for time-line plots).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    phys = settings.physical
    keep = set(keep)
    seeds = range(phys.sim_seed, phys.sim_seed + phys.physical_seeds)
    jobs = [(size, sc, seed) for size in phys.sizes for sc in SCENARIOS for seed in seeds]
    rows: list[dict] = []
    kept: dict[tuple[int, int, int], SimulationResult] = {}
    datasets: dict[int, DataSet] = {}
    for size, sc, seed in tqdm(jobs, desc="Table IV runs", disable=not progress, leave=False):
        tcfg = topology_config_for(size, settings.topology, phys)
        if size not in datasets:
            datasets[size] = generate_dataset(tcfg)
        res = simulate(phys, tcfg, scenario=sc, seed=seed, pooling=settings.pooling, dataset=datasets[size],
                       keep_events=(size, sc, seed) in keep)
        rows.extend(res.rows())
        if (size, sc, seed) in keep:
            kept[(size, sc, seed)] = res
    return pd.DataFrame(rows), kept


#: The paper's names of its three sizes (Table IV).
PAPER_SIZES: dict[int, str] = {30: "small", 100: "medium", 250: "large"}


def size_labels(sizes: Sequence[int]) -> dict[int, str]:
    """Table IV's column names for the sizes of a run.

    Three sizes are named small / medium / large in increasing order (as the
    paper's 30 / 100 / 250); otherwise only the paper's own sizes get a name.

    >>> size_labels((30, 100, 250))
    {30: 'small', 100: 'medium', 250: 'large'}
    >>> size_labels((5, 10, 20))
    {5: 'small', 10: 'medium', 20: 'large'}
    >>> size_labels((250, 7))
    {250: 'large'}
    """
    ordered = sorted(set(int(x) for x in sizes))
    if len(ordered) == 3:
        return dict(zip(ordered, ("small", "medium", "large")))
    return {x: PAPER_SIZES[x] for x in ordered if x in PAPER_SIZES}


def summarise_table4(frame, confidence: float = 0.95):
    """Mean and confidence interval across seeds of each Table IV quantity.

    ``frame`` is the first value of :func:`table4_runs`.  Returns one row per
    (scenario, size, twin) with ``completeness``, ``completeness_low``,
    ``completeness_high`` (in %), the mean share received (%), the mean number
    of generated records per run, their mean precision (NaN for a twin that
    generated nothing), the mean false-record rate (%) and the number of seeds
    ``n``.
    """
    from .stats import summarise

    keys = ["scenario", "size", "twin"]
    out = summarise(frame, keys, "completeness_pct", confidence).rename(
        columns={"mean": "completeness", "low": "completeness_low", "high": "completeness_high"})
    extra = frame.groupby(keys, sort=True).agg(
        observed=("observed_pct", "mean"),
        generated=("generated", "mean"),
        generated_precision=("generated_precision", "mean"),
        false_record_pct=("false_record_pct", "mean"),
    ).reset_index()
    return out.merge(extra, on=keys)

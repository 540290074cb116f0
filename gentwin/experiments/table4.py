"""Table IV's runner: the SimPy physical space wired to the cyber twin's closed loops, run over sizes, scenarios and seeds.

:func:`simulate` runs one scenario: :class:`gentwin.physical.PhysicalSpace`
sends the readings, :class:`gentwin.loops.CyberTwin` and both loops of Fig. 1
take them in (the internal loop writes the twin versions into a
:mod:`gentwin.graph` store), and :func:`gentwin.metrics.completeness` scores
both twins.  :func:`table4_runs` repeats it for every size, scenario and seed
of the settings; :class:`Table4` holds everything the chapter shows (the
summary, the comparison with the paper, the sensitivity to presence dwell and
the closed-loop demonstration) and :func:`run_table4` builds it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..checks import check_int
from ..config import PhysicalConfig, PoolingConfig, Settings, TopologyConfig
from ..graph import TwinStore
from ..loops import (
    ControlCommand,
    CyberTwin,
    ExternalCounters,
    ExternalLoop,
    GraphStore,
    InternalCounters,
    InternalLoop,
    loop_table,
)
from ..metrics import CompletenessScore, completeness
from ..physical import (
    CUT,
    DELIVERED,
    GATEWAY_DOWN,
    LATE,
    PACKET_LOSS,
    REASONS,
    TABLE4_SCENARIOS,
    PhysicalError,
    PhysicalSpace,
    last_presence,
    outage_window,
    presence_chain,
    topology_config_for,
)
from ..progress import progress as _progress
from ..topology import DataSet, generate_dataset

__all__ = [
    "SimulationResult",
    "simulate",
    "table4_runs",
    "PAPER_SIZES",
    "size_labels",
    "summarise_table4",
    "SHOWN_PARAMETERS",
    "topology_table",
    "dwell_sensitivity",
    "Table4",
    "run_table4",
]

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
    external: ExternalCounters
    internal: InternalCounters
    events: tuple = field(repr=False, default=())  #: LoopEvent log
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

    if not isinstance(physical, PhysicalConfig):
        raise PhysicalError(f"physical = {type(physical).__name__}: must be a PhysicalConfig")
    if not isinstance(topology_cfg, TopologyConfig):
        raise PhysicalError(f"topology_cfg = {type(topology_cfg).__name__}: must be a TopologyConfig")
    outage_window(physical, scenario)  # validates the scenario
    seed = check_int("seed", seed, low=0, error=PhysicalError)
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
    twin = CyberTwin(topo, ds, period_s=period)
    if store is None or isinstance(store, TwinStore):
        store = GraphStore(topo, store, version_alpha=physical.version_alpha)
    internal = InternalLoop(
        band=pooling.band, pool_weight=pooling.pool_weight,
        alpha_reading=getattr(pooling, "alpha_reading", "nodes"),
        relation_count=getattr(pooling, "relation_count", "unique"),
        version_alpha=physical.version_alpha, store=store, keep_events=keep_events,
    )
    internal.start(0.0, twin)
    external = ExternalLoop(twin, detect_slots=physical.detect_slots, keep_events=keep_events)
    generated = np.zeros_like(truth)
    gen_values = np.full(truth.shape, np.nan)
    observed = np.zeros_like(truth)

    def apply_control(cmd: ControlCommand):
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

    phys = settings.physical
    keep = set(keep)
    seeds = range(phys.sim_seed, phys.sim_seed + phys.physical_seeds)
    jobs = [(size, sc, seed) for size in phys.sizes for sc in TABLE4_SCENARIOS for seed in seeds]
    rows: list[dict] = []
    kept: dict[tuple[int, int, int], SimulationResult] = {}
    datasets: dict[int, DataSet] = {}
    for size, sc, seed in _progress(jobs, desc="Table IV runs", disable=not progress, leave=False):
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
    from ..stats import summarise

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


# ---------------------------------------------------------------------------
# The chapter: Table IV, its comparison with the paper, the sensitivity run and the loop demonstration
# ---------------------------------------------------------------------------

#: The settings the Table IV chapter lists beside those its parameters cell names.
SHOWN_PARAMETERS: tuple[str, ...] = (*(f.name for f in dataclasses.fields(PhysicalConfig)), "p_inactive", "n_services")


def topology_table(settings: Settings):
    """The network of each Table IV size: sensors, gateways and fog links (a DataFrame)."""
    import pandas as pd

    phys = settings.physical
    return pd.DataFrame([
        {"size": label, "sensors": tc.n_sensors, "gateways": tc.n_gateways, "fog links": tc.n_gateway_links}
        for size, label in size_labels(phys.sizes).items()
        for tc in [topology_config_for(size, settings.topology, phys)]
    ])


def dwell_sensitivity(settings: Settings, size: int, dwells: Iterable[float]):
    """Scenario 2 on the network of ``size`` sensors for each mean inactive spell in ``dwells`` (s), every seed.

    Returns one row per dwell, seed and twin (:meth:`SimulationResult.rows`
    plus ``presence_dwell_s``).
    """
    import pandas as pd

    phys = settings.physical
    tcfg = topology_config_for(size, settings.topology, phys)
    rows = []
    for dwell in sorted(set(dwells)):
        p = dataclasses.replace(phys, presence_dwell_s=dwell)
        for seed in range(phys.sim_seed, phys.sim_seed + phys.physical_seeds):
            r = simulate(p, tcfg, scenario=2, seed=seed, pooling=settings.pooling, keep_events=False)
            rows += [dict(row, presence_dwell_s=dwell) for row in r.rows()]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Table4:
    """Everything the Table IV chapter shows: the runs, their summary and the two extra experiments.

    ``frame`` and ``summary`` are :func:`table4_runs` and
    :func:`summarise_table4`; ``demo`` is the kept Scenario 2 run of the
    largest size and first seed; ``sensitivity`` is :func:`dwell_sensitivity`
    on the largest size (memoryless presence, the default dwell, three times
    it); ``with_failures`` reruns ``demo`` with gateways failing
    (``loop_demo_mtbf_s``) so the external loop has work to do.
    """

    settings: Settings
    frame: object
    summary: object
    demo: SimulationResult
    sensitivity: object
    with_failures: SimulationResult

    @property
    def labels(self) -> dict[int, str]:
        return size_labels(self.settings.physical.sizes)

    def _gentwin_row(self, scenario: int, size: int):
        s = self.summary
        return s[(s.scenario == scenario) & (s["size"] == size) & (s.twin == "GenTwin")].iloc[0]

    def caption(self) -> str:
        """What the completeness table shows."""
        return (f"Data completeness (%), mean [{self.settings.stats.confidence:.0%} CI] over "
                f"{self.settings.physical.physical_seeds} seeds; profile {self.settings.profile!r}")

    def completeness_table(self):
        """Table IV: completeness (%) per scenario and twin (rows) and size (columns), the paper's values beside."""
        import pandas as pd

        from ..reference import by_key

        def cell(row) -> str:
            if row.n < 2:
                return f"{row.completeness:.2f}"
            return f"{row.completeness:.2f} [{row.completeness_low:.2f}, {row.completeness_high:.2f}]"

        labels = self.labels
        summary = self.summary
        table = summary.assign(value=summary.apply(cell, axis=1), size=summary["size"].map(
            lambda s: f"{labels.get(s, 'size')} ({s})"))
        wide = table.pivot_table(index=["scenario", "twin"], columns="size", values="value", aggfunc="first",
                                 sort=False)
        paper_rows = []
        for sc in TABLE4_SCENARIOS:
            row = {}
            for size, label in labels.items():
                ref = by_key(f"table4_s{sc}_{label}")
                row[f"{label} ({size})"] = f"{ref.paper_text} (paper, {ref.quantity.split('(')[-1].rstrip(')')})"
            paper_rows.append(pd.Series(row, name=(sc, "paper (reference)")))
        return pd.concat([wide, pd.DataFrame(paper_rows)]).sort_index(level=0, sort_remaining=False)

    def glue_values(self) -> dict[str, float | str]:
        """The values the chapter publishes for the comparison page: GenTwin's completeness, CI and a note per cell.

        The note says whether the paper's value lies inside our interval (the
        comparison page's own verdict, :func:`gentwin.audit.comparison_status`,
        applies its stated margins on top).
        """
        from ..reference import by_key

        phys = self.settings.physical
        out: dict[str, float | str] = {}
        for sc in TABLE4_SCENARIOS:
            for size, label in self.labels.items():
                r = self._gentwin_row(sc, size)
                key = f"table4_s{sc}_{label}"
                out[key] = float(r.completeness)
                out[key + "_low"] = float(r.completeness_low)
                out[key + "_high"] = float(r.completeness_high)
                ref = by_key(key)
                if self.settings.profile != "paper":
                    note = f"quick profile: {size} sensors, {phys.duration_s:g} s runs"
                elif r.completeness_low <= ref.paper <= r.completeness_high:
                    note = "the paper's value lies inside our interval"
                else:
                    note = (f"ours is {r.completeness - ref.paper:+.2f} points; the paper reports neither its loss "
                            f"rate nor how long sensors stay inactive, ours come from packet_loss = "
                            f"{phys.packet_loss:g} and presence_dwell_s = {phys.presence_dwell_s:g} s (a choice, "
                            "see the sensitivity table)")
                out[key + "_note"] = note
        return out

    def detail_table(self):
        """Per scenario, size and twin: completeness, share received, generated records and their precision."""
        return self.summary[["scenario", "size", "twin", "completeness", "observed", "generated",
                             "generated_precision", "false_record_pct", "n"]].rename(columns={
            "completeness": "completeness %", "observed": "received %", "generated": "generated records per run",
            "generated_precision": "precision of generated", "false_record_pct": "false records %",
            "n": "seeds"}).round(3)

    def findings(self) -> str:
        """Two sentences: GenTwin's gain in Scenario 2 and what Scenario 1 lost in transit."""
        summary, frame = self.summary, self.frame
        s2 = summary[summary.scenario == 2].set_index(["size", "twin"])
        gain = {size: s2.loc[(size, "GenTwin"), "completeness"] - s2.loc[(size, "traditional"), "completeness"]
                for size in self.labels}
        prec = summary[(summary.scenario == 2) & (summary.twin == "GenTwin")]["generated_precision"].mean()
        s1 = frame[(frame.scenario == 1) & (frame.twin == "GenTwin")]
        lost = {fate: int(s1[f"lost_{fate}"].sum()) for fate in ("packet_loss", "gateway_down", "late", "cut")}
        return (f"Scenario 2: GenTwin holds {min(gain.values()):.2f}-{max(gain.values()):.2f} percentage points more "
                f"of the ground truth than the traditional twin; {prec:.1%} of its generated records are right on "
                f"average.\nScenario 1: GenTwin completeness {s1.completeness_pct.min():.2f}-"
                f"{s1.completeness_pct.max():.2f} % per run; over all its runs {sum(lost.values())} readings were "
                "lost in transit" + "".join(f"; {v} to {k.replace('_', ' ')}" for k, v in lost.items() if v) + ".")

    def sensitivity_table(self):
        """Mean completeness, precision and false records of each twin per presence dwell (Scenario 2)."""
        out = self.sensitivity.groupby(["presence_dwell_s", "twin"]).agg(
            completeness=("completeness_pct", "mean"), precision=("generated_precision", "mean"),
            false_records=("false_record_pct", "mean")).reset_index()
        return out.rename(columns={"presence_dwell_s": "presence_dwell_s (s)", "completeness": "completeness %",
                                   "precision": "precision of generated",
                                   "false_records": "false records %"}).round(3)

    def loop_table(self):
        """Crossings of both closed loops in the demonstration run, without and with gateway failures."""
        out = loop_table(self.demo.external, self.demo.internal).rename(columns={"count": "Table IV run"})
        mtbf = self.settings.physical.loop_demo_mtbf_s
        out[f"with gateway failures (MTBF {mtbf:g} s)"] = loop_table(
            self.with_failures.external, self.with_failures.internal)["count"]
        return out

    def run_table(self):
        """Failures, re-homed sensors, both twins' completeness and twin versions of the two demonstration runs."""
        import pandas as pd

        return pd.DataFrame([
            {"run": name, "gateway failures": len(r.gateway_down), "sensors re-homed": r.external.rehomed_sensors,
             "GenTwin completeness %": 100 * r.gentwin.completeness,
             "traditional completeness %": 100 * r.traditional.completeness,
             "precision of generated": r.gentwin.generated_precision,
             "twin versions": r.internal.versions_committed}
            for name, r in (("Table IV run", self.demo), ("with gateway failures", self.with_failures))
        ]).round(3)


def run_table4(settings: Settings, *, progress: bool = False) -> Table4:
    """Table IV's experiment: every run, the presence-dwell sensitivity and the closed-loop demonstration."""
    phys = settings.physical
    largest = max(phys.sizes)
    demo_key = (largest, 2, phys.sim_seed)
    frame, kept = table4_runs(settings, progress=progress, keep=[demo_key])
    sensitivity = dwell_sensitivity(
        settings, largest, (phys.report_period_s, phys.presence_dwell_s, 3 * phys.presence_dwell_s))
    with_failures = simulate(dataclasses.replace(phys, gateway_mtbf_s=phys.loop_demo_mtbf_s),
                             topology_config_for(largest, settings.topology, phys), scenario=2, seed=phys.sim_seed,
                             pooling=settings.pooling)
    return Table4(settings, frame, summarise_table4(frame, settings.stats.confidence), kept[demo_key], sensitivity,
                  with_failures)

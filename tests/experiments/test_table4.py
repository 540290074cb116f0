"""Tests of gentwin.experiments.table4: one simulated run with both twins and both loops, and the Table IV runner."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gentwin.config import PhysicalConfig, TopologyConfig, resolve
from gentwin.experiments.table4 import (
    Table4,
    run_table4,
    simulate,
    size_labels,
    summarise_table4,
    table4_runs,
)
from gentwin.graph import NetworkxStore
from gentwin.physical import CUT, DELIVERED, GATEWAY_DOWN, INACTIVE, PhysicalError, topology_config_for
from gentwin.reference import by_key
from gentwin.topology import Relation

# a tiny network: one service, one gateway, three sensors, all present in the history log
# (three-way split so that every split of the history log gets a node)
TINY_TOPO = TopologyConfig(n_services=1, n_gateways=1, n_sensors=3, n_gateway_links=0, n_instances=6, p_inactive=0.0,
                           split=(0.34, 0.33, 0.33))


def tiny_physical(**kw) -> PhysicalConfig:
    base = dict(report_period_s=2.0, duration_s=12.0, outage_start_s=6.0, outage_s=4.0, packet_loss=0.0,
                delay_mean_s=0.0, slot_grace_s=2.0)
    base.update(kw)
    return PhysicalConfig(**base)


# ---------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------


def test_tiny_scenario_hand_checked():
    """3 sensors, 12 s, 2 s slots -> 6 slots; the cut [6, 10) covers slots 3 and 4; no loss, no delay.

    presence   slot: 0 1 2 3 4 5
      sensor A       1 1 1 1 1 1   6 records
      sensor B       1 1 1 1 0 1   5 records (falls asleep during the cut)
      sensor C       1 0 0 1 1 1   4 records (asleep just before the cut)
    |T| = 15.  Observed = the records outside slots 3-4: A 4 + B 4 + C 2 = 10.
    Traditional twin: 10 / 15.
    GenTwin: C's missing slot 1 had its gateway heard before and after -> C inactive (p_C = 0);
    in the cut it generates for sensors whose last known presence is 1: A3, A4, B3 (right), B4 (wrong);
    not C (last known 0), so C3, C4 stay missing.  Completeness (10 + 3) / 15, precision 3 / 4,
    false-record rate 1 / 15.
    """
    presence = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]], bool)
    r = simulate(tiny_physical(), TINY_TOPO, scenario=2, seed=0, presence=presence)
    assert r.truth.sum() == 15
    assert r.observed.sum() == 10
    assert r.traditional.completeness == pytest.approx(10 / 15)
    expected_generated = np.zeros((3, 6), bool)
    expected_generated[0, [3, 4]] = True
    expected_generated[1, [3, 4]] = True
    assert (r.generated == expected_generated).all()
    assert r.gentwin.n_generated_correct == 3
    assert r.gentwin.completeness == pytest.approx(13 / 15)
    assert r.gentwin.generated_precision == pytest.approx(3 / 4)
    assert r.gentwin.false_record_rate == pytest.approx(1 / 15)
    # internal loop: version 1 from the history, 2 when C is found inactive (slot 1), 3 when C is back (slot 5)
    assert r.internal.versions_committed == 3
    assert r.internal.pooling_runs == 1 + 6
    assert r.internal.versions_skipped == 6 - 2
    # generated records are flagged and never counted as observed
    assert not (r.generated & r.observed).any()
    assert r.gentwin.n_observed == r.traditional.n_observed == 10


def test_scenario_1_tiny_has_nothing_to_fill():
    presence = np.ones((3, 6), bool)
    r = simulate(tiny_physical(), TINY_TOPO, scenario=1, seed=0, presence=presence)
    assert r.traditional.completeness == 1.0 and r.gentwin.completeness == 1.0
    assert r.gentwin.n_generated == 0
    # nothing changed in the network: the history's version is the only one
    assert r.internal.versions_committed == 1


def test_outage_covers_exactly_its_interval():
    topo = dataclasses.replace(TINY_TOPO, n_sensors=60, n_gateways=3, n_instances=80, split=(0.7, 0.15, 0.15))
    phys = tiny_physical(duration_s=20.0, outage_start_s=5.3, outage_s=4.1, delay_mean_s=0.01, slot_grace_s=1.0)
    r = simulate(phys, topo, scenario=2, seed=3, presence=np.ones((60, 10), bool))
    start, end = r.outage
    assert (start, end) == (5.3, 5.3 + 4.1)
    sent = r.sent_at
    inside = (sent >= start) & (sent < end)
    assert ((r.reason == CUT) == inside).all()
    assert not r.observed[inside].any()
    assert r.observed[~inside].all()  # no loss: everything else arrives
    # readings sent just before and just after the cut exist and arrive
    just_before = (sent >= start - 0.3) & (sent < start)
    just_after = (sent >= end) & (sent < end + 0.3)
    assert just_before.any() and just_after.any()
    assert r.observed[just_before].all() and r.observed[just_after].all()


def test_scenario_1_has_no_cut_and_same_ground_truth():
    s = resolve("quick")
    tc = topology_config_for(10, s.topology, s.physical)
    r1 = simulate(s.physical, tc, scenario=1, seed=4)
    r2 = simulate(s.physical, tc, scenario=2, seed=4)
    assert not (r1.reason == CUT).any() and (r2.reason == CUT).any()
    assert (r1.truth == r2.truth).all()  # paired comparison: the same network, only the cut differs


def test_same_seed_same_run_other_seed_other_run():
    s = resolve("quick")
    tc = topology_config_for(10, s.topology, dataclasses.replace(s.physical))
    phys = dataclasses.replace(s.physical, gateway_mtbf_s=30.0)
    a = simulate(phys, tc, scenario=2, seed=7)
    b = simulate(phys, tc, scenario=2, seed=7)
    c = simulate(phys, tc, scenario=2, seed=8)
    for name in ("truth", "observed", "generated", "reason"):
        assert (getattr(a, name) == getattr(b, name)).all()
    assert np.array_equal(a.sent_at, b.sent_at, equal_nan=True)
    assert a.gentwin == b.gentwin and a.external == b.external and a.internal == b.internal
    assert a.gateway_down == b.gateway_down
    assert not np.array_equal(a.sent_at, c.sent_at, equal_nan=True)


def test_inactive_sensors_send_nothing():
    s = resolve("quick")
    tc = topology_config_for(10, s.topology, s.physical)
    r = simulate(s.physical, tc, scenario=1, seed=1)
    assert ((r.reason == INACTIVE) == ~r.truth).all()
    assert np.isnan(r.sent_at[~r.truth]).all() and not np.isnan(r.sent_at[r.truth]).any()


def test_gateway_failure_rehomed_by_external_loop():
    topo = TopologyConfig(n_services=1, n_gateways=2, n_sensors=6, n_gateway_links=0, n_instances=8, p_inactive=0.0)
    phys = tiny_physical(duration_s=20.0, outage_start_s=0.0, outage_s=0.0, slot_grace_s=1.0, detect_slots=2,
                         control_delay_s=1.0)
    store = NetworkxStore(twin="rehoming")
    r = simulate(phys, topo, scenario=1, seed=0, presence=np.ones((6, 10), bool),
                 gateway_failures=[("AQ-GW01", 4.5, 100.0)], store=store)
    moved = [i for i, sid in enumerate(r.sensor_ids) if any(m[1] == sid for m in r.rehomes)]
    assert moved, "the failed gateway's sensors were re-homed"
    e = r.external
    assert (e.insights, e.control_commands, e.control_acks, e.unresolved_failures) == (1, 1, 1, 0)
    assert e.rehomed_sensors == len(moved) == len(r.rehomes)
    assert {(m[2], m[3]) for m in r.rehomes} == {("AQ-GW01", "AQ-GW02")}  # a live gateway of the same service
    t_ack = r.rehomes[0][0]
    # readings were lost to the gateway only between the failure and the re-homing
    down = r.reason == GATEWAY_DOWN
    assert down.any()
    assert (r.sent_at[down] >= 4.5).all() and (r.sent_at[down] < t_ack).all()
    # after the re-homing every reading arrives again
    assert (r.reason[r.sent_at >= t_ack] == DELIVERED).all()
    # GenTwin filled the gateway's silence; the traditional twin could not
    assert r.gentwin.completeness > r.traditional.completeness
    assert r.gentwin.generated_precision == 1.0  # everyone was present, so every fill is right
    # the internal loop wrote every twin version into the knowledge-graph store, re-homing included
    assert store.latest().number == r.internal.versions_committed >= 2
    g = store.request()
    for sid in (r.sensor_ids[i] for i in moved):
        assert Relation(sid, "CONNECTED_TO", "AQ-GW02") in g.relations
        assert Relation(sid, "CONNECTED_TO", "AQ-GW01") not in g.relations
        assert g.nodes[sid].get("gateway") == "AQ-GW02"
    assert g.nodes["AQ-GW01"].get("n_sensors") == 0 and g.nodes["AQ-GW01"].get("active") is False
    assert g.nodes["AQ-GW02"].get("n_sensors") == 6


def test_no_failover_without_failures():
    s = resolve("quick")
    tc = topology_config_for(10, s.topology, s.physical)
    r = simulate(s.physical, tc, scenario=2, seed=0)  # gateway_mtbf_s = 0
    assert r.external.insights == 0 and r.external.control_commands == 0 and not r.rehomes
    # one information report per slot, one status per gateway in each
    assert r.external.information_reports == r.n_slots
    assert r.external.gateway_statuses == r.n_slots * r.n_gateways
    assert r.external.readings_collected == int(r.observed.sum())


def test_bad_run_arguments():
    s = resolve("quick")
    tc = topology_config_for(5, s.topology, s.physical)
    with pytest.raises(PhysicalError, match="scenario"):
        simulate(s.physical, tc, scenario=3, seed=0)
    with pytest.raises(PhysicalError, match="seed"):
        simulate(s.physical, tc, scenario=1, seed=-1)
    with pytest.raises(PhysicalError, match="presence"):
        simulate(s.physical, tc, scenario=1, seed=0, presence=np.ones((5, 3), bool))
    with pytest.raises(PhysicalError, match="gateway_failures"):
        simulate(s.physical, tc, scenario=1, seed=0, gateway_failures=[("NO-GW", 1.0, 2.0)])


# ---------------------------------------------------------------------------
# Table IV runs
# ---------------------------------------------------------------------------


def test_table4_runs_cover_every_size_scenario_seed():
    s = resolve("quick")
    frame, kept = table4_runs(s, keep=[(10, 2, 0)])
    n = len(s.physical.sizes) * 2 * s.physical.physical_seeds * 2  # x 2 twins
    assert len(frame) == n
    assert set(frame["twin"]) == {"GenTwin", "traditional"}
    assert list(kept) == [(10, 2, 0)]
    # the traditional twin never generates; GenTwin never holds fewer records than it observed
    trad = frame[frame.twin == "traditional"]
    assert (trad.generated == 0).all()
    both = frame.pivot_table(index=["size", "scenario", "seed"], columns="twin", values="completeness_pct")
    assert (both["GenTwin"] >= both["traditional"] - 1e-12).all()
    tl = kept[(10, 2, 0)].timeline()
    assert set(tl.series) == {"ground truth", "traditional twin", "GenTwin", "GenTwin: wrong generated"}


def test_twin_versions_in_graph_store_write_only_what_changed():
    presence = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]], bool)
    store = NetworkxStore(twin="tiny")
    r = simulate(tiny_physical(), TINY_TOPO, scenario=2, seed=0, presence=presence, store=store)
    versions = store.versions()
    assert [v.number for v in versions] == [1, 2, 3] == list(range(1, r.internal.versions_committed + 1))
    # version 2: sensor C (index 2) found inactive; version 3: C back.  Only C's record changes in
    # either (the pools of A, B and the gateway keep their labels), i.e. 1 record ended + 1 opened.
    assert [v.n_written for v in versions[1:]] == [2, 2]
    c = r.sensor_ids[2]
    assert store.request(version=2).nodes[c].get("active") is False
    assert store.request(version=2).nodes[c].get("pool") == "L"
    assert store.request(version=3).nodes[c].get("active") is True


def test_summarise_table4_means_across_seeds_by_hand():
    import pandas as pd

    frame = pd.DataFrame([
        dict(scenario=2, size=5, twin="GenTwin", seed=s, completeness_pct=c, observed_pct=o, generated=g,
             generated_precision=p, false_record_pct=f)
        for s, c, o, g, p, f in ((0, 90.0, 70.0, 4, 0.5, 1.0), (1, 100.0, 80.0, 6, 1.0, 3.0))
    ])
    row = summarise_table4(frame, 0.95).iloc[0]
    assert (row.completeness, row.observed, row.generated, row.generated_precision, row.false_record_pct, row.n) == (
        95.0, 75.0, 5.0, 0.75, 2.0, 2)
    # two samples 90, 100: s = 7.071, t(0.975, 1) = 12.706 -> half width 63.53
    assert row.completeness_high - 95.0 == pytest.approx(12.7062 * 7.0711 / 2 ** 0.5, rel=1e-3)
    assert row.completeness_low == pytest.approx(95.0 - (row.completeness_high - 95.0))


def _summary_around_the_paper(inside: bool):
    """A paper-profile summary whose GenTwin intervals hold the paper's value (or lie 1-2 points above it)."""
    import pandas as pd

    rows = []
    for sc in (1, 2):
        for size, label in size_labels((30, 100, 250)).items():
            paper = by_key(f"table4_s{sc}_{label}").paper
            lo, hi = (paper - 0.5, paper + 0.5) if inside else (paper + 1.0, paper + 2.0)
            for twin in ("GenTwin", "traditional"):
                rows.append(dict(scenario=sc, size=size, twin=twin, completeness=(lo + hi) / 2, completeness_low=lo,
                                 completeness_high=hi, n=5, observed=90.0, generated=1.0, generated_precision=1.0,
                                 false_record_pct=0.0))
    return pd.DataFrame(rows)


def test_glued_notes_follow_the_paper_value_against_our_interval():
    paper = resolve("paper")
    inside = Table4(paper, None, _summary_around_the_paper(True), None, None, None).glue_values()
    above = Table4(paper, None, _summary_around_the_paper(False), None, None, None).glue_values()
    assert len(inside) == 6 * 4
    key = "table4_s2_large"
    ref = by_key(key).paper
    assert (inside[key + "_low"], inside[key], inside[key + "_high"]) == (ref - 0.5, ref, ref + 0.5)
    assert inside[key + "_note"] == "the paper's value lies inside our interval"
    assert above[key + "_note"].startswith("ours is +1.50 points;")
    quick = Table4(resolve("quick"), None, _summary_around_the_paper(True).assign(
        size=lambda d: d["size"].map({30: 5, 100: 10, 250: 20})), None, None, None).glue_values()
    assert quick["table4_s1_small_note"] == "quick profile: 5 sensors, 40 s runs"


def test_run_table4_quick_tables_agree_with_its_runs():
    s = resolve("quick")
    t = run_table4(s)
    phys = s.physical
    largest = max(phys.sizes)
    assert (t.demo.size, t.demo.scenario, t.demo.seed) == (largest, 2, phys.sim_seed)
    glued = t.glue_values()
    for sc in (1, 2):
        for size, label in size_labels(phys.sizes).items():
            runs = t.frame[(t.frame.scenario == sc) & (t.frame["size"] == size) & (t.frame.twin == "GenTwin")]
            assert glued[f"table4_s{sc}_{label}"] == pytest.approx(runs.completeness_pct.mean())
            assert glued[f"table4_s{sc}_{label}_low"] <= glued[f"table4_s{sc}_{label}"] <= glued[
                f"table4_s{sc}_{label}_high"]
    wide = t.completeness_table()
    assert list(wide.index) == [(1, "GenTwin"), (1, "traditional"), (1, "paper (reference)"),
                                (2, "GenTwin"), (2, "traditional"), (2, "paper (reference)")]
    assert set(t.sensitivity.presence_dwell_s) == {phys.report_period_s, phys.presence_dwell_s,
                                                   3 * phys.presence_dwell_s}
    assert len(t.sensitivity) == 3 * phys.physical_seeds * 2
    loops = t.loop_table()
    assert loops["Table IV run"].tolist()[0] == t.demo.external.readings_collected
    assert t.with_failures.gateway_down and t.with_failures.external.rehomed_sensors > 0
    assert t.run_table()["sensors re-homed"].tolist() == [0, t.with_failures.external.rehomed_sensors]
    assert t.findings().startswith("Scenario 2: GenTwin holds ")

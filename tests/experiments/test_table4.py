"""Tests of gentwin.experiments.table4: one simulated run with both twins and both loops, and the Table IV runner."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gentwin.config import ConfigError, PhysicalConfig, PoolingConfig, TopologyConfig, resolve
from gentwin.experiments.table4 import (
    ARMS,
    Table4,
    input_drivers,
    input_sensitivity,
    run_table4,
    simulate,
    size_labels,
    summarise_sensitivity,
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
    # net completeness: GenTwin's wrong B4 cancels one right record: (10 + 3 - 1) / 15
    assert r.gentwin.net_completeness == pytest.approx(12 / 15)
    # baselines on the same run (everyone present in the history): both fill all 8 missing cells,
    # A3 A4 B3 C3 C4 right, B4 C1 C2 wrong -> completeness 15 / 15, net (10 + 5 - 3) / 15
    for base in (r.carry_forward, r.always_generate):
        assert (base.n_observed, base.n_generated, base.n_generated_correct) == (10, 8, 5)
        assert base.completeness == 1.0
        assert base.net_completeness == pytest.approx(12 / 15)
    assert r.traditional.net_completeness == r.traditional.completeness


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
    n = len(s.physical.sizes) * 2 * s.physical.physical_seeds * len(ARMS)  # x 4 twins
    assert len(frame) == n
    assert set(frame["twin"]) == set(ARMS) == {"GenTwin", "traditional", "carry forward", "always generate"}
    assert list(kept) == [(10, 2, 0)]
    # paired arms: every twin of a run saw the same readings of the same ground truth
    per_run = frame.groupby(["size", "scenario", "seed"])
    assert (per_run["observed_pct"].nunique() == 1).all() and (per_run["truth_records"].nunique() == 1).all()
    # always generate holds every true record by construction; only net completeness can tell it is wrong
    always = frame[frame.twin == "always generate"]
    assert (always.completeness_pct == 100.0).all()
    assert np.allclose(always.net_completeness_pct, 100.0 - always.false_record_pct)
    never_generates = frame[frame.twin == "traditional"]
    assert (never_generates.net_completeness_pct == never_generates.completeness_pct).all()
    carry = frame[frame.twin == "carry forward"].set_index(["size", "scenario", "seed"])
    assert (carry.generated <= always.set_index(["size", "scenario", "seed"]).generated).all()
    # the traditional twin never generates; GenTwin never holds fewer records than it observed
    trad = frame[frame.twin == "traditional"]
    assert (trad.generated == 0).all()
    both = frame.pivot_table(index=["size", "scenario", "seed"], columns="twin", values="completeness_pct")
    assert (both["GenTwin"] >= both["traditional"] - 1e-12).all()
    tl = kept[(10, 2, 0)].timeline()
    assert set(tl.series) == {"ground truth", "traditional twin", "GenTwin", "GenTwin: wrong generated"}


@pytest.mark.parametrize(("owner", "written", "gateway_pools"), [
    # eq. (3) by hand, M = 7 device relations (3 sensors x {CONNECTED_TO, SERVES_IN} + the gateway's SERVES_IN).
    # "head": each sensor heads 2 (p = 2/7), the gateway 1 (p = 1/7); Avg = 1/4, bands 3Avg/4 = 3/16 and
    # Avg/2 = 1/8, so the gateway is M. With C inactive, Avg = (2/7 + 2/7 + 1/7)/4 = 5/28, 3Avg/4 = 15/112
    # < 1/7: the gateway moves to H. Versions 2 and 3 each change C's record and the gateway's: 2 records.
    ("head", [2, 2], ["M", "H", "M"]),
    # "incident": the gateway also counts its 3 sensors' links, N = 4, p = 4/7, H throughout; with C
    # inactive Avg = (2/7 + 2/7 + 4/7)/4 = 2/7 and 3Avg/4 = 3/14 < 2/7 keeps A and B in H: only C changes.
    ("incident", [1, 1], ["H", "H", "H"]),
])
def test_twin_versions_in_graph_store_write_only_what_changed(owner, written, gateway_pools):
    presence = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]], bool)
    store = NetworkxStore(twin="tiny")
    r = simulate(tiny_physical(), TINY_TOPO, scenario=2, seed=0, presence=presence, store=store,
                 pooling=PoolingConfig(relation_owner=owner))
    versions = store.versions()
    assert [v.number for v in versions] == [1, 2, 3] == list(range(1, r.internal.versions_committed + 1))
    # version 2: sensor C (index 2) found inactive; version 3: C back
    assert [v.n_written for v in versions[1:]] == written
    c = r.sensor_ids[2]
    gateway = next(n for n, d in store.request(version=1).nodes.items() if d.kind == "gateway")
    assert [store.request(version=k).nodes[gateway].get("pool") for k in (1, 2, 3)] == gateway_pools
    assert store.request(version=2).nodes[c].get("active") is False
    assert store.request(version=2).nodes[c].get("pool") == "L"
    assert store.request(version=3).nodes[c].get("active") is True


def test_summarise_table4_means_across_seeds_by_hand():
    import pandas as pd

    frame = pd.DataFrame([
        dict(scenario=2, size=5, twin="GenTwin", seed=s, completeness_pct=c, observed_pct=o, generated=g,
             generated_precision=p, false_record_pct=f, net_completeness_pct=c - f, record_f1_pct=r)
        for s, c, o, g, p, f, r in ((0, 90.0, 70.0, 4, 0.5, 1.0, 80.0), (1, 100.0, 80.0, 6, 1.0, 3.0, 90.0))
    ])
    row = summarise_table4(frame, 0.95).iloc[0]
    assert (row.completeness, row.observed, row.generated, row.generated_precision, row.false_record_pct, row.n) == (
        95.0, 75.0, 5.0, 0.75, 2.0, 2)
    assert (row.net, row.record_f1) == (93.0, 85.0)  # (89 + 97) / 2, (80 + 90) / 2
    assert row.net_high - 93.0 == pytest.approx(12.7062 * 4.0, rel=1e-3)  # 89, 97: s = 5.657, s / sqrt(2) = 4
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
            for k, twin in enumerate(ARMS):
                rows.append(dict(scenario=sc, size=size, twin=twin, completeness=(lo + hi) / 2, completeness_low=lo,
                                 completeness_high=hi, net=90.0 - k, net_low=89.0 - k, net_high=91.0 - k, n=5,
                                 observed=90.0, generated=1.0, generated_precision=1.0, false_record_pct=0.0,
                                 record_f1=95.0))
    return pd.DataFrame(rows)


def test_glued_notes_follow_the_paper_value_against_our_interval():
    paper = resolve("paper")
    inside = Table4(paper, None, _summary_around_the_paper(True), None, None, None).glue_values()
    above = Table4(paper, None, _summary_around_the_paper(False), None, None, None).glue_values()
    # the old names come first, in their old order; 17 new names per cell follow
    assert list(inside)[:6 * 4] == [f"table4_s{sc}_{label}{part}" for sc in (1, 2)
                                    for label in ("small", "medium", "large")
                                    for part in ("", "_low", "_high", "_note")]
    assert len(inside) == 6 * 4 + 6 * 17
    key = "table4_s2_large"
    # every Table IV value glued has its seed count beside it (the comparison page reads k_n)
    for k, v in inside.items():
        if not k.endswith(("_low", "_high", "_note", "_n")):
            assert inside[k + "_n"] == 5, k
    assert (inside[key + "_net"], inside[key + "_carry_forward_net"], inside[key + "_always_generate_net"]) == (
        90.0, 88.0, 87.0)
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
    assert list(wide.index) == [
        row for sc in (1, 2)
        for row in [(sc, twin, metric) for twin in ARMS for metric in ("completeness", "net completeness")]
        + [(sc, "paper (reference)", "completeness")]
    ]
    assert wide.loc[(2, "GenTwin", "completeness"), f"large ({largest})"].startswith(
        f"{glued['table4_s2_large']:.2f} [")
    dwell = t.sensitivity[t.sensitivity["input"] == "presence_dwell_s"]
    assert set(dwell.value) == set(phys.sensitivity_dwell_s)
    values = sum(len(set(getattr(phys, f))) for f in ("sensitivity_packet_loss", "sensitivity_duration_factors",
                                                      "sensitivity_dwell_s"))
    assert len(t.sensitivity) == (2 * values + len(set(phys.sensitivity_outage_s))) * phys.physical_seeds * len(ARMS)
    assert set(t.sensitivity_table().columns) >= {"presence_dwell_s (s)", "net completeness %"}
    assert glued["table4_input_s1"] == t.drivers_table().set_index(["scenario", "twin"]).loc[(1, "GenTwin"), "reading"]
    assert t.sensitivity_findings().startswith("Scenario 1: GenTwin's completeness ")
    assert t.findings().count("always generate 100.00 / ") == 2
    loops = t.loop_table()
    assert loops["Table IV run"].tolist()[0] == t.demo.external.readings_collected
    assert t.with_failures.gateway_down and t.with_failures.external.rehomed_sensors > 0
    assert t.run_table()["sensors re-homed"].tolist() == [0, t.with_failures.external.rehomed_sensors]
    assert t.findings().startswith("Scenario 2: GenTwin holds ")


# ---------------------------------------------------------------------------
# the relation_owner setting, the sensitivity panel
# ---------------------------------------------------------------------------


def test_relation_owner_setting_reaches_the_internal_loop():
    """The gateway owns its 3 sensors' CONNECTED_TO links only under "incident": its priority (eq. 3) grows."""
    presence = np.ones((3, 6), bool)
    priorities = {}
    for owner in ("head", "incident"):
        store = NetworkxStore(twin=owner)
        simulate(tiny_physical(), TINY_TOPO, scenario=1, seed=0, presence=presence, store=store,
                 pooling=PoolingConfig(relation_owner=owner))
        priorities[owner] = store.request().nodes["AQ-GW01"].get("priority")
    assert priorities["incident"] > priorities["head"]
    assert resolve("quick", relation_owner="incident").pooling.relation_owner == "incident"


def _small_panel_settings(**kw):
    return resolve("quick", sizes=(5,), physical_seeds=2, sensitivity_packet_loss=(0.0, 0.2),
                   sensitivity_duration_factors=(1.0, 2.0), sensitivity_outage_s=(4.0,), sensitivity_dwell_s=(20.0,),
                   **kw)


def test_input_sensitivity_is_paired_and_one_input_at_a_time():
    s = _small_panel_settings()
    frame = input_sensitivity(s)
    phys = s.physical
    # runs: loss 2 values x 2 scenarios, duration 2 x 2, cut 1 x Scenario 2 only, dwell 1 x 2; x 2 seeds x 4 arms
    assert len(frame) == (4 + 4 + 1 + 2) * 2 * len(ARMS)
    assert set(frame[frame["input"] == "duration_s"].value) == {phys.duration_s, 2 * phys.duration_s}
    assert set(frame[frame["input"] == "outage_s"].scenario) == {2}
    # the default loss (0.0 is not it), the default dwell (20 s) and the default cut are the base run
    base = frame[(frame["input"] == "presence_dwell_s")].drop(columns=["input", "value"]).reset_index(drop=True)
    same = frame[(frame["input"] == "duration_s") & (frame.value == phys.duration_s)].drop(
        columns=["input", "value"]).reset_index(drop=True)
    assert base.equals(same)
    # 20 % packet loss: the traditional twin loses about a fifth of Scenario 1
    summ = summarise_sensitivity(frame)
    lossy = summ[(summ["input"] == "packet_loss") & (summ.value == 0.2) & (summ.scenario == 1)
                 & (summ.twin == "traditional") & (summ.metric == "completeness")].iloc[0]
    assert 70.0 < lossy["mean"] < 90.0 and lossy["implied"] == pytest.approx(80.0) and lossy["n"] == 2
    assert lossy["cells"] == frame[(frame["input"] == "packet_loss") & (frame.value == 0.2) & (frame.scenario == 1)
                                   & (frame.twin == "traditional")].truth_records.sum()


def test_input_sensitivity_names_the_grid_that_makes_a_bad_run():
    with pytest.raises(ConfigError, match="sensitivity_outage_s"):
        input_sensitivity(_small_panel_settings().replace(sensitivity_outage_s=(35.0,)))


def test_size_labels_name_three_sizes_or_the_papers_own():
    assert size_labels((30, 100, 250)) == {30: "small", 100: "medium", 250: "large"}
    assert size_labels((5, 10, 20)) == {5: "small", 10: "medium", 20: "large"}
    assert size_labels((250, 7)) == {250: "large"}


def test_input_drivers_packet_loss_sets_the_cell_within_its_widened_interval():
    import pandas as pd

    summary = pd.DataFrame({
        "input": ["packet_loss"] * 2 + ["outage_s"] * 2, "value": [0.0, 0.1, 2.0, 10.0], "scenario": [1] * 4,
        "twin": ["GenTwin"] * 4, "metric": ["completeness"] * 4, "mean": [100.0, 90.02, 99.0, 97.0],
        "low": [100.0, 89.9, 98.0, 96.0], "high": [100.0, 90.1, 100.0, 98.0], "n": [5] * 4,
        "cells": [10_000] * 4, "implied": [100.0, 90.0, np.nan, np.nan]})
    row = input_drivers(summary).iloc[0]
    assert (round(float(row["packet_loss"]), 2), float(row["outage_s"]), row["reading"]) == (
        9.98, 2.0, "set by input: packet_loss")


def test_input_drivers_readings_by_hand():
    import pandas as pd

    def rows(twin, means, lows, highs, cut):
        return [dict(input="packet_loss", value=v, scenario=2, twin=twin, metric="completeness", mean=m, low=lo,
                     high=hi, n=5, cells=1_000_000, implied=100.0 * (1 - v))
                for v, m, lo, hi in zip((0.0, 0.1), means, lows, highs)] + [
            dict(input="outage_s", value=v, scenario=2, twin=twin, metric="completeness", mean=m, low=m - 0.1,
                 high=m + 0.1, n=5, cells=1_000_000, implied=np.nan) for v, m in zip((2.0, 30.0), cut)]

    summary = pd.DataFrame(
        rows("traditional", (97.0, 87.3), (96.9, 87.2), (97.1, 87.4), (99.0, 90.0))  # misses 100 at loss 0
        + rows("always generate", (100.0, 100.0), (100.0, 100.0), (100.0, 100.0), (100.0, 100.0)))
    d = input_drivers(summary).set_index("twin")
    assert d.loc["traditional", "reading"] == "moves most with packet_loss"  # 9.7 points against 9.0
    assert d.loc["traditional", "outage_s"] == pytest.approx(9.0)
    assert np.isnan(d.loc["traditional", "duration_s"])
    assert d.loc["always generate", "reading"] == "does not move over the grid"

"""Tests of gentwin.physical: the SimPy Physical Space, the Table IV metric and scenario runs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from gentwin.config import ConfigError, PhysicalConfig, TopologyConfig, resolve
from gentwin.graph import NetworkxStore
from gentwin.physical import (
    CUT,
    DELIVERED,
    GATEWAY_DOWN,
    INACTIVE,
    PhysicalError,
    completeness,
    outage_window,
    presence_chain,
    simulate,
    table4_runs,
    topology_config_for,
)
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
# the metric
# ---------------------------------------------------------------------------


def test_completeness_hand_worked():
    # 2 sensors x 4 slots; sensor 1 inactive in slot 3 -> |T| = 7
    T = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    O = np.array([[1, 0, 0, 1], [1, 0, 1, 0]], bool)  # 4 observed
    G = np.array([[0, 1, 1, 0], [0, 0, 0, 1]], bool)  # 3 generated: 2 right, 1 in the inactive cell
    s = completeness(T, O, G)
    assert (s.n_truth, s.n_observed, s.n_generated, s.n_generated_correct) == (7, 4, 3, 2)
    assert s.completeness == pytest.approx((4 + 2) / 7)
    assert s.observed_share == pytest.approx(4 / 7)
    assert s.generated_precision == pytest.approx(2 / 3)
    assert s.false_record_rate == pytest.approx(1 / 7)
    trad = completeness(T, O)
    assert trad.completeness == pytest.approx(4 / 7) and math.isnan(trad.generated_precision)


def test_inventing_everything_does_not_raise_completeness_beyond_truth():
    T = np.array([[1, 0, 0, 0]], bool)
    O = np.zeros_like(T)
    G = np.ones_like(T)  # invents a record in every cell; 3 of 4 are wrong
    s = completeness(T, O, G)
    assert s.completeness == 1.0  # it holds the one true record ...
    assert s.generated_precision == 0.25 and s.false_record_rate == 3.0  # ... and the wrong ones show


def test_completeness_rejects_generated_counted_as_observed():
    T = np.ones((1, 2), bool)
    with pytest.raises(PhysicalError, match="generated: cell .* both observed and generated"):
        completeness(T, np.array([[1, 0]], bool), np.array([[1, 0]], bool))


@pytest.mark.parametrize(
    "T, O, G, field",
    [
        (np.array([[1, 0]], bool), np.array([[0, 1]], bool), None, "observed"),  # observed a reading nobody sent
        (np.zeros((1, 2), bool), np.zeros((1, 2), bool), None, "truth"),  # empty truth
        (np.ones((1, 2), bool), np.ones((2, 2), bool), None, "observed"),  # shape
        (np.ones((1, 2)), np.ones((1, 2), bool), None, "truth"),  # dtype
    ],
)
def test_completeness_bad_input(T, O, G, field):
    with pytest.raises(PhysicalError, match=field):
        completeness(T, O, G)


# ---------------------------------------------------------------------------
# the hand-worked scenario
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


# ---------------------------------------------------------------------------
# the simulator
# ---------------------------------------------------------------------------


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


def test_presence_chain_long_run_share_and_dwell():
    rng = np.random.default_rng(0)
    x = presence_chain(np.ones(4000, bool), 400, 0.2, 5.0, rng)
    assert (~x[:, 200:]).mean() == pytest.approx(0.2, abs=0.01)
    # mean inactive spell ~ 5 slots: P(wake) = 1/5
    asleep = ~x[:, 100:-1]
    wake = asleep & x[:, 101:]
    assert wake.sum() / asleep.sum() == pytest.approx(0.2, abs=0.01)


def test_topology_config_for_keeps_paper_ratio():
    s = resolve("paper")
    for size, gws in ((30, 6), (100, 20), (250, 50)):
        tc = topology_config_for(size, s.topology, s.physical)
        assert (tc.n_sensors, tc.n_gateways) == (size, gws)
    assert topology_config_for(250, s.topology, s.physical).n_gateway_links == 30


# ---------------------------------------------------------------------------
# bad parameters
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, field",
    [
        (dict(report_period_s=-2.0), "report_period_s"),
        (dict(outage_s=100.0), "outage_s"),  # longer than the run
        (dict(sizes=(0,)), "sizes"),
        (dict(packet_loss=float("nan")), "packet_loss"),
        (dict(packet_loss=1.0), "packet_loss"),
        (dict(duration_s=1.0, outage_s=0.0, outage_start_s=0.0), "duration_s"),
        (dict(presence_dwell_s=0.5), "presence_dwell_s"),
        (dict(detect_slots=0), "detect_slots"),
    ],
)
def test_bad_parameters_rejected_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        resolve("quick", **override)


def test_bad_run_arguments():
    s = resolve("quick")
    tc = topology_config_for(5, s.topology, s.physical)
    with pytest.raises(PhysicalError, match="scenario"):
        simulate(s.physical, tc, scenario=3, seed=0)
    with pytest.raises(PhysicalError, match="seed"):
        simulate(s.physical, tc, scenario=1, seed=-1)
    with pytest.raises(PhysicalError, match="presence"):
        simulate(s.physical, tc, scenario=1, seed=0, presence=np.ones((5, 3), bool))
    with pytest.raises(PhysicalError, match="size"):
        topology_config_for(0, s.topology, s.physical)
    with pytest.raises(ConfigError, match="n_sensors"):
        dataclasses.replace(tc, n_sensors=0)
    with pytest.raises(PhysicalError, match="gateway_failures"):
        simulate(s.physical, tc, scenario=1, seed=0, gateway_failures=[("NO-GW", 1.0, 2.0)])
    with pytest.raises(PhysicalError, match="presence_dwell_s"):
        presence_chain(np.ones(2, bool), 3, 0.9, 1.0, np.random.default_rng(0))
    with pytest.raises(PhysicalError, match="scenario"):
        outage_window(s.physical, 0)


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

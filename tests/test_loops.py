"""Tests of gentwin.loops: the cyber twin's fill rule and the two closed loops of Fig. 1."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gentwin.config import TopologyConfig
from gentwin.loops import (
    CyberTwin,
    ExternalLoop,
    InternalLoop,
    LoopError,
    VersionLog,
    always_generate_records,
    carry_forward_records,
    loop_table,
    path_evidence,
)
from gentwin.topology import generate_dataset

# one service, two gateways, four sensors; everyone present in the history
TOPO = TopologyConfig(n_services=1, n_gateways=2, n_sensors=4, n_gateway_links=0, n_instances=8, p_inactive=0.0,
                      split=(0.34, 0.33, 0.33))  # three-way split so every split of the log gets a node
P = 2.0


@pytest.fixture()
def twin():
    ds = generate_dataset(TOPO)
    t = CyberTwin(ds.topology, ds, period_s=P)
    loop = InternalLoop()
    loop.start(0.0, t)
    return t, loop


def delivery(twin, slot, received, heartbeats, messages=()):
    """A Delivery-like record: received readings are sent at slot start + 0.5 s through the twin's gateway."""
    got = np.array(received, bool)
    sent = np.where(got, slot * P + 0.5, np.nan)
    via = np.where(got, twin.assign, -1)
    hv = [int(v) for v in via[got]] + [g for g, _ in messages]
    ht = [float(x) for x in sent[got]] + [t for _, t in messages]
    return SimpleNamespace(received=got, values=np.where(got, 10.0 + slot, np.nan), sent_at=sent, via=via,
                           heartbeats=np.array(heartbeats, bool), heard_via=np.array(hv, dtype=np.int64),
                           heard_at=np.array(ht, dtype=float))


def test_path_evidence_needs_messages_before_and_after():
    gw = np.array([0, 0, 0, 1])
    e = np.array([2.0, 2.0, 2.0, 2.0])
    # gateway 0: heard at 1.5 (before) and 2.5 (after); gateway 1 only after
    assert path_evidence(gw, e, np.array([0, 0, 1]), np.array([1.5, 2.5, 2.5]), before_s=2.0,
                         until_s=5.0).tolist() == [True, True, True, False]
    # a message at exactly e counts neither as before nor as after
    assert path_evidence(np.array([0]), np.array([2.0]), np.array([0]), np.array([2.0]), before_s=2.0,
                         until_s=5.0).tolist() == [False]
    # look-back window is [e - before_s, e): 0.0 is inside for e = 2, 'before_s' = 2; -0.1 is not
    assert path_evidence(np.array([0, 0]), np.array([2.0, 2.1]), np.array([0, 0]), np.array([0.0, 3.0]),
                         before_s=2.0, until_s=5.0).tolist() == [True, False]
    assert path_evidence(np.array([0]), np.array([1.0]), np.array([], int), np.array([]), before_s=2.0,
                         until_s=5.0).tolist() == [False]


def test_missing_reading_with_live_path_is_inferred_inactive(twin):
    t, _ = twin
    # sensor 0 missing; everyone else arrives; gateways heard before and after sensor 0's send time
    msgs = [(g, 0.1) for g in range(t.n_gateways)] + [(g, 1.9) for g in range(t.n_gateways)]
    v = t.close_slot(0, 3.0, delivery(t, 0, [0, 1, 1, 1], [1, 1], msgs))
    assert v.inferred_inactive.tolist() == [True, False, False, False]
    assert not v.generated.any()
    assert t.known[t.sensor_pos[0]] == 0


def test_cut_generates_for_last_known_present_and_keeps_knowledge(twin):
    t, loop = twin
    t.known[t.sensor_pos[2]] = 0  # sensor 2 last seen inactive
    loop.step(1.0, t)  # a new version takes it in: p_2 = 0
    before = t.known.copy()
    obs = t.observations.copy()
    v = t.close_slot(1, 5.0, delivery(t, 1, [0, 0, 0, 0], [0, 0]))  # nothing at all arrived: the flow is cut
    assert not v.flow_alive
    assert v.generated.tolist() == [True, True, False, True]
    assert not v.inferred_inactive.any() and not v.gateway_silent.any()
    # generated records never enter the twin's knowledge
    assert (t.known == before).all() and (t.observations == obs).all()


def test_generated_value_is_last_observed_reading(twin):
    t, _ = twin
    t.close_slot(0, 3.0, delivery(t, 0, [1, 1, 1, 1], [1, 1]))  # readings 10.0
    v = t.close_slot(1, 5.0, delivery(t, 1, [0, 0, 0, 0], [0, 0]))
    assert v.generated_values.tolist() == [10.0] * 4


def test_external_loop_rehomes_after_detect_slots(twin):
    t, _ = twin
    ext = ExternalLoop(t, detect_slots=2)
    dead = int(t.assign[0])
    live = 1 - dead
    hb = [True, True]
    hb[dead] = False
    recv = [bool(t.assign[s] != dead) for s in range(t.n_sensors)]
    assert ext.step(0, 3.0, t.close_slot(0, 3.0, delivery(t, 0, recv, hb))) == []  # silent once: wait
    cmds = ext.step(1, 5.0, t.close_slot(1, 5.0, delivery(t, 1, recv, hb)))  # silent twice: act
    assert len(cmds) == 1
    cmd = cmds[0]
    assert (cmd.from_gateway, cmd.to_gateway) == (dead, live)
    assert set(cmd.sensors) == {s for s in range(t.n_sensors) if t.assign[s] == dead}
    assert ext.step(2, 7.0, t.close_slot(2, 7.0, delivery(t, 2, recv, hb))) == []  # decided once only
    ext.acknowledge(cmd)
    assert (t.assign == live).all()
    c = ext.counters
    assert (c.insights, c.control_commands, c.control_acks, c.rehomed_sensors) == (1, 1, 1, len(cmd.sensors))
    assert c.information_reports == 3 and c.gateway_statuses == 3 * t.n_gateways


def test_external_loop_rehomes_to_the_least_loaded_live_gateway():
    # one service, three gateways: gateway 0 (2 sensors) fails; 1 serves 3 sensors, 2 serves 1 -> 2 takes them
    ds = generate_dataset(TopologyConfig(n_services=1, n_gateways=3, n_sensors=6, n_gateway_links=0, n_instances=10,
                                         p_inactive=0.0, split=(0.34, 0.33, 0.33)))
    t = CyberTwin(ds.topology, ds, period_s=P)
    InternalLoop().start(0.0, t)
    t.rehome(range(6), 1)
    t.rehome([0, 1], 0)
    t.rehome([5], 2)
    assert t.gateway_degrees().tolist() == [2, 3, 1]
    ext = ExternalLoop(t, detect_slots=1)
    recv = [bool(t.assign[s] != 0) for s in range(t.n_sensors)]
    cmds = ext.step(0, 3.0, t.close_slot(0, 3.0, delivery(t, 0, recv, [False, True, True])))
    assert [(c.from_gateway, c.to_gateway, c.sensors) for c in cmds] == [(0, 2, (0, 1))]


def test_external_loop_does_not_act_on_a_global_cut(twin):
    t, _ = twin
    ext = ExternalLoop(t, detect_slots=1)
    for k in range(4):
        assert ext.step(k, 3.0 + 2 * k, t.close_slot(k, 3.0 + 2 * k, delivery(t, k, [0] * 4, [0, 0]))) == []
    assert ext.counters.insights == 0


def test_external_loop_unresolved_without_live_gateway():
    # two services with one gateway each: a failed gateway has no live peer of its own service
    ds = generate_dataset(TopologyConfig(n_services=2, n_gateways=2, n_sensors=4, n_gateway_links=0, n_instances=8,
                                         p_inactive=0.0, split=(0.34, 0.33, 0.33)))
    t = CyberTwin(ds.topology, ds, period_s=P)
    InternalLoop().start(0.0, t)
    ext = ExternalLoop(t, detect_slots=1)
    recv = [bool(t.assign[s] == 1) for s in range(t.n_sensors)]  # gateway 0 silent, gateway 1 alive
    cmds = ext.step(0, 3.0, t.close_slot(0, 3.0, delivery(t, 0, recv, [False, True])))
    assert cmds == []
    assert ext.counters.unresolved_failures == 1 and ext.counters.insights == 0


def test_internal_loop_versions_follow_alpha(twin):
    t, loop = twin
    assert loop.counters.versions_committed == 1 and t.version == 1
    assert loop.step(1.0, t) is False  # nothing changed: alpha = 0
    t.known[t.sensor_pos[0]] = 0
    assert loop.step(2.0, t) is True  # a sensor dropped: alpha > 0 -> version 2
    assert t.version == 2 and loop.store.latest().version == 2
    assert t.priority[t.sensor_pos[0]] == 0.0
    c = loop.counters
    assert (c.pooling_runs, c.versions_committed, c.versions_skipped) == (3, 2, 1)
    assert c.pool_assignments == 3 * len(t.arrays.node_ids)
    rows = loop.store.summaries
    assert [r["version"] for r in rows] == [1, 2] and rows[1]["alpha_H"] > 0


def test_version_alpha_threshold_holds_back_small_changes(twin):
    t, _ = twin
    loop = InternalLoop(version_alpha=10.0)  # larger than any possible alpha here
    loop.start(0.0, t)
    t.known[t.sensor_pos[0]] = 0
    assert loop.step(1.0, t) is False
    assert loop.counters.versions_committed == 1 and loop.counters.versions_skipped == 1


def test_loop_table_lists_every_crossing(twin):
    t, loop = twin
    ext = ExternalLoop(t, detect_slots=2)
    tab = loop_table(ext.counters, loop.counters)
    assert set(tab.loop) == {"external", "internal"}
    assert {"physical", "cyber", "service"} <= set(tab["from"]) | set(tab["to"])
    assert tab.loc[tab.what == "new twin versions", "count"].item() == 1


def test_bad_loop_arguments(twin):
    t, _ = twin
    with pytest.raises(LoopError, match="detect_slots"):
        ExternalLoop(t, detect_slots=0)
    with pytest.raises(LoopError, match="version_alpha"):
        InternalLoop(version_alpha=float("nan"))
    with pytest.raises(LoopError, match="period_s"):
        ds = generate_dataset(TOPO)
        CyberTwin(ds.topology, ds, period_s=-1.0)
    with pytest.raises(LoopError, match="delivery"):
        t.close_slot(0, 3.0, delivery(t, 0, [1, 1, 1, 1], [1, 1, 1]))  # three heartbeats for two gateways
    with pytest.raises(LoopError, match="start"):
        InternalLoop().step(0.0, t)
    log = VersionLog()
    with pytest.raises(LoopError, match="version"):
        log.commit(SimpleNamespace(version=5))


def test_relation_owner_reaches_the_twins_pooling_arrays():
    ds = generate_dataset(TOPO)
    head = CyberTwin(ds.topology, ds, period_s=P, relation_owner="head")
    incident = CyberTwin(ds.topology, ds, period_s=P, relation_owner="incident")
    assert (head.arrays.relation_owner, incident.arrays.relation_owner) == ("head", "incident")
    gw = incident.gateway_pos
    # "incident": each gateway also owns the CONNECTED_TO links of its sensors (d_i of them)
    assert (incident.arrays.owned[gw] - head.arrays.owned[gw] == incident.gateway_degrees()).all()
    sensors = incident.sensor_pos
    assert (incident.arrays.owned[sensors] == head.arrays.owned[sensors]).all()
    with pytest.raises(ValueError, match="relation_owner"):
        CyberTwin(ds.topology, ds, period_s=P, relation_owner="tail")


def test_carry_forward_fills_from_the_last_known_state_on():
    # sensor 0: present in the history, received in slots 0 and 3 -> slots 1, 2 carried (4 is too)
    # sensor 1: absent in the history, first received in slot 2 -> nothing carried before, slot 3 and 4 after
    # sensor 2: absent in the history and never received -> never carried
    O = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
    got = carry_forward_records(O, np.array([True, False, False]))
    assert got.astype(int).tolist() == [[0, 1, 1, 0, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
    assert not (got & O).any()
    assert (always_generate_records(O) == ~O).all()
    with pytest.raises(LoopError, match="initial"):
        carry_forward_records(O, np.array([True, False]))
    with pytest.raises(LoopError, match="observed"):
        always_generate_records(np.ones((2, 2)))

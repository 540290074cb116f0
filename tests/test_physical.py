"""Tests of gentwin.physical: the SimPy Physical Space on its own (the cyber side is in tests/experiments)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import simpy

from gentwin.config import ConfigError, PhysicalConfig, TopologyConfig, resolve
from gentwin.physical import (
    CUT,
    DELIVERED,
    GATEWAY_DOWN,
    INACTIVE,
    TABLE4_SCENARIOS,
    PhysicalError,
    PhysicalSpace,
    last_presence,
    outage_window,
    presence_chain,
    topology_config_for,
)
from gentwin.topology import generate_topology

# one service, two gateways, six sensors
TOPO = TopologyConfig(n_services=1, n_gateways=2, n_sensors=6, n_gateway_links=0, n_instances=8, p_inactive=0.0)


def tiny_physical(**kw) -> PhysicalConfig:
    base = dict(report_period_s=2.0, duration_s=12.0, outage_start_s=6.0, outage_s=4.0, packet_loss=0.0,
                delay_mean_s=0.0, slot_grace_s=2.0)
    base.update(kw)
    return PhysicalConfig(**base)


def run_space(physical: PhysicalConfig, presence: np.ndarray, *, scenario: int, seed: int = 0,
              until: float | None = None, **kw) -> PhysicalSpace:
    """The physical space alone, run to the end of its slots (nobody collects)."""
    env = simpy.Environment()
    space = PhysicalSpace(env, generate_topology(TOPO), physical, scenario=scenario, presence=presence, seed=seed,
                          **kw)
    env.run(until=until if until is not None else presence.shape[1] * physical.report_period_s + 1.0)
    return space


# ---------------------------------------------------------------------------
# the simulator on its own
# ---------------------------------------------------------------------------


def test_scenarios_are_table_iv_s():
    assert TABLE4_SCENARIOS == (1, 2)


def test_cut_loses_exactly_the_readings_sent_inside_it():
    phys = tiny_physical(duration_s=20.0, outage_start_s=5.3, outage_s=4.1)
    space = run_space(phys, np.ones((6, 10), bool), scenario=2)
    inside = (space.sent_at >= 5.3) & (space.sent_at < 5.3 + 4.1)
    assert inside.any() and (~inside).any()
    assert ((space.reason == CUT) == inside).all()
    # no loss and no delay: everything sent outside the cut arrives at once
    assert (space.reason[~inside] == DELIVERED).all()
    assert (space.arrival[~inside] == space.sent_at[~inside]).all()
    assert np.isinf(space.arrival[inside]).all()


def test_inactive_sensors_send_nothing_and_scenario_1_is_not_cut():
    presence = np.ones((6, 6), bool)
    presence[2, [1, 2]] = False
    space = run_space(tiny_physical(), presence, scenario=1)
    assert ((space.reason == INACTIVE) == ~presence).all()
    assert np.isnan(space.sent_at[~presence]).all() and not np.isnan(space.sent_at[presence]).any()
    assert (space.reason[presence] == DELIVERED).all()
    # one reading per slot, at the sensor's fixed phase
    assert np.allclose(np.diff(space.sent_at[0]), 2.0)


def test_failed_gateway_loses_its_readings_until_rehomed():
    phys = tiny_physical(duration_s=20.0, outage_s=0.0, outage_start_s=0.0)
    env = simpy.Environment()
    topo = generate_topology(TOPO)
    space = PhysicalSpace(env, topo, phys, scenario=1, presence=np.ones((6, 10), bool), seed=0,
                          gateway_failures=[("AQ-GW01", 4.5, 100.0)])
    members = np.flatnonzero(space.assignment == 0)
    assert members.size  # AQ-GW01 serves some sensors
    env.run(until=9.0)
    for s in members:
        space.rehome(int(s), 1)
    env.run(until=21.0)
    sent = space.sent_at[members]
    down = space.reason[members] == GATEWAY_DOWN
    assert ((sent >= 4.5) & (sent < 9.0) == down).all()
    assert (space.reason[members][sent >= 9.0] == DELIVERED).all()
    assert (space.via[members][sent >= 9.0] == 1).all()
    assert [(t, a, b) for t, _, a, b in space.rehomes] == [(9.0, 0, 1)] * members.size
    assert not space.gateway_up[0] and space.gateway_up[1]


def test_same_seed_same_network_behaviour():
    phys = tiny_physical(duration_s=20.0, packet_loss=0.2, delay_mean_s=0.5, gateway_mtbf_s=5.0)
    a, b, c = (run_space(phys, np.ones((6, 10), bool), scenario=2, seed=s) for s in (3, 3, 4))
    assert (a.reason == b.reason).all() and np.array_equal(a.arrival, b.arrival)
    assert a.down_intervals == b.down_intervals
    assert not np.array_equal(a.sent_at, c.sent_at, equal_nan=True)


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
    quick = resolve("quick")
    tc = topology_config_for(5, quick.topology, quick.physical)
    assert (tc.n_sensors, tc.n_gateways) == (5, 3)


def test_outage_window_of_each_scenario():
    assert outage_window(tiny_physical(), 2) == (6.0, 10.0)
    assert outage_window(tiny_physical(), 1) is None
    assert outage_window(tiny_physical(outage_s=0.0), 2) is None
    assert (outage_window(PhysicalConfig(), 2), outage_window(PhysicalConfig(), 1)) == ((60.0, 70.0), None)


def test_last_presence_is_the_latest_instance_of_each_node():
    from gentwin.topology import Instance, generate_dataset

    ds = generate_dataset(TopologyConfig(n_gateways=6, n_sensors=24, n_gateway_links=3, n_instances=60))
    ds.instances = [Instance(1, 2.0, "AQ-S001", False, "train"), Instance(0, 0.0, "AQ-S001", True, "train"),
                    Instance(2, 1.0, "AQ-GW01", True, "train")]
    assert last_presence(ds) == {"AQ-S001": False, "AQ-GW01": True}  # by time stamp, not by list order


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


def test_bad_physical_arguments():
    s = resolve("quick")
    tc = topology_config_for(5, s.topology, s.physical)
    with pytest.raises(ConfigError, match="size = 0"):
        topology_config_for(0, s.topology, s.physical)
    with pytest.raises(ConfigError, match="n_sensors"):
        dataclasses.replace(tc, n_sensors=0)
    with pytest.raises(PhysicalError, match="presence_dwell_s"):
        presence_chain(np.ones(2, bool), 3, 0.9, 1.0, np.random.default_rng(0))
    with pytest.raises(PhysicalError, match="n_slots"):
        presence_chain(np.ones(2, bool), 0, 0.1, 1.0, np.random.default_rng(0))
    with pytest.raises(PhysicalError, match="scenario"):
        outage_window(s.physical, 0)
    with pytest.raises(PhysicalError, match="gateway_failures"):
        run_space(tiny_physical(), np.ones((6, 6), bool), scenario=1, gateway_failures=[("NO-GW", 1.0, 2.0)])
    with pytest.raises(PhysicalError, match="gateway_failures"):
        run_space(tiny_physical(), np.ones((6, 6), bool), scenario=1, gateway_failures=[("AQ-GW01", 2.0, 1.0)])

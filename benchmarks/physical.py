"""Speed of the Physical Space simulator with both twins and both closed loops.

Prints simulated seconds per wall-clock second for 250 and 25,000 sensors
(Scenario 2, the paper's 2 s period and 10 s cut, gateways failing with the
notebook's demonstration MTBF so that the external loop has work to do).
Each measurement simulates ``--duration`` seconds (60 by default), so it stays
bounded; topology and history generation are timed separately (set-up).
Every size is measured twice: with the default twin store (the internal loop
writes each twin version into an in-memory ``gentwin.graph.NetworkxStore``)
and with the minimal ``gentwin.loops.VersionLog``, which separates the cost of
the simulator and the loops from the cost of the graph store.

Usage::

    .venv/bin/python benchmarks/physical.py [--duration 60] [--sizes 250 25000]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from gentwin.config import resolve
from gentwin.experiments.table4 import simulate
from gentwin.loops import VersionLog
from gentwin.physical import topology_config_for
from gentwin.topology import generate_dataset


def measure(size: int, duration: float, seed: int = 0, store: str = "graph") -> dict:
    s = resolve("paper")
    phys = dataclasses.replace(
        s.physical, duration_s=duration, outage_start_s=min(20.0, duration / 3), outage_s=min(10.0, duration / 3),
        gateway_mtbf_s=s.physical.loop_demo_mtbf_s,
    )
    tcfg = topology_config_for(size, s.topology, phys)
    t0 = time.perf_counter()
    ds = generate_dataset(tcfg)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = simulate(phys, tcfg, scenario=2, seed=seed, pooling=s.pooling, dataset=ds,
                   store=None if store == "graph" else VersionLog())
    wall = time.perf_counter() - t0
    events = int(res.truth.sum()) + res.n_gateways * res.n_slots  # readings + heartbeats sent
    return dict(store=store, size=size, gateways=res.n_gateways, simulated_s=duration, wall_s=wall, setup_s=setup,
                sim_per_wall=duration / wall, messages_per_s=events / wall,
                gentwin_pct=100 * res.gentwin.completeness, traditional_pct=100 * res.traditional.completeness,
                rehomed=res.external.rehomed_sensors, versions=res.internal.versions_committed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="simulated seconds per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 25_000], help="numbers of sensors")
    args = ap.parse_args()
    rows = [measure(n, args.duration, store=st) for n in args.sizes for st in ("graph", "log")]
    head = (f"{'twin store':>10} {'sensors':>8} {'gateways':>8} {'sim s':>6} {'wall s':>8} {'setup s':>8} {'sim s / wall s':>15} "
            f"{'msgs / wall s':>14} {'GenTwin %':>9} {'trad. %':>8} {'re-homed':>8} {'versions':>8}")
    print(head)
    for r in rows:
        print(f"{r['store']:>10} {r['size']:>8} {r['gateways']:>8} {r['simulated_s']:>6.0f} {r['wall_s']:>8.2f} {r['setup_s']:>8.2f} "
              f"{r['sim_per_wall']:>15.1f} {r['messages_per_s']:>14.0f} {r['gentwin_pct']:>9.2f} "
              f"{r['traditional_pct']:>8.2f} {r['rehomed']:>8} {r['versions']:>8}")
    for st in ("graph", "log"):
        sub = [r for r in rows if r["store"] == st]
        if len(sub) >= 2:
            a, b = sub[0], sub[-1]
            print(f"{st} store, {b['size']} vs {a['size']} sensors: {b['size'] / a['size']:.0f}x the sensors, "
                  f"{a['sim_per_wall'] / b['sim_per_wall']:.1f}x the wall time per simulated second")

if __name__ == "__main__":
    main()

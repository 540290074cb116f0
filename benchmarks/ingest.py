"""Benchmark of gentwin.ingest: entities read per second, and the time relative to json.load alone.

Writes a synthetic city of ``--entities`` NGSI-LD entities (gentwin's normalized form, as
:func:`gentwin.ingest.write_entities` writes it) to a temporary folder, then times
``json.load`` of the file and :func:`gentwin.ingest.read_entities` of the same file (best of
``--repeat`` runs each, wall clock and CPU time).  Run: ``python benchmarks/ingest.py [--entities 100000] [--form keyValues]``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from gentwin.ingest import FORMS, read_entities, write_entities
from gentwin.topology import Node, Relation, Topology

SERVICES = ("AQ", "TR", "WM")


def synthetic_topology(n_entities: int) -> Topology:
    """A city of ``n_entities`` nodes: one city, three services, 10 % gateways, the rest sensors."""
    n_gateways = max(1, n_entities // 10)
    n_sensors = max(0, n_entities - n_gateways - 1 - len(SERVICES))
    nodes = {"CITY": Node("CITY", "city", name="smart city")}
    relations = []
    for code in SERVICES:
        nodes[code] = Node(code, "service", name=code)
        relations.append(Relation(code, "IN", "CITY"))
    for g in range(n_gateways):
        gid, service = f"GW{g:06d}", SERVICES[g % len(SERVICES)]
        nodes[gid] = Node(gid, "gateway", service=service, name="gateway", latitude=41.0 + g * 1e-6, longitude=2.1)
        relations.append(Relation(gid, "SERVES_IN", service))
    for k in range(n_sensors):
        sid, g = f"S{k:07d}", k % n_gateways
        gid, service = f"GW{g:06d}", SERVICES[g % len(SERVICES)]
        nodes[sid] = Node(sid, "sensor", service=service, gateway=gid, category="PM2.5 sensor",
                          sdm_type="AirQualityObserved", controlled_property="pm25", name="PM2.5 sensor",
                          latitude=41.0 + k * 1e-7, longitude=2.2)
        relations += [Relation(sid, "CONNECTED_TO", gid), Relation(sid, "SERVES_IN", service)]
    return Topology(nodes, relations)


def best_of(repeat: int, fn) -> tuple[float, float, object]:
    """Best wall-clock and best CPU seconds of ``repeat`` runs (CPU time is steadier on a shared machine)."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return min(walls), min(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--form", choices=FORMS, default="normalized")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    topology = synthetic_topology(args.entities)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "entities.json"
        write_entities(topology, path, form=args.form)
        size_mb = path.stat().st_size / 1e6

        def load_json():
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)

        t_json, cpu_json, _ = best_of(args.repeat, load_json)
        t_read, cpu_read, back = best_of(args.repeat, lambda: read_entities(path))
    assert back == topology, "the benchmark file did not read back to the topology it was written from"
    n = len(topology.nodes)
    print(f"{n} {args.form} entities, {size_mb:.1f} MB")
    print(f"json.load alone:              {t_json:6.2f} s wall, {cpu_json:6.2f} s CPU  ({n / t_json:,.0f} entities/s)")
    print(f"gentwin.ingest.read_entities: {t_read:6.2f} s wall, {cpu_read:6.2f} s CPU  ({n / t_read:,.0f} entities/s)")
    print(f"ratio read_entities / json.load: {t_read / t_json:.2f} (wall), {cpu_read / cpu_json:.2f} (CPU)")

if __name__ == "__main__":
    main()

"""A Neo4j server killed (SIGKILL) in the middle of a twin-version write keeps the previous version whole.

The session server of ``neo4j_env`` is shared, so this test starts a private one with
``.ci/neo4j/neo4j-server start --data DIR`` (the database outlives the process), kills its Java
process while a rebuild is half written inside its transaction, starts a new server on the same
data folder and reads the twin back: the previous version complete, nothing of the killed one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gentwin.graph import Neo4jStore, TwinNode
from gentwin.topology import Relation

NEO4J_SERVER = Path(__file__).resolve().parents[2] / ".ci" / "neo4j" / "neo4j-server"


def _server(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(NEO4J_SERVER), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"neo4j-server {args[0]} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout) if args[0] == "start" else {}


def _start(data: Path) -> tuple[dict, str]:
    info = _server("start", "--json", "--data", str(data), "--watch-pid", str(os.getpid()))
    return info, Path(info["password_file"]).read_text().strip()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


class _PauseAfterFirstBatch:
    """A transaction whose second batched statement waits until the server has been killed."""

    def __init__(self, tx, landed: threading.Event, killed: threading.Event) -> None:
        self._tx, self._landed, self._killed, self._batches = tx, landed, killed, 0

    def run(self, query, *args, **kwargs):
        if query.startswith("UNWIND"):
            self._batches += 1
            if self._batches == 2 and not self._landed.is_set():  # the first batch is written (uncommitted)
                self._landed.set()
                self._killed.wait(120)
        return self._tx.run(query, *args, **kwargs)


class _StoreKilledMidWrite(Neo4jStore):
    """Test double: the Neo4j store, its write transaction wrapped by :class:`_PauseAfterFirstBatch`."""

    landed: threading.Event
    killed: threading.Event

    def _tx_write(self, tx, plan, v, *, new_ids, end_states=True):
        return super()._tx_write(_PauseAfterFirstBatch(tx, self.landed, self.killed), plan, v,
                                 new_ids=new_ids, end_states=end_states)


def _city(n_gateways: int, per_gateway: int, tag: str) -> tuple[list[TwinNode], list[Relation]]:
    nodes = [TwinNode("CITY", "city"), TwinNode("AQ", "service")]
    rels = [Relation("AQ", "IN", "CITY")]
    for g in range(n_gateways):
        gw = f"GW{g:03d}"
        nodes.append(TwinNode(gw, "gateway", {"n_sensors": per_gateway, "tag": tag}))
        rels.append(Relation(gw, "SERVES_IN", "AQ"))
        for s in range(per_gateway):
            sid = f"S{g:03d}-{s:02d}"
            nodes.append(TwinNode(sid, "sensor", {"active": True, "tag": tag}))
            rels += [Relation(sid, "CONNECTED_TO", gw), Relation(sid, "SERVES_IN", "AQ")]
    return nodes, rels


@pytest.mark.neo4j
def test_sigkill_mid_write_keeps_the_previous_version(neo4j_env, tmp_path):
    del neo4j_env  # only for its build / skip / CI-failure handling; this test needs its own server
    data = tmp_path / "neo4j-data"
    info, password = _start(data)
    state_file = info["state_file"]
    try:
        store = _StoreKilledMidWrite(info["uri"], info["user"], password, twin="crash", batch_size=25)
        store.landed, store.killed = threading.Event(), threading.Event()
        small_nodes, small_rels = _city(3, 4, "before")
        first = store.rebuild(small_nodes, small_rels, name="before")
        before = store.request()
        big_nodes, big_rels = _city(40, 10, "after")  # 442 states: 18 batches of 25
        failure: list[BaseException] = []

        def write() -> None:
            try:
                store.rebuild(big_nodes, big_rels, name="after")
            except BaseException as exc:  # the server dies under it
                failure.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert store.landed.wait(120), "the second version's first batch never landed"
        os.kill(info["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while not _gone(info["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(info["pid"])
        store.killed.set()
        # The driver retries the killed transaction (about 30 s) against the dead server; wait for it to give
        # up before closing (closing under a retrying thread races inside the driver) and before the
        # restart, so that no retry can reach the restarted server.
        writer.join(120)
        assert not writer.is_alive() and failure, "the write must fail with its server killed"
        store.close()
    finally:
        _server("stop", "--state", state_file)  # removes the run folder; --data stays

    info, password = _start(data)
    try:
        with Neo4jStore(info["uri"], info["user"], password, twin="crash") as again:
            assert [(v.number, v.name) for v in again.versions()] == [(first.number, "before")]
            after = again.request()
            assert after.version == first.number and after.same_content(before)
            with again._session() as s:  # nothing of version 2 anywhere: no entity, state, relation or counter
                counts = s.run(
                    "CALL { MATCH (e:TwinEntity {twin: 'crash'}) RETURN count(e) AS entities } "
                    "CALL { MATCH (t:TwinState {twin: 'crash'}) RETURN count(t) AS states } "
                    "CALL { MATCH (t:TwinState {twin: 'crash'}) WHERE t.v_to IS NOT NULL OR t.tag <> 'before' "
                    "RETURN count(t) AS touched } "
                    "CALL { MATCH (:TwinEntity {twin: 'crash'})-[r]->() WHERE type(r) <> 'HAS_STATE' "
                    "RETURN count(r) AS rels, sum(CASE WHEN r.v_to IS NULL AND r.v_from = 1 THEN 0 ELSE 1 END) AS bad } "
                    "MATCH (c:TwinCounter {twin: 'crash'}) RETURN entities, states, touched, rels, bad, c.latest AS latest"
                ).single()
            assert dict(counts) == {"entities": len(small_nodes), "states": len(small_nodes), "touched": 0,
                                    "rels": len(small_rels), "bad": 0, "latest": first.number}
            again.drop()
    finally:
        _server("stop", "--state", info["state_file"])

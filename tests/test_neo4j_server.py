"""The Neo4j test server (``.ci/neo4j/neo4j-server`` + the ``neo4j_env`` fixture) is real Neo4j.

The ``neo4j``-marked tests need the server the session starts (about 15 s, ~330 MB); the CLI
tests at the bottom only run the script's argument checks and need neither Java nor a server.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import neo4j  # a hard dependency of gentwin: never skipped
import pytest

NEO4J_SERVER = Path(__file__).resolve().parents[1] / ".ci" / "neo4j" / "neo4j-server"


@pytest.fixture(scope="module")
def driver(neo4j_env):
    with neo4j.GraphDatabase.driver(neo4j_env["uri"],
                                    auth=(neo4j_env["user"], neo4j_env["password"])) as drv:
        yield drv


@pytest.fixture
def marker(driver):
    """A label-free tag unique to one test; its nodes are removed afterwards."""
    tag = f"neo4j-server-test-{uuid.uuid4()}"
    yield tag
    driver.execute_query("MATCH (n:ServerTest {tag: $tag}) DETACH DELETE n", tag=tag)


def _count(driver, tag: str) -> int:
    records, _, _ = driver.execute_query(
        "MATCH (n:ServerTest {tag: $tag}) RETURN count(n) AS c", tag=tag)
    return records[0]["c"]


@pytest.mark.neo4j
def test_parameterised_query_returns_values_literally(driver):
    hostile = "x'}) MATCH (n) DETACH DELETE n //"
    records, _, _ = driver.execute_query(
        "RETURN $a + $b AS total, $text AS text, size($items) AS n", a=2, b=40, text=hostile,
        items=[1, 2, 3])
    assert (records[0]["total"], records[0]["text"], records[0]["n"]) == (42, hostile, 3)


@pytest.mark.neo4j
def test_wrong_password_raises_auth_error(neo4j_env):
    wrong = str(neo4j_env["password"]) + "-wrong"
    with neo4j.GraphDatabase.driver(neo4j_env["uri"], auth=(neo4j_env["user"], wrong)) as bad:
        with pytest.raises(neo4j.exceptions.AuthError):
            bad.verify_connectivity()


@pytest.mark.neo4j
def test_write_in_failed_transaction_is_rolled_back(driver, marker):
    class Boom(Exception):
        pass

    def in_tx_count(tx):
        return tx.run("MATCH (n:ServerTest {tag: $tag}) RETURN count(n) AS c",
                      tag=marker).single()["c"]

    def write_then_fail(tx):
        tx.run("CREATE (:ServerTest {tag: $tag, step: 1})", tag=marker).consume()
        assert in_tx_count(tx) == 1  # visible inside the transaction...
        raise Boom

    with driver.session() as session:
        with pytest.raises(Boom):
            session.execute_write(write_then_fail)
        # ...and a Cypher error after a write also rolls the whole transaction back.
        with pytest.raises(neo4j.exceptions.ClientError):
            session.execute_write(lambda tx: tx.run(
                "CREATE (:ServerTest {tag: $tag, step: 2}) WITH 1 AS one RETURN 1 / 0",
                tag=marker).consume())
    assert _count(driver, marker) == 0
    driver.execute_query("CREATE (:ServerTest {tag: $tag})", tag=marker)  # control: writes work
    assert _count(driver, marker) == 1


@pytest.mark.neo4j
def test_server_is_neo4j_5_community(driver):
    records, _, _ = driver.execute_query(
        "CALL dbms.components() YIELD name, versions, edition RETURN name, versions, edition")
    component = records[0]
    assert component["name"] == "Neo4j Kernel"
    assert component["versions"][0].split(".")[0] == "5"
    assert component["edition"] == "community"


@pytest.mark.neo4j
def test_fixture_hides_the_password(neo4j_env):
    password = str(neo4j_env["password"])
    assert len(password) >= 8
    assert password not in repr(neo4j_env)
    assert set(neo4j_env) == {"uri", "user", "password"}


# --- the script's own argument checks (no Java, no server) -----------------------------------
def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(NEO4J_SERVER), *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize(("args", "field"), [
    (("start", "--port", "70000"), "--port"),
    (("start", "--heap", "lots"), "--heap"),
    (("start", "--timeout", "0"), "--timeout"),
])
def test_start_rejects_bad_options_naming_them(args, field):
    done = _script(*args)
    assert done.returncode == 2
    assert f"argument {field}:" in done.stderr and args[-1] in done.stderr


def test_stop_with_missing_state_file_names_it(tmp_path: Path):
    missing = tmp_path / "state.json"
    done = _script("stop", "--state", str(missing))
    assert done.returncode == 1
    assert f"--state {missing}: no such file" in done.stderr


def test_status_reports_a_dead_server_as_not_running(tmp_path: Path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"uri": "bolt://127.0.0.1:1", "user": "neo4j", "pid": 2 ** 22 + 1,
                                 "run_dir": str(tmp_path), "state_file": str(state)}))
    done = _script("status", "--state", str(state))
    assert done.returncode == 1
    assert json.loads(done.stdout)["running"] is False

"""Shared pytest fixtures.

``neo4j_env`` gives tests a real Neo4j 5.x Community server (see ``.ci/neo4j/neo4j-server``).

* If ``NEO4J_URI`` is set, that server is used with ``NEO4J_USER`` (default ``neo4j``) and
  ``NEO4J_PASSWORD``; nothing is started or stopped.
* Otherwise the session builds the server from Maven Central if needed (cached in ``~/.m2`` and
  ``.ci/neo4j/target``), starts it once on 127.0.0.1 with a fresh password and stops it at the end
  of the session. The server also stops by itself if this pytest process dies (``--watch-pid``).
* Without Java or Maven, or if the build/start fails, tests that use the fixture are skipped with
  the reason, except under CI (``CI=true``), where they fail: CI must test against real Neo4j.

The password is wrapped so that its ``repr`` is ``'***'``: assertion messages, ``--showlocals``
and a printed fixture value do not reveal it, while the driver still receives the real string.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NEO4J_SERVER = Path(__file__).resolve().parents[1] / ".ci" / "neo4j" / "neo4j-server"


class _Secret(str):
    """A str whose repr hides its value (the Neo4j password)."""

    def __repr__(self) -> str:
        return "'***'"


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere; never returns."""
    reason = f"Neo4j test server unavailable: {reason}"
    if _on_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the server script with this interpreter (so its Bolt check can use the neo4j driver)."""
    return subprocess.run([sys.executable, str(NEO4J_SERVER), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _stop(state_file: str) -> None:
    if Path(state_file).exists():
        _run("stop", "--state", state_file, timeout=120)


@pytest.fixture(scope="session")
def neo4j_env():
    """``{"uri", "user", "password"}`` of a running Neo4j 5 server (see the module docstring)."""
    if os.environ.get("NEO4J_URI"):
        if "NEO4J_PASSWORD" not in os.environ:
            _unavailable("NEO4J_URI is set but NEO4J_PASSWORD is not")
        yield {"uri": os.environ["NEO4J_URI"], "user": os.environ.get("NEO4J_USER", "neo4j"),
               "password": _Secret(os.environ["NEO4J_PASSWORD"])}
        return

    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        _unavailable(f"{' and '.join(missing)} not found on PATH; install Java 17+ and Maven 3.8+ "
                     "(the server comes from Maven Central) or set NEO4J_URI/NEO4J_PASSWORD")
    built = _run("build", timeout=1800)
    if built.returncode != 0:
        _unavailable(f"`{NEO4J_SERVER} build` failed:\n{built.stderr[-3000:]}")
    started = _run("start", "--json", "--watch-pid", str(os.getpid()), timeout=600)
    if started.returncode != 0:
        _unavailable(f"`{NEO4J_SERVER} start` failed:\n{started.stderr[-3000:]}")
    info = json.loads(started.stdout)
    atexit.register(_stop, info["state_file"])  # backup if session teardown never runs
    try:
        password = Path(info["password_file"]).read_text().strip()
        yield {"uri": info["uri"], "user": info["user"], "password": _Secret(password)}
    finally:
        _stop(info["state_file"])

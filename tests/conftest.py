"""Shared pytest fixtures.

``neo4j_env`` gives tests a real Neo4j 5.x Community server (see ``.ci/neo4j/neo4j-server``).

* If ``NEO4J_URI`` is set, that server is used with ``NEO4J_USER`` (default ``neo4j``) and
  ``NEO4J_PASSWORD``; nothing is started or stopped.
* Otherwise the session builds the server from Maven Central if needed (cached in ``~/.m2`` and
  ``.ci/neo4j/target``), starts it once on 127.0.0.1 with a fresh password and stops it at the end
  of the session. The server also stops by itself if this pytest process dies (``--watch-pid``).
* Without Java or Maven, or if the build/start fails, tests that use the fixture are skipped with
  the reason (and so count as NOT TESTED, below).

No test is skipped silently.  Every skip is a component that could not be had (a browser, a server, a
wheel); the session ends with a NOT TESTED summary listing them, and a non-zero exit status, unless
``GENTWIN_ALLOW_SKIP=1`` says the user accepts it.  Under CI (``CI=true``) that opt-out is ignored:
CI tests everything or fails.  ``make test`` installs every executable the tests look up
(``.ci/system-deps``; ``tests/test_install.py`` keeps that list complete).

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


def _allow_skip() -> bool:
    return not _on_ci() and os.environ.get("GENTWIN_ALLOW_SKIP", "").strip() == "1"


_NOT_TESTED: list[tuple[str, str]] = []


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_runtest_logreport(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _NOT_TESTED.append((report.nodeid, _skip_reason(report)))


def pytest_collectreport(report) -> None:
    if report.skipped:
        _NOT_TESTED.append((report.nodeid or "<collection>", _skip_reason(report)))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _NOT_TESTED:
        return
    tr = terminalreporter
    verdict = "accepted (GENTWIN_ALLOW_SKIP=1)" if _allow_skip() else "the run FAILS"
    tr.write_sep("!", f"NOT TESTED: {len(_NOT_TESTED)} test(s) skipped; {verdict}", red=True, bold=True)
    for nodeid, reason in _NOT_TESTED:
        tr.write_line(f"NOT TESTED  {nodeid}: {reason}", red=True)
    tr.write_line("`make test` installs every component (.ci/system-deps, the Neo4j build); "
                  "set GENTWIN_ALLOW_SKIP=1 (outside CI) to accept a partial run.")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _NOT_TESTED and not _allow_skip() and session.exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(scope="session", autouse=True)
def _no_user_step_cache():
    """Tests never reuse the user's step cache: it is off in this process and every process a test starts
    (a test that wants one makes its own; the converted backbone is still shared)."""
    keep = {name: os.environ.get(name) for name in ("GENTWIN_NO_CACHE",)}
    os.environ["GENTWIN_NO_CACHE"] = "1"
    yield
    for name, value in keep.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _unavailable(reason: str) -> None:
    """Skip (counted as NOT TESTED, which fails the run unless accepted); never returns."""
    pytest.skip(f"Neo4j test server unavailable: {reason}")


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

    missing = [tool for tool, path in (("java", shutil.which("java")), ("mvn", shutil.which("mvn"))) if path is None]
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


# --- a toy twin-modelling task shared by the training and Fig. 6 / Fig. 7 tests ------------------


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, above all on a shared machine; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_ds():
    """Small enough for the tiny model to memorise in about a second: 4 sensors, 2 gateways, 11 relations."""
    from gentwin.config import TopologyConfig
    from gentwin.topology import generate_dataset

    return generate_dataset(TopologyConfig(n_services=1, n_gateways=2, n_sensors=4, n_gateway_links=1,
                                           n_instances=6, split=(0.5, 0.25, 0.25)))


@pytest.fixture(scope="session")
def toy_config():
    """``toy_config(**overrides)``: Table III's learning rate and discount factor, plain SGD, batches of 4."""
    from gentwin.config import resolve

    return lambda **over: resolve("quick", **{"batch_size": 4, **over}).training


@pytest.fixture
def tiny_adapted():
    """The on-the-fly tiny LLaMA with Twin Adapters (bottleneck 16) on its top two layers."""
    from gentwin.adapter import TwinAdapterConfig, add_twin_adapters
    from gentwin.llm import tiny_backbone

    model, tok = tiny_backbone(seed=0)
    add_twin_adapters(model, TwinAdapterConfig(bottleneck=16, n_top=2))
    return model, tok


# --- tiny chapters for the runner and command-line tests ---------------------------------------

#: the front matter of a jupytext MyST chapter
CHAPTER_FRONT = (
    "---\njupytext:\n  text_representation: {extension: .md, format_name: myst}\n"
    "kernelspec: {display_name: Python 3, language: python, name: python3}\n---\n\n"
)


def _write_chapter(path: Path, *cells: tuple[str, str]) -> Path:
    parts = [CHAPTER_FRONT]
    for tags, source in cells:
        head = f":tags: [{tags}]\n" if tags else ""
        parts.append(f"```{{code-cell}} ipython3\n{head}{source}\n```\n\n")
    path.write_text("".join(parts), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def write_chapter():
    """``write_chapter(path, (tags, source), ...)``: a jupytext MyST chapter of code cells; returns ``path``."""
    return _write_chapter


@pytest.fixture(scope="session")
def chapter_front() -> str:
    return CHAPTER_FRONT

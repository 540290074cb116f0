"""The fresh-machine set-up: every executable the tests look up is installed by `make test`, and no test
is skipped silently."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_DEPS = ROOT / ".ci" / "system-deps"
WHICH_CALL = re.compile(r"\bwhich\(\s*([^)]*)\)")


def _system_deps_table() -> dict[str, str]:
    text = SYSTEM_DEPS.read_text()
    block = re.search(r'^EXECUTABLES="\n(.*?)^"', text, re.MULTILINE | re.DOTALL)
    assert block, ".ci/system-deps has no EXECUTABLES table"
    return dict(line.split() for line in block.group(1).splitlines() if line.strip())


def _executables_looked_up() -> dict[str, list[str]]:
    """Executable name -> test files that look it up with shutil.which("...")."""
    found: dict[str, list[str]] = {}
    for path in sorted(ROOT.joinpath("tests").rglob("*.py")):
        if path.name == Path(__file__).name:  # this file's patterns are not look-ups
            continue
        for arg in WHICH_CALL.findall(path.read_text(encoding="utf-8")):
            literal = re.fullmatch(r"""\s*["']([A-Za-z0-9_.+-]+)["']\s*""", arg)
            # a computed name could not be checked against the table: insist on literals
            assert literal, f"{path.relative_to(ROOT)}: which({arg}) must name the executable literally"
            found.setdefault(literal.group(1), []).append(path.name)
    return found


def test_system_deps_installs_every_executable_the_tests_look_up():
    table = _system_deps_table()
    looked_up = _executables_looked_up()
    # the scan itself must see the known look-ups, or it is checking nothing
    assert {"chromium", "chromedriver", "java", "mvn", "actionlint"} <= set(looked_up), looked_up
    missing = {exe: files for exe, files in looked_up.items() if exe not in table}
    assert not missing, f"looked up by tests but not installed by .ci/system-deps: {missing}"


def test_system_deps_table_maps_the_driver_to_its_own_package():
    # Debian ships chromedriver apart from chromium: installing chromium alone left the driver out
    table = _system_deps_table()
    assert table["chromedriver"] == "apt:chromium-driver"
    assert table["chromium"] == "apt:chromium"


def test_make_test_runs_system_deps_before_pytest():
    if shutil.which("make") is None:
        pytest.fail("make is needed for the README's set-up commands")
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "test"], capture_output=True, text=True, check=True).stdout
    assert ".ci/system-deps" in dry
    assert dry.index(".ci/system-deps") < dry.index("-m pytest")


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Set-up: two commands\n.*?```bash\n(.*?)```", readme, re.DOTALL)
    assert block, "README has no set-up block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2, commands
    test_command = next(c for c in commands if "test" in c)
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [test_command]


_SKIPPING_TEST = '''
import pytest

def test_needs_a_browser():
    pytest.skip("chromium not installed")

def test_fine():
    assert 1 + 1 == 2
'''


def _run_skipping_session(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    shutil.copy2(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_skipping.py").write_text(_SKIPPING_TEST)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "GENTWIN_ALLOW_SKIP")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env={**clean, **env}, capture_output=True, text=True)


@pytest.mark.parametrize(("env", "exit_code"), [
    ({}, 1),                                       # a newcomer's run: loud and red
    ({"GENTWIN_ALLOW_SKIP": "1"}, 0),              # explicit opt-out
    ({"CI": "true", "GENTWIN_ALLOW_SKIP": "1"}, 1),  # CI never accepts a partial run
])
def test_a_skipped_test_is_reported_as_not_tested(tmp_path, env, exit_code):
    proc = _run_skipping_session(tmp_path, **env)
    assert proc.returncode == exit_code, proc.stdout
    assert "NOT TESTED" in proc.stdout
    assert "test_needs_a_browser: chromium not installed" in proc.stdout


def test_a_full_run_prints_no_not_tested_banner(tmp_path):
    shutil.copy2(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and "NOT TESTED" not in proc.stdout, proc.stdout

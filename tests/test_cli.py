"""The `gentwin` command line: checked parameters, atomic outputs, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gentwin(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gentwin", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=600)


@pytest.fixture()
def book_root(tmp_path: Path) -> Path:
    """A copy of the book sources, so the user's book/executed is never touched."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("executed"))
    return tmp_path


def _outputs_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "\n".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        + "".join(o.get("data", {}).get("text/html", ""))
        for c in nb["cells"] for o in c.get("outputs", [])
    )


def test_run_with_a_parameter_and_rejections_leave_the_page_intact(book_root: Path) -> None:
    out = book_root / "book" / "executed" / "setup.ipynb"
    done = gentwin("run", "notebooks/setup.md", "-p", "n_sensors", "30", "--root", str(book_root))
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.is_file()
    nb = json.loads(out.read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "n_sensors = 30" in "".join(injected[0]["source"])
    before = out.read_bytes()

    for args, words in [
        (("-p", "n_sensors", "-5"), ["n_sensors", "-5"]),
        (("-p", "no_such_parameter", "1"), ["no_such_parameter"]),
        (("-p", "n_sensors", "abc"), ["n_sensors", "abc"]),
        (("-p", "band", "corrected"), ["band"]),  # a real config field, but not this page's parameter
    ]:
        rejected = gentwin("run", "notebooks/setup.md", *args, "--root", str(book_root))
        assert rejected.returncode == 2, (args, rejected.stderr)
        assert all(w in rejected.stderr for w in words), (args, rejected.stderr)
        assert out.read_bytes() == before  # the previous page is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["setup.ipynb"]  # no temporary files left


def test_a_failing_cell_fails_the_run_and_keeps_the_old_page(book_root: Path) -> None:
    src = book_root / "notebooks" / "broken.md"
    src.write_text(
        "---\njupytext:\n  text_representation: {extension: .md, format_name: myst}\n"
        "kernelspec: {display_name: Python 3, language: python, name: python3}\n---\n\n"
        "```{code-cell} ipython3\n:tags: [parameters]\nprofile = \"paper\"  # profile\n```\n\n"
        "```{code-cell} ipython3\nraise RuntimeError(\"cell exploded on purpose\")\n```\n"
    )
    old = book_root / "book" / "executed" / "broken.ipynb"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text("previous page")
    failed = gentwin("run", "notebooks/broken.md", "--root", str(book_root))
    assert failed.returncode == 1
    assert "cell exploded on purpose" in failed.stderr + failed.stdout
    assert old.read_text() == "previous page"


def test_params_lists_the_notebook_parameters() -> None:
    listed = gentwin("params", "notebooks/setup.md")
    assert listed.returncode == 0
    for name in ("profile", "n_sensors", "n_gateways", "data_seed"):
        assert name in listed.stdout


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("book", "--help"), ("params", "--help")])
def test_help_explains_itself(args) -> None:
    shown = gentwin(*args)
    assert shown.returncode == 0 and "usage: gentwin" in shown.stdout and len(shown.stdout) > 200

"""The `gentwin` command line and the notebook runner behind it (gentwin.notebook).

Checked parameters, atomic outputs, clear errors.  Every run happens in a copy of
the book sources (``book_root``), so the user's own ``book/executed`` is never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gentwin import notebook
from gentwin.notebook import (
    ExecutionError,
    NotebookError,
    ParameterError,
    check_parameters,
    parse_parameters_source,
    read_parameters,
    toc_notebooks,
)

ROOT = Path(__file__).resolve().parents[1]
FRONT = (
    "---\njupytext:\n  text_representation: {extension: .md, format_name: myst}\n"
    "kernelspec: {display_name: Python 3, language: python, name: python3}\n---\n\n"
)


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


def _write_notebook(path: Path, *cells: tuple[str, str]) -> Path:
    """A jupytext MyST notebook from (tags, source) code cells."""
    parts = [FRONT]
    for tags, source in cells:
        head = f":tags: [{tags}]\n" if tags else ""
        parts.append(f"```{{code-cell}} ipython3\n{head}{source}\n```\n\n")
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _glued(nb: dict) -> dict[str, str]:
    """Values published with myst_nb.glue, by key (their text/plain form)."""
    out = {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                out[name] = "".join(o["data"]["application/papermill.record/text/plain"])
    return out


def _stdout(nb: dict) -> str:
    return "\n".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


# ---------------------------------------------------------------------------
# gentwin run: the acceptance case and its rejections
# ---------------------------------------------------------------------------


def test_run_with_30_sensors_writes_that_page(book_root: Path) -> None:
    out = book_root / "book" / "executed" / "setup.ipynb"
    done = gentwin("run", "notebooks/setup.md", "-p", "n_sensors", "30", "--root", str(book_root))
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(out) in done.stdout
    nb = json.loads(out.read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "n_sensors = 30" in "".join(injected[0]["source"])
    assert "source_hidden" not in json.dumps(injected[0]["metadata"])  # shown on the page
    # the page was computed with 30 sensors and the paper profile's 50 gateways and 30 fog links
    glued = _glued(nb)
    assert float(glued["dataset_device_nodes"]) == 30 + 50
    assert float(glued["dataset_relations"]) == 2 * 30 + 50 + 30
    assert float(glued["dataset_instances"]) == 1000
    assert "gateways without any sensor: 20" in _stdout(nb)
    meta = nb["metadata"]["papermill"]
    assert meta["parameters"] == {"n_sensors": 30}
    assert meta["input_path"] == "notebooks/setup.md" and meta["output_path"] == "book/executed/setup.ipynb"
    assert meta["environment_variables"] == {}
    assert os.environ["PATH"] not in out.read_text()  # no environment leaks into the page
    assert sorted(p.name for p in out.parent.iterdir()) == ["setup.ipynb"]  # no temporary files left


@pytest.mark.parametrize(
    "args, words",
    [
        (("-p", "n_sensors", "-5"), ["n_sensors = -5", ">= 1"]),
        (("-p", "no_such_parameter", "1"), ["unknown parameter 'no_such_parameter'", "known parameters", "n_sensors"]),
        (("-p", "n_sensors", "abc"), ["n_sensors = 'abc'", "integer"]),
        (("-p", "n_sensors", "2.5"), ["n_sensors = '2.5'", "integer"]),
        (("-p", "p_inactive", "nan"), ["p_inactive = nan", "finite"]),
        (("-p", "p_inactive", "-inf"), ["p_inactive = -inf"]),
        (("-p", "profile", "huge"), ["profile = 'huge'", "'paper'"]),
        (("-p", "n_gateways", "2"), ["n_gateways = 2", "n_services = 3"]),  # checked together with the profile
        (("-p", "band", "corrected"), ["band", "does not use it"]),  # a config field, not this page's
        (("-p", "n_sensors", "30", "-p", "n_sensors", "40"), ["n_sensors", "twice"]),
        (("-p", "n_sensors"), ["-p needs a NAME and a VALUE"]),
        (("--root", "/nonexistent/gentwin-root"), ["--root", "_toc.yml"]),
    ],
)
def test_rejected_run_exits_2_and_changes_nothing(book_root: Path, args, words) -> None:
    out = book_root / "book" / "executed" / "setup.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b'{"previous": "page", "bytes": [1, 2, 3]}\n')
    before = out.read_bytes()
    cmd = ["run", "notebooks/setup.md", *args]
    if "--root" not in args:
        cmd += ["--root", str(book_root)]
    rejected = gentwin(*cmd)
    assert rejected.returncode == 2, (args, rejected.stderr)
    assert rejected.stderr.startswith("error: ")
    assert all(w in rejected.stderr for w in words), (args, rejected.stderr)
    assert "Traceback" not in rejected.stderr
    assert out.read_bytes() == before  # the previous page is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["setup.ipynb"]


def test_a_failing_cell_fails_the_run_and_keeps_the_old_page(book_root: Path) -> None:
    src = _write_notebook(
        book_root / "notebooks" / "broken.md",
        ("parameters", 'profile = "paper"  # profile'),
        ("", "x = 1"),
        ("", 'raise RuntimeError("cell exploded on purpose")'),
    )
    old = book_root / "book" / "executed" / "broken.ipynb"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text("previous page")
    failed = gentwin("run", str(src), "--root", str(book_root))
    assert failed.returncode == 1
    assert "RuntimeError" in failed.stderr and "cell exploded on purpose" in failed.stderr
    assert old.read_text() == "previous page"
    assert sorted(p.name for p in old.parent.iterdir()) == ["broken.ipynb"]


# ---------------------------------------------------------------------------
# gentwin params, --help
# ---------------------------------------------------------------------------


def test_params_lists_names_types_ranges_and_defaults() -> None:
    listed = gentwin("params", "notebooks/setup.md")
    assert listed.returncode == 0, listed.stderr
    for name in read_parameters(ROOT / "notebooks" / "setup.md"):
        assert f"  {name}  (" in listed.stdout
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("  n_sensors  ("))
    assert "int; >= 1; profile defaults: paper 250, quick " in line and "the paper's value: 250" in line
    assert "number of IoT sensors" in listed.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (("--help",), ["run", "book", "params", "examples", "exit codes"]),
        (("run", "--help"), ["-p NAME VALUE", "notebooks/setup.md -p n_sensors 30", "--root"]),
        (("book", "--help"), ["--profile", "quick", "-W -n --keep-going"]),
        (("params", "--help"), ["NOTEBOOK", "range"]),
    ],
)
def test_help_explains_itself(args, words) -> None:
    shown = gentwin(*args)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: gentwin")
    assert all(w in shown.stdout for w in words), shown.stdout


def test_no_command_prints_help_and_exits_2() -> None:
    shown = gentwin()
    assert shown.returncode == 2 and "commands" in shown.stdout


def test_unknown_book_profile_is_rejected_by_argparse(book_root: Path) -> None:
    rejected = gentwin("book", "--profile", "huge", "--root", str(book_root))
    assert rejected.returncode == 2 and "huge" in rejected.stderr
    assert not (book_root / "book" / "executed").exists()


# ---------------------------------------------------------------------------
# The runner's library functions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, message",
    [
        ("import os", "line 1: the parameters cell may hold only assignments"),
        ("a = 1\nb = len('x')", "line 2: b = len('x'): the value must be a literal"),
        ("a = 1\na = 2", "line 2: parameter 'a' is assigned twice"),
        ("a, b = 1, 2", "only assignments"),
        ("a = (1,", "not valid Python"),
    ],
)
def test_parameters_cell_must_hold_only_literal_assignments(source, message) -> None:
    with pytest.raises(NotebookError, match="^" + re.escape(f"nb.md, {message}") if "line" in message else message):
        parse_parameters_source(source, where="nb.md")


def test_read_parameters_reports_the_line_of_the_file(tmp_path: Path) -> None:
    src = _write_notebook(tmp_path / "bad.md", ("parameters", 'profile = "paper"  # p\nn_sensors = print(1)'))
    text = src.read_text().splitlines()
    line = text.index("n_sensors = print(1)") + 1
    with pytest.raises(NotebookError, match=rf"bad.md, line {line}: n_sensors = print\(1\)"):
        read_parameters(src)


def test_read_parameters_of_the_setup_chapter() -> None:
    params = read_parameters(ROOT / "notebooks" / "setup.md")
    assert params["profile"][0] == "paper"
    assert {"n_services", "n_gateways", "n_sensors", "n_gateway_links", "n_instances", "p_inactive",
            "data_seed"} <= set(params)
    assert all(default is None for name, (default, _) in params.items() if name != "profile")
    assert all(comment for _, comment in params.values())  # every parameter is explained


def test_notebook_without_or_with_two_parameter_cells(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match="no cell is tagged `parameters`"):
        read_parameters(_write_notebook(tmp_path / "none.md", ("", "x = 1")))
    with pytest.raises(NotebookError, match="2 cells are tagged `parameters`"):
        read_parameters(_write_notebook(tmp_path / "two.md", ("parameters", "a = 1"), ("parameters", "b = 2")))
    with pytest.raises(NotebookError, match="does not exist"):
        read_parameters(tmp_path / "missing.md")


def test_check_parameters_types_values_and_rejects_notebook_bugs(tmp_path: Path) -> None:
    setup = ROOT / "notebooks" / "setup.md"
    assert check_parameters(setup, {"n_sensors": "30", "p_inactive": "0.2", "profile": "quick"}) == {
        "n_sensors": 30, "p_inactive": 0.2, "profile": "quick"}
    assert check_parameters(setup, {"n_sensors": 30}) == {"n_sensors": 30}
    # values are checked together with the chosen profile's other values: quick has 24 + 6 device nodes
    with pytest.raises(ParameterError, match=r"n_instances = 10: must be >= the number of device nodes 30"):
        check_parameters(setup, {"profile": "quick", "n_instances": "10"})
    assert check_parameters(setup, {"profile": "quick", "n_instances": "30"})["n_instances"] == 30
    stray = _write_notebook(tmp_path / "stray.md", ("parameters", 'profile = "paper"  # p\nwidth = 3  # not a field'))
    with pytest.raises(ParameterError, match="declares width, which is not a gentwin.config field"):
        check_parameters(stray, {})


def test_toc_notebooks_follow_the_toc_and_skip_static_pages(tmp_path: Path) -> None:
    (tmp_path / "notebooks").mkdir()
    for name in ("b", "a", "c"):
        (tmp_path / "notebooks" / f"{name}.md").write_text(FRONT)
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: One\n    chapters:\n      - file: book/executed/b\n        sections:\n"
        "          - file: book/executed/a.ipynb\n      - file: book/errata\n"
        "  - caption: Two\n    chapters:\n      - file: book/executed/c\n"
    )
    assert [p.name for p in toc_notebooks(tmp_path)] == ["b.md", "a.md", "c.md"]
    (tmp_path / "notebooks" / "a.md").unlink()
    with pytest.raises(NotebookError, match="sources do not exist: notebooks/a.md"):
        toc_notebooks(tmp_path)


def test_the_books_toc_has_a_source_for_setup() -> None:
    assert ROOT / "notebooks" / "setup.md" in toc_notebooks(ROOT)


def test_build_book_checks_everything_before_running(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="profile = 'huge'"):
        notebook.build_book(ROOT, "huge", build=False)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/executed/nope\n")
    with pytest.raises(NotebookError, match="notebooks/nope.md"):
        notebook.build_book(tmp_path, "quick", build=False)
    assert not (tmp_path / "book").exists()


def test_execute_injects_tuples_as_tuples_and_replaces_atomically(tmp_path: Path) -> None:
    src = _write_notebook(
        tmp_path / "t.md",
        ("parameters", 'profile = "paper"  # p\nsplit = None  # s'),
        ("", "assert isinstance(split, tuple), type(split)\nprint('split is', split)"),
    )
    out = tmp_path / "book" / "executed" / "t.ipynb"
    params = check_parameters(src, {"split": "0.6,0.2,0.2"})
    assert params == {"split": (0.6, 0.2, 0.2)}
    notebook.execute(src, out, params, cwd=tmp_path)
    nb = json.loads(out.read_text())
    assert "split is (0.6, 0.2, 0.2)" in _stdout(nb)
    first = out.read_bytes()
    with pytest.raises(ExecutionError, match="AssertionError"):
        notebook.execute(src, out, {"split": 3}, cwd=tmp_path)
    assert out.read_bytes() == first
    assert [p.name for p in out.parent.iterdir()] == ["t.ipynb"]


def test_book_no_execute_keeps_a_re_run_page(book_root: Path) -> None:
    out = book_root / "book" / "executed" / "setup.ipynb"
    assert gentwin("run", "notebooks/setup.md", "-p", "n_sensors", "30", "--root", str(book_root)).returncode == 0
    before = out.read_bytes()
    kept = gentwin("book", "--no-execute", "--no-build", "--root", str(book_root))
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["setup.ipynb"]  # nothing else was executed

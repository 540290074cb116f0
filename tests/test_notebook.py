"""gentwin.notebook: the parameters cell, the parameter check, execution, the TOC and glue diffs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from gentwin import notebook
from gentwin.files import umask
from gentwin.notebook import (
    ExecutionError,
    NotebookError,
    ParameterError,
    check_parameters,
    diff_glued,
    execute,
    parse_parameters_source,
    read_parameters,
    toc_notebooks,
)

ROOT = Path(__file__).resolve().parents[1]


def _stdout(nb: dict) -> str:
    return "\n".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


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


def test_read_parameters_reports_the_line_of_the_file(tmp_path: Path, write_chapter) -> None:
    src = write_chapter(tmp_path / "bad.md", ("parameters", 'profile = "paper"  # p\nn_sensors = print(1)'))
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


def test_notebook_without_or_with_two_parameter_cells(tmp_path: Path, write_chapter) -> None:
    with pytest.raises(NotebookError, match="no cell is tagged `parameters`"):
        read_parameters(write_chapter(tmp_path / "none.md", ("", "x = 1")))
    with pytest.raises(NotebookError, match="2 cells are tagged `parameters`"):
        read_parameters(write_chapter(tmp_path / "two.md", ("parameters", "a = 1"), ("parameters", "b = 2")))
    with pytest.raises(NotebookError, match="does not exist"):
        read_parameters(tmp_path / "missing.md")


def test_check_parameters_types_values_and_rejects_notebook_bugs(tmp_path: Path, write_chapter) -> None:
    setup = ROOT / "notebooks" / "setup.md"
    assert check_parameters(setup, {"n_sensors": "30", "p_inactive": "0.2", "profile": "quick"}) == {
        "n_sensors": 30, "p_inactive": 0.2, "profile": "quick"}
    assert check_parameters(setup, {"n_sensors": 30}) == {"n_sensors": 30}
    # values are checked together with the chosen profile's other values: quick has 24 + 6 device nodes
    with pytest.raises(ParameterError, match=r"n_instances = 10: must be >= the number of device nodes 30"):
        check_parameters(setup, {"profile": "quick", "n_instances": "10"})
    assert check_parameters(setup, {"profile": "quick", "n_instances": "30"})["n_instances"] == 30
    stray = write_chapter(tmp_path / "stray.md", ("parameters", 'profile = "paper"  # p\nwidth = 3  # not a field'))
    with pytest.raises(ParameterError, match="declares width, which is not a gentwin.config field"):
        check_parameters(stray, {})


def test_toc_notebooks_follow_the_toc_and_skip_static_pages(tmp_path: Path, chapter_front) -> None:
    (tmp_path / "notebooks").mkdir()
    for name in ("b", "a", "c"):
        (tmp_path / "notebooks" / f"{name}.md").write_text(chapter_front)
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


def test_execute_injects_tuples_as_tuples_and_replaces_atomically(tmp_path: Path, write_chapter) -> None:
    src = write_chapter(
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


def test_papermill_and_the_cell_must_agree_on_the_names() -> None:
    # papermill's inspection skips a line with two "=" (it cannot tell the value from the name)
    with pytest.raises(ParameterError, match=r"papermill reads the parameters a but the cell assigns a, b"):
        parse_parameters_source('a = 1\nb = "x=y"', where="nb.md")
    # multi-line literals and annotations are read as papermill reads them
    assert parse_parameters_source("rates = (0.2,\n         0.4)  # r\nn: int = 3  # count") == {
        "rates": ((0.2, 0.4), "r"), "n": (3, "count")}


def test_a_file_that_is_not_a_chapter_is_a_parameter_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# A read-me\n\nNo code here.\n")
    with pytest.raises(ParameterError, match="no cell is tagged `parameters`"):
        read_parameters(readme)
    (tmp_path / "page.ipynb").write_text("{}")
    with pytest.raises(ParameterError, match="not a chapter"):
        read_parameters(tmp_path / "page.ipynb")


def test_a_malformed_toc_is_named(tmp_path: Path) -> None:
    (tmp_path / "_toc.yml").write_text("format: jb-book\nchapters: 3\n")
    with pytest.raises(NotebookError, match="_toc.yml: not a Jupyter Book table of contents .*root"):
        toc_notebooks(tmp_path)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: [1\n")
    with pytest.raises(NotebookError, match="not valid YAML"):
        toc_notebooks(tmp_path)


def test_execute_writes_with_the_umask_reports_cells_and_uses_ipc(tmp_path: Path, write_chapter) -> None:
    src = write_chapter(
        tmp_path / "tiny.md",
        ("parameters", 'profile = "paper"  # p'),
        ("", "import os\nprint(sorted(p for p in os.listdir('.') if p.startswith('kernel')))"),
    )
    out = tmp_path / "book" / "executed" / "tiny.ipynb"
    lines: list[str] = []
    old = os.umask(0o027)
    try:
        assert umask() == 0o027
        notebook.execute(src, out, {}, cwd=tmp_path, log=lines.append)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640  # 0o666 & ~umask, never mkstemp's 0o600
    assert lines == ['[tiny] cell 1/2: profile = "paper"  # p', "[tiny] cell 2/2: import os"]
    assert "[]" in _stdout(json.loads(out.read_text()))  # no IPC socket files in the working folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book", "tiny.md"]


# ---------------------------------------------------------------------------
# diff_glued on hand-made executed notebooks
# ---------------------------------------------------------------------------


def _glue_output(name: str, text: str) -> dict:
    return {"output_type": "display_data", "metadata": {"scrapbook": {"name": name,
            "mime_prefix": "application/papermill.record/"}},
            "data": {"application/papermill.record/text/plain": text}}


def _executed(folder: Path, stem: str, values: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cell = {"cell_type": "code", "metadata": {}, "source": "", "execution_count": 1,
            "outputs": [_glue_output(k, v) for k, v in values.items()]}
    nb = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (folder / f"{stem}.ipynb").write_text(json.dumps(nb))


def test_diff_glued_lists_changed_added_and_removed_names(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    _executed(old, "setup", {"relations": "580.0", "gain": "0.125", "fig8_ms": "3.2", "gone": "1"})
    _executed(new, "setup", {"relations": "580.0", "gain": "0.12500000000000003", "fig8_ms": "4.7"})
    _executed(new, "fig6", {"added": "'x'"})
    assert diff_glued(old, new) == [
        ("added", None, "'x'"), ("fig8_ms", "3.2", "4.7"), ("gain", "0.125", "0.12500000000000003"),
        ("gone", "1", None)]
    assert diff_glued(old, new, ignore=r"_ms$|^gone$|^added$") == [("gain", "0.125", "0.12500000000000003")]
    assert diff_glued(old, old) == []


def test_diff_glued_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="old_dir = .*not a folder"):
        diff_glued(tmp_path / "missing", tmp_path)
    with pytest.raises(ParameterError, match=r"ignore = '\(': not a regular expression"):
        diff_glued(tmp_path, tmp_path, ignore="(")


def test_progress_bars_never_land_on_the_page(tmp_path: Path, write_chapter, monkeypatch) -> None:
    # ipykernel forwards what the kernel process writes to its stderr into the cell (delivered when the
    # next cell runs); the runner turns that off so gentwin.progress bars stay on the terminal.
    # ipykernel never forwards under pytest (it looks for PYTEST_CURRENT_TEST): hide it from the kernel.
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    src = write_chapter(
        tmp_path / "bars.md",
        ("parameters", 'profile = "paper"  # p'),
        ("", "import time\nfrom gentwin.progress import progress\nprint('before the bars')\n"
             "for _ in progress(range(5), desc='bars'):\n    time.sleep(0.5)"),
        ("", "print('next cell')"),
    )
    out = execute(src, tmp_path / "book" / "executed" / "bars.ipynb", {}, cwd=tmp_path)
    streams = [(o.get("name"), "".join(o.get("text", ""))) for c in json.loads(out.read_text())["cells"]
               for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    assert streams == [("stdout", "before the bars\n"), ("stdout", "next cell\n")]


def test_a_dependency_importing_tqdm_auto_leaves_no_warning_on_the_page(tmp_path: Path, write_chapter) -> None:
    # transformers' hub client imports tqdm.auto; without ipywidgets that warned "IProgress not found"
    src = write_chapter(tmp_path / "hub.md", ("parameters", 'profile = "paper"  # p'),
                        ("", "import tqdm.auto\nprint('imported')"))
    out = execute(src, tmp_path / "book" / "executed" / "hub.ipynb", {}, cwd=tmp_path)
    streams = [(o.get("name"), "".join(o.get("text", ""))) for c in json.loads(out.read_text())["cells"]
               for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    assert streams == [("stdout", "imported\n")]

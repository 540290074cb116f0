"""The audit layer reads what notebooks published and what code and tests declare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gentwin import audit
from gentwin.reference import PAPER_VALUES, PaperValue, by_key


def _glue_output(name: str, text: str) -> dict:
    """An output cell exactly as myst_nb.glue(name, value, display=False) writes it."""
    return {
        "output_type": "display_data",
        "data": {audit.GLUE_PREFIX + "text/plain": text},
        "metadata": {"scrapbook": {"name": name, "mime_prefix": audit.GLUE_PREFIX}},
    }


def _write_nb(path: Path, outputs: list[dict]) -> None:
    nb = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": outputs, "execution_count": 1}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


def test_glued_values_reads_numbers_and_text(tmp_path: Path) -> None:
    _write_nb(tmp_path / "fig6.ipynb", [_glue_output("fig6_gain_pct", "12.5"), _glue_output("fig6_gain_pct_note", "'short'")])
    _write_nb(tmp_path / "setup.ipynb", [_glue_output("dataset_relations", "580")])
    got = audit.glued_values(tmp_path)
    assert got["fig6_gain_pct"] == {"value": 12.5, "text": "12.5", "notebook": "fig6"}
    assert got["fig6_gain_pct_note"]["value"] == "short"
    assert got["dataset_relations"]["value"] == 580


def test_glued_values_rejects_a_key_published_twice(tmp_path: Path) -> None:
    _write_nb(tmp_path / "a.ipynb", [_glue_output("k", "1")])
    _write_nb(tmp_path / "b.ipynb", [_glue_output("k", "2")])
    with pytest.raises(ValueError, match="'k' is published twice"):
        audit.glued_values(tmp_path)


def test_real_glue_output_format_is_what_we_parse() -> None:
    # the format above must match myst_nb's own glue, or the comparison page would read nothing
    from IPython.core.formatters import format_display_data
    import myst_nb.ext.glue as glue_mod

    assert glue_mod.GLUE_PREFIX == audit.GLUE_PREFIX
    bundle, _ = format_display_data(0.25)
    assert bundle["text/plain"] == "0.25"


# Rows built here, not taken from gentwin.reference, so the rule is pinned whatever margins the paper rows get.
VALUE = PaperValue("v", "a share", 99.8, "99.8", "%", "T", "nb", "value", 0.05, "one decimal")
EFFECT = PaperValue("e", "a gain", 19.0, "19 %", "%", "F", "nb", "effect", 5.0, "one run")
WIDE_EFFECT = PaperValue("w", "a gain", 1.0, "1 %", "%", "F", "nb", "effect", 50.0, "a margin wider than any CI")
DIRECTION = PaperValue("d", "A beats B", None, "more", "", "F", "nb", "direction", source="e")
INPUT = PaperValue("i", "a count", 580, "580", "", "III.B", "nb", "input")
SHAPE = PaperValue("s", "a curve", None, "falls", "", "F", "nb", "not comparable")


@pytest.mark.parametrize(
    "row, ours, low, high, n, expected",
    [
        (VALUE, 99.8, 99.76, 99.84, 5, "reproduced"),  # [99.76, 99.84] inside [99.75, 99.85]
        (VALUE, 99.8, 99.75, 99.85, 20, "reproduced"),  # the edges of paper ± δ count as inside
        (VALUE, 99.2, 99.0, 99.5, 5, "differs"),  # wholly below 99.75
        (VALUE, 99.95, 99.9, 100.0, 5, "differs"),  # wholly above 99.85
        (VALUE, 99.8, 99.7, 99.9, 5, "inconclusive"),  # straddles both edges: neither inside nor outside
        (VALUE, 99.78, 99.7, 99.8, 5, "inconclusive"),  # straddles the lower edge
        (VALUE, 99.8, 99.79, 99.81, 3, "inconclusive"),  # inside, but 3 seeds
        (VALUE, 99.8, 99.79, 99.81, 4, "inconclusive"),  # one short of MIN_SEEDS
        (VALUE, 99.8, 99.79, 99.81, None, "inconclusive"),  # seeds unknown
        (VALUE, 99.8, None, None, 5, "inconclusive"),  # no interval to judge by
        (EFFECT, 0.6, -37.7, 38.9, 5, "inconclusive"),  # the Fig. 6 case: CI contains 0
        (EFFECT, 0.6, -37.7, 38.9, 3, "inconclusive"),
        (EFFECT, 19.0, 16.0, 22.0, 5, "reproduced"),  # inside [14, 24]
        (EFFECT, 40.0, 30.0, 50.0, 5, "differs"),  # wholly above 24
        (WIDE_EFFECT, 0.6, -37.7, 38.9, 5, "inconclusive"),  # inside paper ± δ, but an effect whose CI contains 0
        (DIRECTION, 5.0, 2.0, 8.0, 5, "reproduced"),  # wholly above 0
        (DIRECTION, -5.0, -8.0, -2.0, 5, "differs"),  # wholly below 0
        (DIRECTION, 1.0, -1.0, 3.0, 5, "inconclusive"),  # contains 0
        (DIRECTION, 5.0, 2.0, 8.0, 3, "inconclusive"),  # right sign, 3 seeds
        (DIRECTION, None, None, None, None, "not run"),  # the value it needs is not glued yet
        (INPUT, 580.0, None, None, None, "set by input"),
        (INPUT, 57.0, None, None, None, "set by input"),  # an input is never a result, whatever its value
        (INPUT, None, None, None, None, "not run"),
        (SHAPE, 0.2, 0.1, 0.3, 5, "not comparable"),
        (VALUE, None, None, None, 5, "not run"),
    ],
)
def test_comparison_status(row, ours, low, high, n, expected) -> None:
    assert audit.comparison_status(row, ours, low, high, n_seeds=n) == expected


def test_comparison_status_rejects_an_inverted_interval() -> None:
    with pytest.raises(ValueError, match="low = 2.0 > high = 1.0"):
        audit.comparison_status(VALUE, 1.5, 2.0, 1.0, n_seeds=5)


def test_the_paper_rows_judge_the_fig6_case_inconclusive() -> None:
    # the paper-profile book once called this "reproduced" because 19 lies inside [-37.7, 38.9]
    for key in ("fig6_gain_pct", "fig6_pooling_helps"):
        assert audit.comparison_status(by_key(key), 0.6, -37.7, 38.9, n_seeds=5) == "inconclusive"
    assert audit.comparison_status(by_key("fig6_gain_pct"), 19.0, 18.0, 20.0, n_seeds=3) == "inconclusive"


def test_comparison_table_has_every_row_and_marks_missing_chapters(tmp_path: Path) -> None:
    _write_nb(tmp_path / "setup.ipynb", [_glue_output("dataset_relations", "580")])
    _write_nb(tmp_path / "fig6.ipynb", [_glue_output("fig6_gain_pct", "4.0"), _glue_output("fig6_gain_pct_low", "1.0"),
                                         _glue_output("fig6_gain_pct_high", "7.0"), _glue_output("fig6_gain_pct_n", "6")])
    _write_nb(tmp_path / "table4.ipynb", [_glue_output("table4_s1_small", "99.8"),
                                          _glue_output("table4_s1_small_low", "99.78"),
                                          _glue_output("table4_s1_small_high", "99.82")])
    table = audit.comparison_table(tmp_path).set_index("quantity")
    assert list(table.index) == [r.quantity for r in PAPER_VALUES]
    row = lambda key: table.loc[by_key(key).quantity]  # noqa: E731
    assert row("dataset_relations")["status"] == "set by input"
    assert row("fig6_gain_pct")["status"] == "differs"  # [1, 7] wholly below 19 - 5, with 6 seeds
    assert row("fig6_gain_pct")["95 % CI"] == "[1, 7]" and row("fig6_gain_pct")["seeds"] == 6
    assert row("fig6_gain_pct")["± δ"] == "5"
    assert row("fig6_pooling_helps")["status"] == "reproduced"  # the same CI, wholly above 0
    assert row("fig8_gap_low_pct")["status"] == "not run"
    assert row("fig8_gap_widens")["status"] == "not run"  # its glue key is not published yet
    assert "fig8_gap_widening_pct" in row("fig8_gap_widens")["why"]
    # no glued seed count and no settings: the seeds are unknown, so the row cannot be reproduced
    assert row("table4_s1_small")["status"] == "inconclusive" and row("table4_s1_small")["seeds"] == ""
    assert row("table4_s1_small")["± δ"] == "0.05"
    # with the settings the seed count comes from the row's config field (physical_seeds)
    from gentwin.config import resolve

    with_settings = audit.comparison_table(tmp_path, settings=resolve("paper", physical_seeds=5)).set_index("quantity")
    assert with_settings.loc[by_key("table4_s1_small").quantity, "status"] == "reproduced"
    assert with_settings.loc[by_key("table4_s1_small").quantity, "seeds"] == 5
    counts = audit.status_counts(table)
    assert list(counts) == list(audit.STATUSES) and sum(counts.values()) == len(PAPER_VALUES)


def test_every_reference_key_is_unique_and_named_for_its_notebook() -> None:
    keys = [r.key for r in PAPER_VALUES]
    assert len(keys) == len(set(keys))
    with pytest.raises(KeyError, match="no_such"):
        by_key("no_such")
    assert all(isinstance(r, PaperValue) and r.notebook for r in PAPER_VALUES)


def test_cited_equations_and_algorithm_lines() -> None:
    assert audit._cited("Priority values, eq. (3).\n\nMore.") == ((3,), ())
    assert audit._cited("Pools and weights (eqs. (4)-(6)).") == ((4, 5, 6), ())
    assert audit._cited("Runs Algorithm 1 lines 15-17.") == ((), (15, 16, 17))
    assert audit._cited("Nothing here.") == ((), ())
    # an equation cited deep in the body does not count: the opening lines are the declaration
    assert audit._cited("Summary.\n\n\n\n\n\n\nSee eq. (9).") == ((), ())


def test_equation_rows_are_implementations_not_the_experiments_analyses() -> None:
    refs = {r.qualname for r in audit.equation_references()}
    assert "gentwin.pooling.priority" in refs and "gentwin.metrics.l1_loss" in refs
    # tie_share cites eq. (3) but analyses the priorities; it is left off on purpose
    assert "eq. (3)" in __import__("gentwin.experiments.pools").experiments.pools.tie_share.__doc__
    assert not any(q.startswith("gentwin.experiments.") for q in refs)


def test_find_tests_using_reads_test_bodies(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(
        "from gentwin.pooling import priority\n"
        "def test_a():\n    assert priority(1) == 1\n"
        "def test_b():\n    import gentwin.pooling as p\n    p.presence([1])\n"
        "def helper():\n    priority(2)\n"
        "class TestC:\n    def test_c(self):\n        priority(3)\n"
    )
    found = audit.find_tests_using(["priority", "presence", "unused"], tmp_path)
    name = tmp_path.name
    assert found["priority"] == [f"{name}/test_x.py::test_a", f"{name}/test_x.py::TestC::test_c"]
    assert found["presence"] == [f"{name}/test_x.py::test_b"]
    assert found["unused"] == []


# --- the equations page's Markdown tables (moved from gentwin.experiments.equations) ---


from gentwin.audit import ALGORITHM_LINES, EQUATIONS, CodeRef  # noqa: E402

equations = audit

PRESENCE = CodeRef("gentwin.pooling.presence", "function", (1,), (3,), "")
MODEL = CodeRef("gentwin.adapter.TwinAdapter", "class", (8,), (), "")
TESTS = {"presence": ["tests/test_pooling.py::test_presence", "tests/test_x.py::TestP::test_two"], "TwinAdapter": []}


def test_equation_rows_link_code_and_tests_and_flag_the_missing() -> None:
    rows = equations.equations_markdown([PRESENCE, MODEL], TESTS).splitlines()
    assert rows[:2] == ["| equation | paper's form | implemented by | pinned by |", "|---|---|---|---|"]
    assert len(rows) == 2 + len(EQUATIONS)  # one implementation each for (1) and (8), the rest missing
    assert rows[2] == (f"| (1) | ${EQUATIONS[1]}$ | {{py:func}}`gentwin.pooling.presence` | "
                       "[`test_presence`](#test-tests-test-pooling-py--test-presence)<br>"
                       "[`TestP::test_two`](#test-tests-test-x-py--testp--test-two) |")
    assert rows[3] == f"| (2) | ${EQUATIONS[2]}$ | **not implemented yet** | |"
    assert rows[2 + 7] == f"| (8) | ${EQUATIONS[8]}$ | {{py:class}}`gentwin.adapter.TwinAdapter` | **none** |"


def test_algorithm_rows_point_equation_steps_to_the_equation_rows() -> None:
    rows = equations.algorithm_markdown([PRESENCE], TESTS).splitlines()
    assert len(rows) == 2 + len(ALGORITHM_LINES)
    assert rows[2] == f"| 1 | {ALGORITHM_LINES[1]} | **not implemented yet** |  |"
    assert rows[4].startswith(f"| 3 | {ALGORITHM_LINES[3]} | {{py:func}}`gentwin.pooling.presence` | ")
    with_eq = [line for line, step in ALGORITHM_LINES.items() if "eq." in step and line != 3]
    assert any("*see the equation rows*" in r for r in rows) == bool(with_eq)


def test_sources_include_each_test_once_by_its_object() -> None:
    text = equations.sources_markdown(TESTS)
    assert text.count("```{literalinclude} ../../tests/test_pooling.py") == 1
    assert "(test-tests-test-x-py--testp--test-two)=\n### `TestP::test_two`" in text
    assert ":pyobject: TestP.test_two" in text
    assert equations.sources_markdown({}) == "No test cites an equation yet."


# --- the comparison page's table, as MyST with links to each chapter and its provenance box ---


def _cells(line: str) -> list[str]:
    """The cells of one MyST table row (an escaped pipe stays inside its cell)."""
    import re

    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_comparison_markdown_links_every_row_to_its_chapter_and_provenance_box(tmp_path: Path) -> None:
    _write_nb(tmp_path / "fig6.ipynb", [_glue_output("fig6_gain_pct", "4.0"), _glue_output("fig6_gain_pct_low", "1.0"),
                                         _glue_output("fig6_gain_pct_high", "7.0"), _glue_output("fig6_gain_pct_n", "6")])
    table = audit.comparison_table(tmp_path)
    lines = audit.comparison_markdown(table).splitlines()
    header = _cells(lines[0])
    assert header[:3] == ["quantity", "where", "chapter"] and sorted(header) == sorted(table.columns)
    assert len(lines) == 2 + len(PAPER_VALUES)
    for row, line in zip(PAPER_VALUES, lines[2:]):
        cells = dict(zip(header, _cells(line)))
        assert cells["quantity"] == row.quantity.replace("_", "\\_")
        assert cells["chapter"] == (f"{{doc}}`{row.notebook} </book/executed/{row.notebook}>` "
                                    f"({{ref}}`provenance <provenance-{row.notebook}>`)")
    gain = dict(zip(header, _cells(lines[2 + [r.key for r in PAPER_VALUES].index("fig6_gain_pct")])))
    assert gain["status"] == f'<span class="comparison-status" style="background-color: {audit.STATUS_COLOURS["differs"]}">differs</span>'
    assert gain["95 % CI"] == "\\[1, 7\\]"  # brackets escaped: no link syntax


def test_comparison_markdown_escapes_markup_in_cells() -> None:
    import pandas as pd

    note = "a | b costs $5 and $6, *not* `x` <y> {z}\nsecond line"
    table = pd.DataFrame([{"why": note, "status": "not run", "chapter": "table4"}])
    row = audit.comparison_markdown(table).splitlines()[2]
    cells = _cells(row)
    assert len(cells) == 3  # the pipe in the note did not open a cell
    assert cells[0] == r"a \| b costs \$5 and \$6, \*not\* \`x\` \<y\> \{z\} second line"
    assert set(audit.STATUS_COLOURS) == set(audit.STATUSES)


def test_every_test_the_book_cites_exists() -> None:
    """An auditor follows ``tests/x.py::name`` from the errata and chapters to the test: it must be there."""
    import re

    root = Path(__file__).resolve().parents[1]
    cited = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
    sources = [*root.glob("book/**/*.md"), *root.glob("notebooks/*.md"), root / "README.md"]
    missing = []
    for source in sources:
        for path, name in cited.findall(source.read_text(encoding="utf-8")):
            test_file = root / path
            if not test_file.is_file() or not re.search(rf"^\s*def {name}\(", test_file.read_text(encoding="utf-8"), re.M):
                missing.append(f"{source.relative_to(root)} cites {path}::{name}")
    assert sources and not missing, missing

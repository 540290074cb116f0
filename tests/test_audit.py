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


@pytest.mark.parametrize(
    "key, ours, low, high, expected",
    [
        ("fig6_gain_pct", 12.0, 5.0, 20.0, "reproduced"),  # 19 inside [5, 20]
        ("fig6_gain_pct", 25.0, 20.5, 30.0, "differs"),  # 19 below the interval
        ("fig6_gain_pct", 19.0, None, None, "differs"),  # no interval, no tolerance: cannot call it reproduced
        ("fig6_gain_pct", None, None, None, "not run"),
        ("dataset_relations", 580.0, None, None, "reproduced"),  # tolerance 0
        ("dataset_relations", 579.0, None, None, "differs"),
        ("fig7_val_l1", 0.2, 0.1, 0.3, "not comparable"),
    ],
)
def test_comparison_status(key, ours, low, high, expected) -> None:
    assert audit.comparison_status(by_key(key), ours, low, high) == expected


def test_comparison_table_has_every_row_and_marks_missing_chapters(tmp_path: Path) -> None:
    _write_nb(tmp_path / "setup.ipynb", [_glue_output("dataset_relations", "580")])
    _write_nb(tmp_path / "fig6.ipynb", [_glue_output("fig6_gain_pct", "4.0"), _glue_output("fig6_gain_pct_low", "1.0"),
                                         _glue_output("fig6_gain_pct_high", "7.0")])
    table = audit.comparison_table(tmp_path)
    assert list(table["quantity"]) == [r.quantity for r in PAPER_VALUES]
    status = dict(zip(table["quantity"], table["status"]))
    assert status[by_key("dataset_relations").quantity] == "reproduced"
    assert status[by_key("fig6_gain_pct").quantity] == "differs"
    assert status[by_key("fig8_gap_low_pct").quantity] == "not run"
    ci = dict(zip(table["quantity"], table["95 % CI"]))
    assert ci[by_key("fig6_gain_pct").quantity] == "[1, 7]"


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

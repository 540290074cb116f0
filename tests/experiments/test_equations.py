"""gentwin.experiments.equations: the Markdown tables of the "Equations to code to tests" page."""

from __future__ import annotations

from gentwin.audit import ALGORITHM_LINES, EQUATIONS, CodeRef
from gentwin.experiments import equations

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

"""The "Equations to code to tests" page's tables, as Markdown: each equation and Algorithm 1 line, its code, its tests.

The rows come from :func:`gentwin.audit.equation_references` (functions whose
docstrings cite an equation or an algorithm line) and
:func:`gentwin.audit.find_tests_using` (the tests that call them), so the page
cannot drift from the code.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..audit import ALGORITHM_LINES, EQUATIONS, CodeRef

__all__ = ["anchor", "equations_markdown", "algorithm_markdown", "sources_markdown"]


def anchor(test_id: str) -> str:
    """The page anchor of a test's source section.

    >>> anchor("tests/test_pooling.py::test_eq3_weights")
    'test-tests-test-pooling-py--test-eq3-weights'
    """
    return "test-" + "".join(c if c.isalnum() else "-" for c in test_id.lower())


def _code(ref: CodeRef) -> str:
    role = "py:class" if ref.kind == "class" else "py:func"
    return f"{{{role}}}`{ref.qualname}`"


def _tests(ref: CodeRef, tests: Mapping[str, Sequence[str]]) -> str:
    found = tests[ref.qualname.rsplit(".", 1)[1]]
    return "<br>".join(f"[`{t.split('::', 1)[1]}`](#{anchor(t)})" for t in found) or "**none**"


def equations_markdown(refs: Sequence[CodeRef], tests: Mapping[str, Sequence[str]]) -> str:
    """One row per (equation, implementing function): the paper's form, the code and the tests pinning it.

    ``tests`` maps a function's short name to test ids ``path::name``; an
    equation nothing cites says **not implemented yet**.

    >>> ref = CodeRef("gentwin.pooling.presence", "function", (1,), (), "")
    >>> print(equations_markdown([ref], {"presence": ["tests/t.py::test_p"]}).splitlines()[2])
    | (1) | $...$ | {py:func}`gentwin.pooling.presence` | [`test_p`](#test-tests-t-py--test-p) |
    """
    rows = ["| equation | paper's form | implemented by | pinned by |", "|---|---|---|---|"]
    for number, form in EQUATIONS.items():
        impl = [r for r in refs if number in r.equations]
        if not impl:
            rows.append(f"| ({number}) | ${form}$ | **not implemented yet** | |")
        for k, r in enumerate(impl):
            rows.append(f"| {'(' + str(number) + ')' if k == 0 else ''} | {'$' + form + '$' if k == 0 else ''} "
                        f"| {_code(r)} | {_tests(r, tests)} |")
    return "\n".join(rows)


def algorithm_markdown(refs: Sequence[CodeRef], tests: Mapping[str, Sequence[str]]) -> str:
    """One row per (Algorithm 1 line, implementing function); a line done by an equation points at its rows."""
    rows = ["| Algorithm 1 line | step | implemented by | pinned by |", "|---|---|---|---|"]
    for line, step in ALGORITHM_LINES.items():
        impl = [r for r in refs if line in r.algorithm_lines]
        cells = [(_code(r), _tests(r, tests)) for r in impl] or [
            ("*see the equation rows*" if "eq." in step else "**not implemented yet**", "")]
        for k, (c, t) in enumerate(cells):
            rows.append(f"| {line if k == 0 else ''} | {step if k == 0 else ''} | {c} | {t} |")
    return "\n".join(rows)


def sources_markdown(tests: Mapping[str, Sequence[str]], source_prefix: str = "../../") -> str:
    """A section per listed test, with its source included from ``source_prefix + path`` (relative to the page)."""
    parts = []
    for test_id in sorted({t for found in tests.values() for t in found}):
        path, name = test_id.split("::", 1)
        parts.append(f"({anchor(test_id)})=\n### `{name}`\n\n`{path}`\n\n"
                     f"```{{literalinclude}} {source_prefix}{path}\n:language: python\n"
                     f":pyobject: {name.replace('::', '.')}\n```\n")
    return "\n".join(parts) if parts else "No test cites an equation yet."

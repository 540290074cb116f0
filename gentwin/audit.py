"""The audit layer of the book: our numbers beside the paper's, equations to code to tests.

Nothing here computes a result: it reads what the executed notebooks glued and what the code and tests
declare, so the "Paper versus reproduction" and "Equations to code to tests" pages cannot drift from the run.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import math
import pkgutil
import re
from ast import literal_eval
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .provenance import EXECUTED_DIR, provenance_label
from .reference import PAPER_VALUES, PaperValue

__all__ = [
    "GLUE_PREFIX", "glued_values", "MIN_SEEDS", "STATUSES", "comparison_status", "comparison_table", "status_counts",
    "STATUS_COLOURS", "comparison_markdown",
    "EQUATIONS", "ALGORITHM_LINES", "CodeRef", "equation_references", "find_tests_using", "anchor",
    "equations_markdown", "algorithm_markdown", "sources_markdown",
]

#: the mime prefix myst-nb gives values glued with ``display=False``
GLUE_PREFIX = "application/papermill.record/"


def glued_values(executed_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every value glued in a folder of executed notebooks: ``{key: {"value", "text", "notebook"}}``.

    A key glued twice (in one notebook or two) is an error: the comparison page would not know which to show.
    """
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(executed_dir).glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
                meta = output.get("metadata", {}).get("scrapbook")
                if not meta:
                    continue
                key, text = meta["name"], output.get("data", {}).get(meta.get("mime_prefix", "") + "text/plain")
                text = "".join(text) if isinstance(text, list) else text
                if key in out:
                    raise ValueError(f"glue key {key!r} is published twice ({out[key]['notebook']} and {path.stem})")
                try:
                    value = literal_eval(text) if text is not None else None
                except (ValueError, SyntaxError):
                    value = text
                out[key] = {"value": value, "text": text, "notebook": path.stem}
    return out


def _number(x: Any) -> float | None:
    finite = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if finite else None


#: Fewer seeds than this leave a row inconclusive, whatever its interval says.
MIN_SEEDS = 5


def comparison_status(row: PaperValue, ours: float | None, low: float | None = None,
                      high: float | None = None, *, n_seeds: int | None = None) -> str:
    """The verdict for one row of the comparison page, by the rule stated before the run.

    ``"reproduced"`` when our CI ``[low, high]`` lies inside ``paper ± margin`` (a direction row: wholly
    above 0), ``"differs"`` when wholly outside (wholly below 0), else ``"inconclusive"``, as is an effect or
    direction whose CI contains 0, a value without a CI and a row with fewer than :data:`MIN_SEEDS` seeds;
    ``"not comparable"``, ``"set by input"`` (an input chosen to match) and ``"not run"`` (nothing glued).

    >>> from gentwin.reference import by_key
    >>> comparison_status(by_key("table4_s1_small"), 99.79, 99.76, 99.82, n_seeds=5)  # a made-up CI inside 99.8 +- 0.05
    'reproduced'
    >>> comparison_status(by_key("table4_s1_small"), 97.0, 96.5, 97.5, n_seeds=5)
    'differs'
    >>> comparison_status(by_key("fig6_gain_pct"), 0.6, -37.7, 38.9, n_seeds=5)
    'inconclusive'
    >>> comparison_status(by_key("dataset_relations"), 580)
    'set by input'
    """
    if row.judge == "not comparable":
        return "not comparable"
    if ours is None:
        return "not run"
    if row.judge == "input":
        return "set by input"
    if low is None or high is None or n_seeds is None or n_seeds < MIN_SEEDS:
        return "inconclusive"
    if low > high:
        raise ValueError(f"{row.key}: low = {low!r} > high = {high!r}")
    if row.judge in ("effect", "direction") and low <= 0.0 <= high:
        return "inconclusive"
    if row.judge == "direction":
        return "reproduced" if low > 0.0 else "differs"
    lo, hi = row.paper - row.margin, row.paper + row.margin
    if lo <= low and high <= hi:
        return "reproduced"
    if high < lo or low > hi:
        return "differs"
    return "inconclusive"


#: the background of each status on the comparison page, in the order the page lists them
STATUS_COLOURS: dict[str, str] = {
    "reproduced": "#d9f2d9", "differs": "#fde2c8", "inconclusive": "#fff4c2", "set by input": "#e3ecf7",
    "not comparable": "#e6e6e6", "not run": "#f9d6d5",
}
#: every status the comparison page can show
STATUSES: tuple[str, ...] = tuple(STATUS_COLOURS)


def comparison_table(executed_dir: str | Path, rows: Iterable[PaperValue] = PAPER_VALUES, settings: Any = None):
    """The "Paper versus reproduction" table as a :class:`pandas.DataFrame`.

    Our value for a row is the glued ``k = row.glue_key``, its CI ``k_low`` and ``k_high``, its seed count
    ``k_n`` or else the row's ``seeds_field`` in ``settings``, and ``k_note`` why the two may differ.
    """
    import pandas as pd

    glued = glued_values(executed_dir)
    flat = settings.flat() if settings is not None else {}

    def val(key: str) -> float | None:
        return _number(glued[key]["value"]) if key in glued else None

    records = []
    for row in rows:
        k = row.glue_key
        ours, low, high, n = val(k), val(k + "_low"), val(k + "_high"), val(k + "_n")
        if n is None and row.seeds_field in flat:
            n = flat[row.seeds_field]
        judged = ours is not None and row.judge not in ("input", "not comparable")
        seeds = int(n) if n is not None and judged else None
        status = comparison_status(row, ours, low, high, n_seeds=seeds)
        note = glued.get(k + "_note", {}).get("value") or row.explanation
        if status == "not run":
            note = f"the {row.notebook} chapter has not published {k!r} in this build"
        records.append({
            "quantity": row.quantity, "where": row.where, "paper": row.paper_text,
            "± δ": _fmt(row.margin), "ours": _fmt(ours),
            "95 % CI": f"[{_fmt(low)}, {_fmt(high)}]" if low is not None and high is not None else "",
            "seeds": seeds if seeds is not None else "", "status": status, "judged by": row.margin_reason,
            "why": note, "chapter": row.notebook,
        })
    return pd.DataFrame(records)


def status_counts(table) -> dict[str, int]:
    """How many rows of a :func:`comparison_table` have each status (every status, zeros included)."""
    counts = table["status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in STATUSES}

_MARKUP = re.compile(r"([\\`*_{}\[\]<>$|~#])")


def _cell(value: Any) -> str:
    """A value as the text of a MyST table cell: markup characters escaped, line breaks as spaces.

    >>> print(_cell("a | b, $x$ and *c*"))
    a \\| b, \\$x\\$ and \\*c\\*
    """
    return _MARKUP.sub(r"\\\1", " ".join(str(value).split()))


def comparison_markdown(table) -> str:
    """A :func:`comparison_table` as a MyST table: each status on its colour, each chapter linked with its box.

    The chapter column moves next to ``where`` (visible without scrolling) and links to the page and its
    provenance box, so a missing page or box fails the nitpicky build; other cells are escaped text.

    >>> import pandas as pd
    >>> row = {"quantity": "a gain", "paper": "19 %", "status": "differs", "chapter": "fig6"}
    >>> print(comparison_markdown(pd.DataFrame([row])))
    | quantity | paper | status | chapter |
    |---|---|---|---|
    | a gain | 19 % | <span class="comparison-status" style="background-color: #fde2c8">differs</span> | {doc}`fig6 </book/executed/fig6>` ({ref}`provenance <provenance-fig6>`) |
    """
    columns = list(table.columns)
    if "chapter" in columns and "where" in columns:
        columns.remove("chapter")
        columns.insert(columns.index("where") + 1, "chapter")
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for record in table.to_dict("records"):
        cells = [_cell(record[c]) for c in columns]
        if "status" in columns:
            status = record["status"]
            cells[columns.index("status")] = (f'<span class="comparison-status" style="background-color: '
                                              f'{STATUS_COLOURS[status]}">{_cell(status)}</span>')
        if "chapter" in columns:
            page = record["chapter"]
            cells[columns.index("chapter")] = (f"{{doc}}`{page} </{EXECUTED_DIR.as_posix()}/{page}>` "
                                               f"({{ref}}`provenance <{provenance_label(page)}>`)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e6 else f"{x:.3g}"


# ---------------------------------------------------------------------------
# Equations to code to tests
# ---------------------------------------------------------------------------

#: the paper's numbered equations, in the paper's notation
EQUATIONS: dict[int, str] = {
    1: r"\perp = 1 \text{ if the node is active, else } 0",
    2: r"(k_i, v_i) = ([:s], \{s_{i_{ID}}, g_{s_i}\}) \text{ or } ([:gw], \{g_{i_{ID}}, d_i\})",
    3: r"p_{i_t} = \frac{(\sum_i N_i)\perp_i}{M}",
    4: r"P_H, P_M, P_L \text{ by } p_{i_t} \text{ against } 3Avg(p)/4 \text{ and } Avg(p)/2",
    5: r"w_i = 1/n \text{ (sensor)}, \; d_i/n \text{ (gateway)}",
    6: r"W_p = \frac{1}{n}\sum_i 1 + d_i",
    7: r"\alpha_i = |\Delta(w_{p_i(t)} - w_{p_i(t+1)})|",
    8: r"W_A = W_A + ReLU((\mathcal{P}(\cdot)W_D)W_U)",
    9: r"L_1 = \frac{\sum_M |r_i - \hat{r}_i|}{M}",
    10: r"O = g_{(k,v)}(q, R)",
}

#: Algorithm 1, line by line (paraphrased)
ALGORITHM_LINES: dict[int, str] = {
    1: "initialise W_A, the pools and alpha",
    2: "if alpha changed:",
    3: "decide presence values (eq. 1)",
    4: "construct (k, v) pairs and priority values (eqs. 2-3)",
    5: "create the priority levels P_H, P_M, P_L (eq. 4)",
    6: "assign the weights, create the pool (eqs. 5-6)",
    7: "update alpha (eq. 7)",
    9: "perform the projections of the Twin Adapter",
    10: "update the weights W_A (eq. 8)",
    11: "generate the knowledge graph G",
    12: "compute the L1 loss (eq. 9)",
    13: "generate prompts O = g(q, R) (eq. 10)",
    14: "update the LLM with the generated prompts",
    15: "define smart-city scenarios",
    17: "decide the twin requirements",
    18: "list the (k, v) pairs",
    19: "request the twin versions",
    20: "measure the response time",
}

_EQ_PATTERN = re.compile(r"\beq(?:uation)?s?\.?\s*\((\d+)\)", re.IGNORECASE)
_EQ_RANGE = re.compile(r"\beqs?\.\s*\((\d+)\)\s*-\s*\((\d+)\)", re.IGNORECASE)
_ALG_PATTERN = re.compile(r"Algorithm 1,? lines? (\d+)(?:\s*-\s*(\d+))?", re.IGNORECASE)


@dataclass(frozen=True)
class CodeRef:
    """A public function or class of gentwin that implements part of the paper."""

    qualname: str  #: e.g. "gentwin.pooling.priority"
    kind: str  #: "function" or "class"
    equations: tuple[int, ...]
    algorithm_lines: tuple[int, ...]
    summary: str


def _cited(doc: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Equation and Algorithm 1 line numbers cited in the first lines of a docstring."""
    head = "\n".join(doc.strip().splitlines()[:6])
    eqs: set[int] = {int(m) for m in _EQ_PATTERN.findall(head)}
    for a, b in _EQ_RANGE.findall(head):
        eqs.update(range(int(a), int(b) + 1))
    lines: set[int] = set()
    for a, b in _ALG_PATTERN.findall(head):
        lines.update(range(int(a), int(b or a) + 1))
    return tuple(sorted(e for e in eqs if e in EQUATIONS)), tuple(sorted(lines))


def equation_references(package: str = "gentwin") -> list[CodeRef]:
    """The public (``__all__``) functions and classes whose docstring's opening lines cite an equation or
    Algorithm 1 line: the docstring is the declaration.

    Only the concept modules directly under ``package`` are read: the runners in ``gentwin.experiments``
    analyse what an equation gives (e.g. ``experiments.pools.tie_share``) and cite it, but do not implement it.
    """
    pkg = importlib.import_module(package)
    refs: list[CodeRef] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in ("cli", "audit"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not obj.__doc__:
                continue
            eqs, lines = _cited(obj.__doc__)
            if eqs or lines:
                refs.append(CodeRef(f"{module.__name__}.{name}", "class" if inspect.isclass(obj) else "function",
                                    eqs, lines, obj.__doc__.strip().split("\n\n")[0].replace("\n", " ")))
    return refs


def find_tests_using(names: Iterable[str], tests_dir: str | Path) -> dict[str, list[str]]:
    """For each bare name, the tests (``file::function``) whose body uses it as an identifier or attribute."""
    found: dict[str, list[str]] = {n: [] for n in names}
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for path in sorted(Path(tests_dir).rglob("test_*.py")):
        where = f"{Path(tests_dir).name}/{path.relative_to(tests_dir).as_posix()}"
        tests = []
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, functions) and node.name.startswith("test"):
                tests.append((f"{where}::{node.name}", node))
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                tests += [(f"{where}::{node.name}::{sub.name}", sub) for sub in node.body
                          if isinstance(sub, functions) and sub.name.startswith("test")]
        for label, fn in tests:
            used = {getattr(n, "id", None) or getattr(n, "attr", None) for n in ast.walk(fn)}
            for name in found.keys() & used:
                found[name].append(label)
    return found


def anchor(test_id: str) -> str:
    """The page anchor of a test's source section.

    >>> anchor("tests/test_pooling.py::test_eq3_weights")
    'test-tests-test-pooling-py--test-eq3-weights'
    """
    return "test-" + "".join(c if c.isalnum() else "-" for c in test_id.lower())


def _code(ref: CodeRef) -> str:
    return f"{{{'py:class' if ref.kind == 'class' else 'py:func'}}}`{ref.qualname}`"


def _tests(ref: CodeRef, tests: Mapping[str, Sequence[str]]) -> str:
    found = tests[ref.qualname.rsplit(".", 1)[1]]
    return "<br>".join(f"[`{t.split('::', 1)[1]}`](#{anchor(t)})" for t in found) or "**none**"


def equations_markdown(refs: Sequence[CodeRef], tests: Mapping[str, Sequence[str]]) -> str:
    """One row per (equation, implementing function): the paper's form, the code and the tests pinning it.

    ``tests`` maps a function's short name to test ids ``path::name``.

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
            rows.append(f"| {f'({number})' if k == 0 else ''} | {f'${form}$' if k == 0 else ''} "
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

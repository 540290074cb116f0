"""The library's layout: every module documented, opening with one sentence, and no layer importing one above it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gentwin"

# Lower layers never import higher ones: helpers < parameters < data < the paper's mechanisms <
# the twin store < what uses it < the experiments < auditing and running the book.
LAYERS = {
    0: {"checks", "files", "progress"},
    1: {"cache", "reference", "stats"},
    2: {"config"},
    3: {"topology"},
    4: {"sdm", "verbalise", "pooling", "physical", "metrics", "llm", "adapter", "graph.schema"},
    5: {"ingest", "frozen", "graph.networkx_store", "graph.neo4j_store"},
    6: {"graph"},
    7: {"training", "prompting", "whatif", "loops"},
    8: {"experiments.pipeline"},  # what the training runners share
    9: {"experiments"},  # and every other experiments.* runner
    10: {"provenance"},
    11: {"audit"},
    12: {"notebook"},
    13: {"cli"},
    14: {"__main__"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)
        if name:
            out[name] = path
    return out


def _layer(name: str) -> int:
    for layer, names in LAYERS.items():
        if name in names:
            return layer
    if name.startswith("experiments."):
        return 9
    raise AssertionError(f"gentwin.{name} has no layer in tests/test_layout.py")


def _imports(name: str, path: Path) -> set[str]:
    """gentwin modules that ``name`` imports (relative or absolute, at any depth of the code)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("gentwin"):
                target = node.module.removeprefix("gentwin").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import pooling` names a module
                candidate = f"{target}.{alias.name}".lstrip(".")
                found.add(candidate if candidate in _modules() else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("gentwin.") for a in node.names if a.name.startswith("gentwin.")}
    return {m for m in found if m and m != name}


def test_every_module_has_a_layer_and_imports_only_lower_layers():
    bad = []
    for name, path in _modules().items():
        for dep in _imports(name, path):
            inside_package = dep.startswith(name + ".")  # a package's __init__ re-exports its modules
            if not inside_package and _layer(dep) >= _layer(name):
                bad.append(f"gentwin.{name} (layer {_layer(name)}) imports gentwin.{dep} (layer {_layer(dep)})")
    assert not bad, "\n".join(bad)


def test_the_layer_check_sees_imports():
    # the check above is only as good as its import scan
    imports = _imports("experiments.pipeline", PACKAGE / "experiments" / "pipeline.py")
    assert {"pooling", "topology", "training"} <= imports, imports


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_opens_with_one_sentence_saying_what_it_holds(name):
    doc = ast.get_docstring(ast.parse(_modules()[name].read_text(encoding="utf-8")))
    assert doc, f"gentwin.{name} has no module docstring"
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    assert first.endswith("."), f"gentwin.{name}: first paragraph is not a sentence: {first!r}"
    # a sentence ends at . ! ? before a capital letter or the end ("eq. (9)" and "Fig. 6" do not)
    assert len(re.findall(r"[.!?](?:\s+[A-Z]|$)", first)) == 1, f"gentwin.{name}: opens with more than one sentence"


def test_api_page_documents_every_module():
    api = (ROOT / "book" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. automodule:: gentwin\.([\w.]+)", api, re.MULTILINE))
    assert documented == set(_modules()) - {"__main__"}


def test_readme_layout_table_matches_the_tree():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `gentwin/([\w/]+)\.py` \|", readme, re.MULTILINE))
    on_disk = {str(p.relative_to(PACKAGE).with_suffix("")) for p in PACKAGE.rglob("*.py")}
    assert listed == on_disk


def test_test_files_have_unique_basenames():
    # pytest imports test files by basename (no __init__.py in tests/): two of one name cannot both load
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def chapter_code_lines(source: str) -> int:
    """Non-blank code lines of a jupytext chapter, its parameters cell left out (issue 11: a chapter's code on
    one screen)."""
    import jupytext

    cells = jupytext.reads(source, fmt="md:myst").cells
    return sum(len([line for line in c.source.splitlines() if line.strip()]) for c in cells
               if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))


def test_chapter_code_lines_counts_code_cells_only():
    source = ("---\njupytext:\n  text_representation:\n    format_name: myst\n---\n\n# Title\n\ntext\n\n"
              "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = 'paper'\nseed = 1\n```\n\n"
              "```{code-cell} ipython3\nx = 1\n\ny = 2\n```\n\nmore text\n\n```{code-cell} ipython3\nprint(x + y)\n```\n")
    assert chapter_code_lines(source) == 3  # 2 + 1; the blank line and the parameters cell do not count


@pytest.mark.parametrize("chapter", sorted(p.name for p in (ROOT / "notebooks").glob("*.md")))
def test_every_chapter_has_at_most_80_lines_of_code(chapter):
    n = chapter_code_lines((ROOT / "notebooks" / chapter).read_text(encoding="utf-8"))
    assert n <= 80, f"notebooks/{chapter}: {n} code lines; move analysis into gentwin (aim: 80 or fewer)"

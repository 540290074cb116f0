"""Tests for gentwin.provenance: git state, weights checksum, changed parameters, the re-run command, the box,
and a page's figures saved as files."""
from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from gentwin import config
from gentwin.provenance import (FigureFiles, changed_from_paper, git_state, page_downloads, provenance,
                                provenance_label, rerun_command, save_figure, weights_sha256)

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=GIT_ENV).stdout


def test_git_state_reports_the_commit_and_dirtiness(tmp_path):
    assert git_state(tmp_path) == ("not a git checkout", False)
    _git("init", "-q", cwd=tmp_path)
    (tmp_path / "a.txt").write_text("one\n")
    _git("add", "a.txt", cwd=tmp_path)
    _git("commit", "-q", "-m", "one", cwd=tmp_path)
    head = _git("rev-parse", "HEAD", cwd=tmp_path).strip()
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "build.out").write_text("untracked output\n")  # does not make the tree dirty
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "a.txt").write_text("two\n")
    assert git_state(tmp_path) == (head, True)


def test_weights_sha256_hashes_the_safetensors_files_in_name_order(tmp_path):
    assert weights_sha256(tmp_path) is None
    (tmp_path / "b.safetensors").write_bytes(b"BBB")
    (tmp_path / "a.safetensors").write_bytes(b"AA")
    (tmp_path / "config.json").write_text("{}")  # not weights
    assert weights_sha256(tmp_path) == hashlib.sha256(b"AABBB").hexdigest()


def test_changed_from_paper_lists_only_differences():
    quick = changed_from_paper(config.resolve("quick"))
    assert quick["n_sensors"] == 24 and quick["n_gateways"] == 6
    assert "learning_rate" not in quick  # the quick profile keeps the paper's rate
    assert changed_from_paper(config.resolve("paper", learning_rate=0.01)) == {"learning_rate": 0.01}


def test_rerun_command_round_trips_through_the_parameter_parser():
    cmd = rerun_command("setup", "quick", {"n_sensors": 30, "split": (0.6, 0.2, 0.2), "n_services": None})
    assert cmd == "gentwin run notebooks/setup.md -p profile quick -p n_sensors 30 -p split 0.6,0.2,0.2"
    # every -p value parses back to the value that was set
    pairs = cmd.split(" -p ")[1:]
    parsed = {name: value for name, value in (p.split(" ", 1) for p in pairs)}
    assert config.coerce("n_sensors", parsed["n_sensors"]) == 30
    assert config.coerce("split", parsed["split"]) == (0.6, 0.2, 0.2)
    assert rerun_command("fig7", "paper", {}) == "gentwin run notebooks/fig7.md"


def test_the_box_carries_every_field(tmp_path):
    p = provenance("setup", config.resolve("quick", n_sensors=30), {"n_sensors": 30}, started=100.0, now=112.5,
                   seeds=[0, 1], root=tmp_path)
    box = p.markdown()
    assert p.wall_s == 12.5 and "12.5 s" in box
    assert "not a git checkout" in box and "`quick`" in box and "`n_sensors = 30`" in box
    assert "0, 1" in box
    for name in ("torch", "transformers", "peft", "networkx", "neo4j"):
        assert f"{name} " in box
    assert "gentwin run notebooks/setup.md -p profile quick -p n_sensors 30" in box
    # a label the comparison page links to, then the box, which offers the page's two files
    label, rest = box.split("\n", 1)
    assert label == "(provenance-setup)=" and provenance_label("setup") == "provenance-setup"
    assert rest.startswith("```{admonition} Provenance of this page") and box.rstrip().endswith("```")
    assert "{download}`executed notebook (setup.ipynb) <setup.ipynb>`" in box
    assert "<../../notebooks/setup.md>`" in box


def test_page_downloads_point_from_the_executed_page_to_both_files(tmp_path):
    # book/executed/PAGE.ipynb and notebooks/PAGE.md, as laid out by gentwin.notebook
    from gentwin.notebook import EXECUTED_DIR, output_path_for

    source = tmp_path / "notebooks" / "fig8.md"
    page_dir = output_path_for(source, tmp_path).parent
    assert page_dir == tmp_path / EXECUTED_DIR
    targets = [part.split("<", 1)[1].split(">", 1)[0] for part in page_downloads("fig8").split("{download}")[1:]]
    assert [(page_dir / t).resolve() for t in targets] == [(page_dir / "fig8.ipynb").resolve(), source.resolve()]


@pytest.mark.parametrize("bad", ["", "Fig6", "fig 6", "../fig6", "fig6.md", None, 6])
def test_page_and_figure_names_are_checked(bad, tmp_path):
    with pytest.raises(ValueError, match="page = "):
        provenance_label(bad)
    with pytest.raises(ValueError, match="name = "):
        save_figure(_figure(), "fig6", bad, {"x": [1]}, root=tmp_path)
    assert not (tmp_path / "book").exists()


def test_wall_time_defaults_to_the_age_of_this_process(tmp_path):
    import time

    from gentwin.provenance import _process_started

    age = time.perf_counter() - _process_started()
    assert 0 < age < 24 * 3600  # this pytest process started before the test, not long ago
    p = provenance("setup", config.resolve("quick"), {}, root=tmp_path)
    assert p.wall_s >= age - 1e-6


def _figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0.5, 0.25, 0.125], marker="o")
    ax.set(xlabel="round", ylabel="share")
    return fig


def test_save_figure_writes_png_svg_and_csv_beside_the_executed_page(tmp_path):
    import pandas as pd

    data = pd.DataFrame({"round": [0, 1, 2], "share": [0.5, 0.25, 0.125], "order": ["a", "b", "a, b"]})
    fig = _figure()
    files = save_figure(fig, "fig6", "curves", data, root=tmp_path)
    folder = tmp_path / "book" / "executed" / "figures" / "fig6"
    assert files == FigureFiles("fig6", "curves", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["curves.csv", "curves.png", "curves.svg"]  # no temp file left
    assert files.path("png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files.path("svg").read_text().lstrip().startswith("<?xml") and "<svg" in files.path("svg").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(files.path("csv")), data)  # the data round-trips, floats exactly
    # the links shown under the figure resolve, from the executed page's folder, to the files written
    links = files.markdown().split("](")[1:]
    targets = [link.split(")", 1)[0] for link in links]
    assert [tmp_path / "book" / "executed" / t for t in targets] == [files.path(s) for s in ("png", "svg", "csv")]
    assert files._repr_markdown_() == files.markdown()


def test_save_figure_is_byte_for_byte_repeatable_and_replaces_the_files(tmp_path):
    fig = _figure()
    first = save_figure(fig, "pooling", "pools", {"x": [1, 2]}, root=tmp_path)
    svg, png = first.path("svg").read_bytes(), first.path("png").read_bytes()
    second = save_figure(fig, "pooling", "pools", {"x": [1, 2]}, root=tmp_path)
    assert second.path("svg").read_bytes() == svg and second.path("png").read_bytes() == png
    save_figure(fig, "pooling", "pools", {"x": [3]}, root=tmp_path)  # new data replace the old
    assert first.path("csv").read_text() == "x\n3\n"


def test_save_figure_keeps_an_index_and_flattens_column_levels(tmp_path):
    import pandas as pd

    fig = _figure()
    table = pd.DataFrame({"mean": [1.5, 2.5]}, index=pd.Index(["P_H", "P_L"], name="pool"))
    files = save_figure(fig, "pooling", "by-pool", table, root=tmp_path)
    pd.testing.assert_frame_equal(pd.read_csv(files.path("csv"), index_col="pool"), table)
    series = pd.Series([3, 4], index=pd.Index([10, 20], name="layer"), name="parameters")
    files = save_figure(fig, "adapter", "layers", series, root=tmp_path)
    assert files.path("csv").read_text() == "layer,parameters\n10,3\n20,4\n"
    wide = pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("size", "mean"), ("size", "low")]))
    files = save_figure(fig, "pooling", "wide", wide, root=tmp_path)
    assert files.path("csv").read_text() == "size mean,size low\n1,2\n"


def test_save_figure_rejects_what_is_not_a_figure_or_a_table(tmp_path):
    import pandas as pd

    with pytest.raises(TypeError, match="fig = str"):
        save_figure("a plot", "fig6", "curves", {"x": [1]}, root=tmp_path)
    with pytest.raises(TypeError, match="data = int"):
        save_figure(_figure(), "fig6", "curves", 3, root=tmp_path)
    with pytest.raises(ValueError, match="no column"):
        save_figure(_figure(), "fig6", "curves", pd.DataFrame(index=[0, 1]), root=tmp_path)
    assert not (tmp_path / "book").exists()  # nothing was written


DEMO_PAGE = '''---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

# A demo chapter

```{code-cell} ipython3
:tags: [parameters]

profile = "paper"  # where defaults come from
```

```{code-cell} ipython3
:tags: [hide-input]

import matplotlib.pyplot as plt

import gentwin.config
from gentwin.provenance import provenance, save_figure

settings = gentwin.config.resolve(profile)
```

```{code-cell} ipython3
fig, ax = plt.subplots(figsize=(3, 2))
ax.plot([0, 1, 2], [1.0, 0.5, 0.25])
plt.show()
save_figure(fig, "demo", "halving", {"round": [0, 1, 2], "share": [1.0, 0.5, 0.25]})
```

```{code-cell} ipython3
:tags: [remove-input]

provenance("demo", settings, {})
```
'''


@pytest.mark.slow
def test_a_built_chapter_offers_its_notebook_source_figure_files_and_a_linkable_provenance_box(tmp_path):
    """One chapter through the real pipeline (gentwin.notebook.build_book: papermill, then ``jupyter-book
    build -W -n`` with the project's _config.yml): every download resolves to the file it names."""
    import re
    import shutil
    from pathlib import Path
    from urllib.parse import unquote

    from gentwin.notebook import build_book

    root_src = Path(__file__).resolve().parents[1]
    shutil.copy2(root_src / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book").mkdir()
    shutil.copy2(root_src / "book" / "references.bib", tmp_path / "book" / "references.bib")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/executed/demo\n")
    # a link from another page to the box, as the comparison page makes: a wrong label fails the -n build
    (tmp_path / "book" / "intro.md").write_text("# Demo book\n\nOur value: {ref}`provenance <provenance-demo>`.\n")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "demo.md").write_text(DEMO_PAGE)
    index = build_book(tmp_path, profile="quick", log=lambda line: None)
    html_dir = tmp_path / "_build" / "html"
    assert index == html_dir / "index.html" and index.is_file()

    page = html_dir / "book" / "executed" / "demo.html"
    text = page.read_text(encoding="utf-8")

    def target(name: str) -> Path:
        """The file behind the page's one download link whose address ends with ``name``."""
        hrefs = [h for h in re.findall(r'href="([^"]+)"', text) if "_downloads/" in h and h.endswith("/" + name)]
        assert len(hrefs) == 1, (name, hrefs)
        return (page.parent / unquote(hrefs[0])).resolve()

    figures = tmp_path / "book" / "executed" / "figures" / "demo"
    for name in ("halving.png", "halving.svg", "halving.csv"):
        assert target(name).read_bytes() == (figures / name).read_bytes(), name
    assert target("halving.csv").read_text() == "round,share\n0,1.0\n1,0.5\n2,0.25\n"
    assert target("demo.md").read_text() == DEMO_PAGE  # the jupytext source, as written
    executed = tmp_path / "book" / "executed" / "demo.ipynb"
    assert target("demo.ipynb").read_bytes() == executed.read_bytes()
    # the theme's download button offers the executed notebook too
    assert 'href="../../_sources/book/executed/demo.ipynb"' in text
    assert (html_dir / "_sources" / "book" / "executed" / "demo.ipynb").read_bytes() == executed.read_bytes()
    # the box has its label as an anchor, and the other page links to it
    assert 'id="provenance-demo"' in text
    intro = (html_dir / "book" / "intro.html").read_text(encoding="utf-8")
    assert 'href="executed/demo.html#provenance-demo"' in intro
    plain = re.sub(r"<[^>]+>", "", text)  # the page's text, highlighting and markup gone
    assert "gentwin run notebooks/demo.md -p profile quick" in plain
    # the set-up cell is folded, its code still on the page for a reader who opens it
    assert '<div class="cell tag_hide-input docutils container">' in text
    assert "from gentwin.provenance import provenance, save_figure" in plain

"""The whole book, built in the quick profile with warnings as errors, then read in a real browser.

One build (session fixture) serves every test here.  It happens in a copy of the
project's book sources, so the user's own ``book/executed`` and ``_build`` are
never touched.  Screenshots of the figure pages are kept under
``$GENTWIN_TEST_OUTPUT`` (default ``_build/test-output``) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

from gentwin.reference import PAPER_VALUES

ROOT = Path(__file__).resolve().parents[1]
FIGURE_PAGES = ("setup", "pooling", "adapter", "fig6", "fig7", "prompting", "fig8", "table4")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.slow


def _cache_on(root: Path) -> dict[str, str]:
    """The environment of a build with a step cache of its own, on (the test session turns it off); the
    converted backbone of the user's cache is linked in, not converted again."""
    from gentwin.llm import cache_root

    private = root.with_name(root.name + "-cache")  # outside the book's sources
    if not private.exists():
        private.mkdir()
        if cache_root().is_dir():
            for entry in cache_root().iterdir():
                if entry.name != "steps":
                    (private / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k != "GENTWIN_NO_CACHE"}
    env["GENTWIN_CACHE"] = str(private)
    return env


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """Build the book (quick profile) in a copy of the sources; return the HTML folder."""
    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, root / name)
    for folder in ("book", "notebooks", "tests"):
        shutil.copytree(ROOT / folder, root / folder,
                        ignore=shutil.ignore_patterns("executed", "__pycache__", "*.pyc", "output"))
    proc = subprocess.run(
        [sys.executable, "-m", "gentwin", "book", "--profile", "quick", "--root", str(root)],
        capture_output=True, text=True, timeout=3000, env=_cache_on(root),
    )
    if proc.returncode != 0:
        pytest.fail(f"book build failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    html = root / "_build" / "html"
    assert (html / "index.html").is_file()
    return html


def test_book_builds_with_warnings_as_errors(built_book: Path) -> None:
    # every TOC page was executed and rendered
    for page in FIGURE_PAGES + ("comparison", "equations"):
        assert (built_book / "book" / "executed" / f"{page}.html").is_file(), page
    for page in ("errata", "api", "references"):
        assert (built_book / "book" / f"{page}.html").is_file(), page


def test_comparison_page_lists_every_paper_number(built_book: Path) -> None:
    html = (built_book / "book" / "executed" / "comparison.html").read_text(encoding="utf-8")
    for row in PAPER_VALUES:
        assert row.quantity in html, row.quantity


@pytest.fixture(scope="module")
def browser():
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
               if not Path(path).exists()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (`make test` installs them through .ci/system-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="gentwin-chromium-")
    # The browser is offline: every host resolves to nothing and any proxied request goes to a closed
    # port, so a page that needs a CDN (MathJax, fonts) shows it here as it would to an offline reader.
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
                f"--user-data-dir={profile}", "--window-size=1280,2000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _output_dir() -> Path:
    out = Path(os.environ.get("GENTWIN_TEST_OUTPUT", ROOT / "_build" / "test-output")) / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.browser
@pytest.mark.parametrize("page", FIGURE_PAGES)
def test_figure_page_shows_its_images(built_book: Path, browser, page: str) -> None:
    browser.get((built_book / "book" / "executed" / f"{page}.html").as_uri())
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('main img')).map("
        "i => [i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])"
    )
    assert sizes, f"{page}: no image in the page"
    for complete, natural_w, natural_h, shown_w in sizes:
        assert complete and natural_w > 0 and natural_h > 0 and shown_w > 0, (page, sizes)
    browser.save_screenshot(str(_output_dir() / f"{page}.png"))


@pytest.mark.browser
def test_comparison_table_is_rendered(built_book: Path, browser) -> None:
    browser.get((built_book / "book" / "executed" / "comparison.html").as_uri())
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('main table tbody tr')).map(r => r.innerText)"
    )
    for row in PAPER_VALUES:
        assert any(row.quantity in r for r in rows), row.quantity
    browser.save_screenshot(str(_output_dir() / "comparison.png"))


@pytest.mark.browser
def test_no_broken_internal_links(built_book: Path, browser) -> None:
    """Every link inside the book reaches an existing page, and an existing anchor on it."""
    pages = sorted(built_book.rglob("*.html"))
    pages = [p for p in pages if "_static" not in p.parts and "_sources" not in p.parts]
    anchors: dict[Path, set[str]] = {}

    def ids_of(path: Path) -> set[str]:
        if path not in anchors:
            browser.get(path.as_uri())
            anchors[path] = set(browser.execute_script(
                "return Array.from(document.querySelectorAll('[id]')).map(e => e.id)"
                ".concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.name))"))
        return anchors[path]

    broken = []
    for page in pages:
        browser.get(page.as_uri())
        hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        for href in hrefs:
            url = urlparse(href)
            if url.scheme != "file":
                continue
            target, fragment = urldefrag(href)
            path = Path(unquote(urlparse(target).path))
            if not path.exists():
                broken.append(f"{page.relative_to(built_book)} -> {href}")
            elif fragment and path.suffix == ".html" and unquote(fragment) not in ids_of(path):
                broken.append(f"{page.relative_to(built_book)} -> {href} (no such anchor)")
    assert not broken, "\n".join(broken)


# MathJax has typeset a page when its startup promise resolves; raw delimiters left in the visible
# text mean it never ran (e.g. fetched from a CDN by an offline reader).
_TYPESET = """
const done = arguments[arguments.length - 1];
const start = Date.now();
(function wait() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done(document.querySelectorAll('mjx-container').length));
  } else if (Date.now() - start > 10000) { done(-1); } else { setTimeout(wait, 100); }
})();
"""
RAW_TEX = ("\\(", "\\)", "\\[", "\\]", "$$")


def raw_tex_in(text: str) -> list[str]:
    """The raw TeX delimiters left in a page's visible text."""
    return [d for d in RAW_TEX if d in text]


def test_raw_tex_in_finds_delimiters_and_nothing_else():
    assert raw_tex_in(r"weights W_p and \(P_H\)") == ["\\(", "\\)"]
    assert raw_tex_in(r"display $$x$$ and \[y\]") == ["\\[", "\\]", "$$"]
    assert raw_tex_in("typeset math leaves no delimiter (none) [here]") == []


@pytest.mark.browser
def test_math_renders_offline_on_every_page(built_book: Path, browser) -> None:
    pages = [p for p in sorted(built_book.rglob("*.html"))
             if "_static" not in p.parts and "_sources" not in p.parts and p.name not in ("search.html", "genindex.html")]
    typeset_somewhere = 0
    problems = []
    browser.set_script_timeout(30)
    for page in pages:
        browser.get(page.as_uri())
        has_math = browser.execute_script("return document.querySelectorAll('main .math').length")
        containers = browser.execute_async_script(_TYPESET) if has_math else 0
        if containers == -1:
            problems.append(f"{page.relative_to(built_book)}: has math but MathJax never started")
            continue
        typeset_somewhere += containers
        # prose and tables only: code listings (the equations page shows test sources) may hold TeX strings
        left = raw_tex_in(browser.execute_script(
            "const m = document.querySelector('main').cloneNode(true);"
            "m.querySelectorAll('pre, code, .highlight').forEach(e => e.remove()); return m.innerText"))
        if left:
            problems.append(f"{page.relative_to(built_book)}: raw TeX {left}")
    assert not problems, "\n".join(problems)
    assert typeset_somewhere > 0, "no page had any math typeset"


@pytest.mark.browser
@pytest.mark.parametrize("page", FIGURE_PAGES)
def test_every_result_page_ends_with_its_provenance(built_book: Path, browser, page: str) -> None:
    browser.get((built_book / "book" / "executed" / f"{page}.html").as_uri())
    boxes = browser.execute_script(
        "return Array.from(document.querySelectorAll('main .admonition.provenance')).map(b => b.innerText)")
    assert len(boxes) == 1, f"{page}: {len(boxes)} provenance boxes"
    text = boxes[0]
    for field in ("commit", "profile", "seeds", "versions", "device", "wall time", "re-run this page"):
        assert field in text, (page, field)
    assert f"gentwin run notebooks/{page}.md -p profile quick" in text


def test_a_second_build_reuses_every_page_with_the_same_glued_values(built_book, tmp_path):
    from gentwin.notebook import diff_glued, toc_notebooks

    root = built_book.parent.parent
    before = tmp_path / "before"
    shutil.copytree(root / "book" / "executed", before)
    proc = subprocess.run(
        [sys.executable, "-m", "gentwin", "book", "--profile", "quick", "--root", str(root), "--no-build"],
        capture_output=True, text=True, timeout=600, env=_cache_on(root),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pages = [p.stem for p in toc_notebooks(root)]
    reused = [p for p in pages if f"[{p}] reused from the cache" in proc.stderr]
    assert reused == pages, proc.stderr[-3000:]
    assert "cell 1/" not in proc.stderr  # nothing executed
    assert diff_glued(before, root / "book" / "executed") == []

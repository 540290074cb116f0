"""The `gentwin` command line and the notebook runner behind it (gentwin.notebook).

Checked parameters, atomic outputs, clear errors.  Every run happens in a copy of
the book sources (``book_root``), so the user's own ``book/executed`` is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gentwin.notebook import read_parameters

ROOT = Path(__file__).resolve().parents[1]

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
    assert "hide-input" in injected[0]["metadata"]["tags"]  # folded on the page, one click away
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
    assert _pages_and_litter(out.parent) == ["setup.ipynb"]  # no temporary files left


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
        # sizes are bounded, even when the other sizes are raised to fit
        (("-p", "n_sensors", "1000000000", "-p", "n_instances", "100000"), ["n_sensors = 1000000000", "<= 25000"]),
        # a city of 1 sensor, 1 gateway and 1 service: the generator's rules are part of the parameter check
        (("-p", "n_services", "1", "-p", "n_gateways", "1", "-p", "n_sensors", "1", "-p", "n_gateway_links", "0",
          "-p", "n_instances", "2"), ["split = (0.7, 0.15, 0.15)", "validation split gets no node"]),
        (("-p", "n_services", "3", "-p", "n_gateways", "3"), ["n_gateway_links = 30", "at most 0 fog links"]),
        (("-p", "n_instances", "300"), ["n_instances = 300", "validation split has 46 nodes but only 45"]),
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
    assert _pages_and_litter(out.parent) == ["setup.ipynb"]


def test_a_file_that_is_not_a_chapter_is_a_usage_error(book_root: Path) -> None:
    (book_root / "README.md").write_text("# Read me\n\nNot a chapter.\n")
    rejected = gentwin("run", "README.md", "--root", str(book_root))
    assert rejected.returncode == 2, rejected.stderr
    assert rejected.stderr.startswith("error: ") and "no cell is tagged `parameters`" in rejected.stderr
    assert not (book_root / "book" / "executed").exists()


def test_a_failing_cell_fails_the_run_and_keeps_the_old_page(book_root: Path, write_chapter) -> None:
    src = write_chapter(
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
    assert "int; >= 1; <= 25000; profile defaults: paper 250, quick " in line and "the paper's value: 250" in line
    assert "number of IoT sensors" in listed.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (("--help",), ["run", "book", "params", "diff-glue", "examples", "exit codes"]),
        (("run", "--help"), ["-p NAME VALUE", "notebooks/setup.md -p n_sensors 30", "--root"]),
        (("book", "--help"), ["--profile", "quick", "-W -n --keep-going"]),
        (("params", "--help"), ["NOTEBOOK", "range"]),
        (("diff-glue", "--help"), ["OLD_DIR", "NEW_DIR", "--ignore", "Exits 0 when every value is the same"]),
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


def _pages_and_litter(executed: Path) -> list[str]:
    """The executed folder's entries, less the data-set and figure folders the chapters write (checked here)."""
    from gentwin.ingest import BOOK_FILES

    data = executed / "data"
    if data.exists():
        for city in data.iterdir():  # each a complete book data set, never a half-written one
            assert city.name.startswith("city-"), city
            assert sorted(f.name for f in city.iterdir()) == sorted(BOOK_FILES.values()), city
    figures = executed / "figures"
    if figures.exists():  # figure files only, no temporary file left behind
        for f in figures.rglob("*"):
            assert f.is_dir() or (f.suffix in (".png", ".svg", ".csv") and not f.name.startswith(".")), f
    return sorted(p.name for p in executed.iterdir() if p.name not in ("data", "figures"))


def test_book_no_execute_keeps_a_re_run_page(book_root: Path) -> None:
    out = book_root / "book" / "executed" / "setup.ipynb"
    assert gentwin("run", "notebooks/setup.md", "-p", "n_sensors", "30", "--root", str(book_root)).returncode == 0
    before = out.read_bytes()
    kept = gentwin("book", "--no-execute", "--no-build", "--root", str(book_root))
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert out.read_bytes() == before
    assert _pages_and_litter(out.parent) == ["setup.ipynb"]  # nothing else was executed


# ---------------------------------------------------------------------------
# What the terminal shows, and runs killed mid-cell
# ---------------------------------------------------------------------------


def _tiny_root(tmp_path: Path, cell: str, write_chapter, *more_cells: str) -> tuple[Path, Path, Path]:
    """A book root with one chapter ``notebooks/tiny.md`` and a previous page for it."""
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/executed/tiny\n")
    (tmp_path / "notebooks").mkdir()
    src = write_chapter(tmp_path / "notebooks" / "tiny.md", ("parameters", 'profile = "paper"  # p'), ("", cell),
                        *(("", c) for c in more_cells))
    old = tmp_path / "book" / "executed" / "tiny.ipynb"
    old.parent.mkdir(parents=True)
    old.write_bytes(b'{"previous": "page"}\n')
    return tmp_path, src, old


def test_run_shows_cells_and_the_kernels_own_stderr_but_no_tcp_warning(tmp_path: Path, write_chapter,
                                                                         monkeypatch) -> None:
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # or ipykernel would never forward stderr
    root, src, out = _tiny_root(
        tmp_path, "import time\nfrom gentwin.progress import progress\n"
        "for _ in progress(range(3), desc='bar'):\n    time.sleep(0.4)  # a bar the kernel could forward\n"
        "print('on the page')", write_chapter,
        "print('the next cell')")  # ipykernel delivers forwarded output when the next cell runs
    done = gentwin("run", str(src), "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert '[tiny] cell 1/3: profile = "paper"  # p' in done.stderr
    assert "[tiny] cell 2/3: import time" in done.stderr
    assert "bar: 100%" in done.stderr and "3/3" in done.stderr  # gentwin.progress's bar reaches the terminal
    assert "without encryption" not in done.stderr and "TCP" not in done.stderr
    outputs = _stdout(json.loads(out.read_text()))
    assert "on the page" in outputs and "bar:" not in outputs and "it/s" not in outputs  # and not the page
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask_of_children()


def _umask_of_children() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_run_killed_mid_cell_keeps_the_old_page_and_leaves_no_temporary_file(tmp_path: Path, sig, write_chapter) -> None:
    root, src, old = _tiny_root(tmp_path, "import time\ntime.sleep(60)", write_chapter)
    before = old.read_bytes()
    err = tmp_path / "stderr.txt"
    private_tmp = tmp_path / "tmp"  # the kernel's connection file and IPC sockets go here
    private_tmp.mkdir()
    with open(err, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "gentwin", "run", str(src), "--root", str(root)],
                                stdout=subprocess.DEVNULL, stderr=fh, cwd=ROOT,
                                env={**os.environ, "TMPDIR": str(private_tmp)})
    try:
        deadline = time.monotonic() + 120
        while "cell 2/2" not in err.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, err.read_text()
            time.sleep(0.2)
        assert "cell 2/2" in err.read_text(), err.read_text()
        time.sleep(1.0)  # the sleeping cell is running now
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    assert old.read_bytes() == before
    if sig == signal.SIGTERM:  # stopped cleanly: kernel files removed too (SIGKILL leaves them in TMPDIR only)
        assert "terminated: the kernel was stopped" in err.read_text()
        assert list(private_tmp.iterdir()) == []
    leftovers = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.name.startswith(".")]
    assert leftovers == []  # no .tiny.ipynb.*.tmp anywhere
    assert sorted(p.name for p in old.parent.iterdir()) == ["tiny.ipynb"]


# ---------------------------------------------------------------------------
# gentwin diff-glue
# ---------------------------------------------------------------------------


def _executed(folder: Path, values: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    outputs = [{"output_type": "display_data",
                "metadata": {"scrapbook": {"name": k, "mime_prefix": "application/papermill.record/"}},
                "data": {"application/papermill.record/text/plain": v}} for k, v in values.items()]
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "", "execution_count": 1, "outputs": outputs}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (folder / "setup.ipynb").write_text(json.dumps(nb))
    return folder


def test_diff_glue_prints_differences_and_exits_1(tmp_path: Path) -> None:
    old = _executed(tmp_path / "old", {"dataset_relations": "580.0", "fig8_gentwin_ms": "0.70"})
    new = _executed(tmp_path / "new", {"dataset_relations": "130.0", "fig8_gentwin_ms": "0.91"})
    differ = gentwin("diff-glue", str(old), str(new))
    assert differ.returncode == 1
    assert differ.stdout.splitlines() == ["dataset_relations: 580.0 -> 130.0", "fig8_gentwin_ms: 0.70 -> 0.91"]
    only = gentwin("diff-glue", str(old), str(new), "--ignore", "_ms$")
    assert only.returncode == 1 and only.stdout.splitlines() == ["dataset_relations: 580.0 -> 130.0"]
    same = gentwin("diff-glue", str(old), str(old))
    assert same.returncode == 0 and same.stdout == ""
    ignored = gentwin("diff-glue", str(old), str(new), "--ignore", "relations|_ms")
    assert ignored.returncode == 0 and ignored.stdout == ""


def test_diff_glue_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = gentwin("diff-glue", str(tmp_path / "nope"), str(tmp_path))
    assert missing.returncode == 2 and "old_dir = " in missing.stderr
    bad = gentwin("diff-glue", str(tmp_path), str(tmp_path), "--ignore", "(")
    assert bad.returncode == 2 and "not a regular expression" in bad.stderr

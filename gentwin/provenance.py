"""Provenance of a result page: the commit, parameters, seeds, backbone, versions, device and wall time that made it.

The box (:meth:`Provenance.markdown`) carries the label the comparison page links to and download links for
the page's notebook and source; :func:`save_figure` keeps each figure as PNG, SVG and its data as CSV.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config
from .cache import package_versions
from .files import atomic_path, atomic_write_text

#: Where executed notebooks go, relative to the book's root (the folder the TOC reads).
EXECUTED_DIR = Path("book") / "executed"
#: Where the jupytext sources live, relative to the book's root.
SOURCE_DIR = Path("notebooks")

__all__ = ["Provenance", "provenance", "git_state", "weights_sha256", "rerun_command", "changed_from_paper",
           "provenance_label", "page_downloads", "FIGURES_DIR", "FigureFiles", "save_figure"]

_IMPORTED = time.perf_counter()

#: the libraries whose versions decide a result page's numbers
TRACKED_PACKAGES = ("torch", "transformers", "peft", "networkx", "neo4j")


def git_state(root: str | os.PathLike) -> tuple[str, bool]:
    """``(commit, dirty)`` of the git work tree at ``root``; ``("not a git checkout", False)`` elsewhere.

    Untracked files do not make the tree dirty: build outputs live there.
    """
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "not a git checkout", False
    status = git("status", "--porcelain", "--untracked-files=no")
    return head.stdout.strip(), bool(status.stdout.strip())


def weights_sha256(folder: str | os.PathLike) -> str | None:
    """SHA-256 over a model folder's ``*.safetensors`` files (sorted by name); None if it has none."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as fh:
            hashlib.file_digest(fh, lambda: digest)  # streams the file into the one running digest
    return digest.hexdigest()


def changed_from_paper(settings: config.Settings) -> dict[str, Any]:
    """Every parameter whose value differs from the paper profile's, by name.

    >>> changed_from_paper(config.resolve("paper", n_sensors=30))
    {'n_sensors': 30}
    >>> changed_from_paper(config.resolve("paper"))
    {}
    """
    paper = config.PROFILES["paper"].flat()
    return {k: v for k, v in settings.flat().items() if paper[k] != v}


def rerun_command(page: str, profile: str, overrides: Mapping[str, Any]) -> str:
    """The ``gentwin run`` command that re-creates a page with the same parameters (``None`` ones are left out).

    >>> rerun_command("fig6", "quick", {"rounds": 5, "fig6_orders": ("priority", "random"), "bottleneck": None})
    'gentwin run notebooks/fig6.md -p profile quick -p rounds 5 -p fig6_orders priority,random'
    """
    parts = [f"gentwin run notebooks/{page}.md"] + [f"-p profile {profile}"] * (profile != "paper")
    parts += [f"-p {k} {','.join(map(str, v)) if isinstance(v, (tuple, list)) else v}"
              for k, v in overrides.items() if v is not None]
    return " ".join(parts)


_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")


def _check_name(field_name: str, value: Any) -> str:
    """A page or figure name: lowercase letters, digits, ``-`` and ``_`` (it becomes a file name and a label)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{field_name} = {value!r}: must be lowercase letters, digits, '-' and '_', "
                         "starting with a letter or digit (it names files and a link target)")
    return value


def provenance_label(page: str) -> str:
    """The label of a page's provenance box, the target of ``{ref}`text <label>``` links."""
    return f"provenance-{_check_name('page', page)}"


def page_downloads(page: str) -> str:
    """Download links (MyST) for a chapter's executed notebook and its jupytext source, from its executed page.

    ``{download}`` copies each file into the built book (a plain link to them would be taken for a page).

    >>> print(page_downloads("fig6"))
    {download}`executed notebook (fig6.ipynb) <fig6.ipynb>`, {download}`source (notebooks/fig6.md) <../../notebooks/fig6.md>`
    """
    source = f"{SOURCE_DIR.as_posix()}/{_check_name('page', page)}.md"
    up = "/".join(".." for _ in EXECUTED_DIR.parts)  # from book/executed/PAGE to the book's root
    return (f"{{download}}`executed notebook ({page}.ipynb) <{page}.ipynb>`, "
            f"{{download}}`source ({source}) <{up}/{source}>`")


def _device() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    text = (f"{cpu}, {os.cpu_count()} cores; torch {torch.get_num_threads()} threads, CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}")
    return text + (f"; CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")


@dataclass(frozen=True)
class Provenance:
    """Everything a reader needs to know where a page's numbers came from."""

    page: str
    commit: str
    dirty: bool
    profile: str
    changed: Mapping[str, Any]
    seeds: tuple[int, ...]
    backbone: Mapping[str, Any] | None
    versions: Mapping[str, str]
    device: str
    wall_s: float
    date: str
    command: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        """A MyST admonition box (rendered at the end of each result page)."""
        changed = ", ".join(f"`{k} = {v!r}`" for k, v in self.changed.items()) or "none"
        lines = [
            f"* **commit**: `{self.commit[:12] if self.commit.isalnum() else self.commit}`"
            + (" (with uncommitted changes)" if self.dirty else ""),
            f"* **profile**: `{self.profile}`; parameters that differ from the paper profile: {changed}",
            f"* **seeds**: {', '.join(map(str, self.seeds)) if self.seeds else 'none (deterministic page)'}",
        ]
        if self.backbone:
            b = self.backbone
            lines.append(f"* **backbone**: {b['name']}, {b['parameters']:,} parameters, "
                         f"weights SHA-256 `{(b.get('sha256') or 'unknown')[:16]}`")
        lines += [
            "* **versions**: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()),
            f"* **device**: {self.device}",
            f"* **wall time**: {self.wall_s:.1f} s, finished {self.date}",
            *(f"* **{k}**: {v}" for k, v in self.extra.items()),
            f"* **re-run this page**: `{self.command}`",
            f"* **download this page**: {page_downloads(self.page)}",
        ]
        return (f"({provenance_label(self.page)})=\n"
                "```{admonition} Provenance of this page\n:class: note provenance\n\n" + "\n".join(lines) + "\n```\n")

    def _repr_markdown_(self) -> str:
        return self.markdown()


def _process_started() -> float:
    """This process's start on the ``time.perf_counter()`` clock: a page's kernel starts with the page."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.perf_counter() - (uptime - start_ticks / ticks)
    except (OSError, ValueError, IndexError):  # not Linux: from this module's import
        return _IMPORTED


def provenance(page: str, settings: config.Settings, overrides: Mapping[str, Any], *, started: float | None = None,
               seeds: Iterable[int] = (), model: Any = None, root: str | os.PathLike | None = None,
               now: float | None = None, extra: Mapping[str, Any] | None = None) -> Provenance:
    """The provenance of a page that began at ``started`` (``time.perf_counter()``; default: when its kernel
    started) and ends now.

    ``model`` (a transformers model, maybe adapted) adds the backbone's name, size and weights' SHA-256;
    ``root`` is the git work tree reported (default: the one holding the ``gentwin`` code that ran).
    """
    _check_name("page", page)
    backbone = None
    if model is not None:
        from .llm import describe_backbone

        info = describe_backbone(model)
        base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
        source = getattr(base.config, "_name_or_path", "") or ""
        backbone = {"name": info["name"], "parameters": info["parameters"],
                    "sha256": weights_sha256(source) if source and Path(source).is_dir() else None}
    commit, dirty = git_state(root if root is not None else Path(__file__).resolve().parents[1])
    wall = (now if now is not None else time.perf_counter()) - (started if started is not None else _process_started())
    return Provenance(
        page=page, commit=commit, dirty=dirty, profile=settings.profile, changed=changed_from_paper(settings),
        seeds=tuple(int(s) for s in seeds), backbone=backbone, versions=package_versions(TRACKED_PACKAGES),
        device=_device(), wall_s=wall, date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=rerun_command(page, settings.profile, overrides), extra=dict(extra or {}),
    )


#: where a page's figure files go, below the executed pages: ``book/executed/figures/PAGE/``
FIGURES_DIR = "figures"


@dataclass(frozen=True)
class FigureFiles:
    """The PNG, SVG and CSV files :func:`save_figure` wrote for one figure; shown, the links to them."""

    page: str
    name: str
    folder: Path  #: ``ROOT/book/executed/figures/PAGE``

    def path(self, suffix: str) -> Path:
        """The file of one format: ``suffix`` is ``"png"``, ``"svg"`` or ``"csv"``."""
        return self.folder / f"{self.name}.{suffix}"

    def link(self, suffix: str) -> str:
        """The file of one format as the executed page links to it (relative to ``book/executed``)."""
        return f"{FIGURES_DIR}/{self.page}/{self.name}.{suffix}"

    def markdown(self) -> str:
        """One line of download links under the figure (a link to a missing file fails the ``-n`` build).

        >>> print(FigureFiles("fig6", "curves", Path("book/executed/figures/fig6")).markdown())
        Download this figure: [PNG](figures/fig6/curves.png) · [SVG](figures/fig6/curves.svg) · [data (CSV)](figures/fig6/curves.csv)
        """
        links = " · ".join(f"[{label}]({self.link(suffix)})"
                           for suffix, label in (("png", "PNG"), ("svg", "SVG"), ("csv", "data (CSV)")))
        return f"Download this figure: {links}"

    def _repr_markdown_(self) -> str:
        return self.markdown()


def _as_frame(data: Any):
    """The data behind a figure as a flat table whose CSV reads back to it (index and column levels become columns)."""
    import pandas as pd

    if isinstance(data, pd.Series):
        data = data.to_frame(data.name if data.name is not None else "value")
    elif isinstance(data, Mapping) or (isinstance(data, (list, tuple)) and data):
        data = pd.DataFrame(data)
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data = {type(data).__name__}: the data behind a figure must be a pandas DataFrame or "
                        "Series, a mapping of columns or a non-empty list of records")
    if data.shape[1] == 0:
        raise ValueError("data has no column: save the numbers the figure draws")
    index = data.index
    plain = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1 and index.name is None
    frame = data if plain else data.reset_index()
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.set_axis([" ".join(str(p) for p in col if str(p)) for col in frame.columns], axis=1)
    return frame


def save_figure(fig: Any, page: str, name: str, data: Any, *, root: str | os.PathLike | None = None,
                dpi: int = 150) -> FigureFiles:
    """Save a page's figure as PNG and SVG and the data it draws as CSV, beside the executed page.

    The files are ``ROOT/book/executed/figures/PAGE/NAME.png|svg|csv`` (``root``: default the current folder,
    where a chapter runs), each written atomically; the SVG is the same bytes for the same figure.  ``data``
    (DataFrame, Series, mapping of columns or list of records) keeps a non-default index as columns, so
    ``pandas.read_csv`` gives the table back.  The returned :class:`FigureFiles` displays as download links.
    """
    import matplotlib

    _check_name("page", page)
    _check_name("name", name)
    if not callable(getattr(fig, "savefig", None)):
        raise TypeError(f"fig = {type(fig).__name__}: not a matplotlib figure (it has no savefig)")
    frame = _as_frame(data)
    files = FigureFiles(page, name, Path(root if root is not None else ".") / EXECUTED_DIR / FIGURES_DIR / page)
    with atomic_path(files.path("png")) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    with matplotlib.rc_context({"svg.hashsalt": f"{page}/{name}"}), atomic_path(files.path("svg")) as tmp:
        fig.savefig(tmp, format="svg", bbox_inches="tight", metadata={"Date": None})
    atomic_write_text(files.path("csv"), frame.to_csv(index=False, lineterminator="\n"))
    return files

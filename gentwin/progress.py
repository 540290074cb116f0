"""Progress bars for long work: shown on the terminal that runs a page, never saved into the page."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["progress"]


def progress(iterable: Iterable[Any] | None = None, *, desc: str, total: int | None = None,
             disable: bool = False, **kwargs: Any):
    """A tqdm bar written to the process's own stderr, ``sys.__stderr__``.

    In a notebook kernel ``sys.stderr`` is the cell's output, so a bar there would be saved into the page;
    the kernel's own stderr is the terminal that runs ``gentwin run`` (outside a kernel they are the same).
    """
    from tqdm.std import tqdm

    stream = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
    return tqdm(iterable, desc=desc, total=total, disable=disable, file=stream, dynamic_ncols=True, **kwargs)

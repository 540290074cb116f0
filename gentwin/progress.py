"""Progress bars for long work: shown on the terminal that runs a page, never saved into the page."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["progress"]


def progress(iterable: Iterable[Any] | None = None, *, desc: str, total: int | None = None,
             disable: bool = False, **kwargs: Any):
    """A tqdm bar written to the process's own stderr.

    Inside a notebook kernel ``sys.stderr`` is the cell's output: a bar there would be saved into the
    executed page (and ``tqdm.auto`` warns "IProgress not found" without ipywidgets). The kernel
    process's own stderr, ``sys.__stderr__``, is the terminal that runs ``gentwin run`` or
    ``gentwin book``, so the reader of the terminal sees the bar and the published page does not.
    Outside a kernel the two are the same stream.
    """
    from tqdm.std import tqdm

    stream = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
    return tqdm(iterable, desc=desc, total=total, disable=disable, file=stream, dynamic_ncols=True, **kwargs)

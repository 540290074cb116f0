"""Argument checks shared by every module: integers, finite reals and choices, with errors naming the argument."""
from __future__ import annotations

import math
from collections.abc import Collection
from numbers import Integral, Real
from typing import Any

__all__ = ["check_int", "check_real", "check_choice"]


def _bounds(name: str, value: Any, low: Any, high: Any, low_open: bool, high_open: bool,
            error: type[Exception]) -> None:
    if low is not None and (value <= low if low_open else value < low):
        raise error(f"{name} = {value!r}: must be {'>' if low_open else '>='} {low}")
    if high is not None and (value >= high if high_open else value > high):
        raise error(f"{name} = {value!r}: must be {'<' if high_open else '<='} {high}")


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              error: type[Exception] = ValueError) -> int:
    """Return ``value`` as ``int`` if it is an integer (not a bool) within ``[low, high]``.

    >>> check_int("n", 3, low=1)
    3
    >>> check_int("n", True)
    Traceback (most recent call last):
    ...
    ValueError: n = True: must be an integer
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise error(f"{name} = {value!r}: must be an integer")
    _bounds(name, int(value), low, high, False, False, error)
    return int(value)


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, error: type[Exception] = ValueError) -> float:
    """Return ``value`` as ``float`` if it is a finite real number (not a bool) within the bounds.

    ``low_open`` / ``high_open`` make the bound strict.

    >>> check_real("rate", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: rate = nan: must be a finite number
    >>> check_real("rate", 0.0, low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: rate = 0.0: must be > 0
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise error(f"{name} = {value!r}: must be a number")
    if not math.isfinite(value):
        raise error(f"{name} = {float(value)!r}: must be a finite number")
    _bounds(name, float(value), low, high, low_open, high_open, error)
    return float(value)


def check_choice(name: str, value: Any, choices: Collection[Any], *, error: type[Exception] = ValueError) -> Any:
    """Return ``value`` if it is one of ``choices``.

    >>> check_choice("band", "wide", ("paper", "corrected"))
    Traceback (most recent call last):
    ...
    ValueError: band = 'wide': must be one of 'paper', 'corrected'
    """
    if value not in choices:
        raise error(f"{name} = {value!r}: must be one of {', '.join(repr(c) for c in choices)}")
    return value

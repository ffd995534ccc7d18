"""Checks for parameters, with one kind of message: ``NAME must be <what is allowed>, got <value>``.

The parameters of every notebook and the arguments of every public helper go through these, so a
bad value fails before any work, with a ``ValueError`` that names the parameter, the value given
and what is allowed. Booleans are never accepted as numbers (``True`` is an ``int`` in Python).

    >>> check_int("ROUNDS", 3, low=1)
    3
    >>> check_int("ROUNDS", 0, low=1)
    Traceback (most recent call last):
    ...
    ValueError: ROUNDS must be an integer >= 1, got 0
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Sequence


def is_int(value: Any) -> bool:
    """An integer (Python or NumPy), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number (int or float, Python or NumPy), and not a bool. An int too large
    for a float (beyond about 1.8e308) does not count: it would be infinite as a float."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _fail(name: str, what: str, value: Any, allow_none: bool):
    raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, got {value!r}")


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None,
              allow_none: bool = False) -> int | None:
    """``value`` as an int if it is an integer in [low, high] (either bound may be None)."""
    if value is None and allow_none:
        return None
    what = ("an integer " + _range_text(low, high, False, False)).strip()
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        _fail(name, what, value, allow_none)
    return int(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False,
                 allow_none: bool = False) -> float | None:
    """``value`` as a float if it is a finite number in the given range (``low_open``: ``low``
    itself is not allowed; likewise ``high_open``)."""
    if value is None and allow_none:
        return None
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        _fail(name, ("a finite number " + _range_text(low, high, low_open, high_open)).strip(),
              value, allow_none)
    return float(value)


def check_positive(name: str, value: Any, allow_zero: bool = False, allow_none: bool = False):
    """A finite number > 0 (``allow_zero``: >= 0), as a float."""
    if value is None and allow_none:
        return None
    if not is_number(value) or not (value >= 0 if allow_zero else value > 0):
        _fail(name, f"a {'non-negative' if allow_zero else 'positive'} finite number", value, allow_none)
    return float(value)


def check_fraction(name: str, value: Any, allow_zero: bool = True, allow_one: bool = False,
                   allow_none: bool = False):
    """A share: a number in [0, 1) by default (``allow_zero``/``allow_one`` move the ends)."""
    return check_number(name, value, 0, 1, low_open=not allow_zero, high_open=not allow_one,
                        allow_none=allow_none)


def check_choice(name: str, value: Any, choices: Iterable, allow_none: bool = False):
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value is None and allow_none:
        return None
    try:
        ok = value in choices
    except (TypeError, ValueError):  # an incomparable value (a NumPy array: ambiguous truth)
        ok = False
    if not ok:
        _fail(name, "one of " + ", ".join(repr(c) for c in choices), value, allow_none)
    return value


def check_list(name: str, value: Any, check_item: Callable[[str, Any], Any],
               allow_empty: bool = False) -> list:
    """A list (or tuple) whose every item passes ``check_item(f"{name}[i]", item)``; returns
    the checked items."""
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}list, got {value!r}")
    return [check_item(f"{name}[{i}]", item) for i, item in enumerate(value)]


def check_known(what: str, given: Iterable[str], known: Sequence[str]) -> None:
    """Unknown names are an error (a typo must not fall back to a default silently)."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(sorted(known))}")

"""Argument checks shared by the Python layer, so every entry point follows the errors contract.

A wrong type raises :class:`TypeError` naming the argument; a value out of range (also one too
large for the field that stores it) raises :class:`tidelog.InvalidConfigError` naming it,
never ``OverflowError`` or ``struct.error`` later on.
"""

from __future__ import annotations

import errno
import functools
import math
import operator
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from tidelog._core import InvalidConfigError, StorageError, TidelogError

__all__ = ["MAX_SECONDS", "check_int", "check_seconds", "check_text", "storage_errors"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Longest lease, lock or delay accepted, in seconds (ten years): expiries are stored as
#: 64-bit milliseconds since the epoch, and a longer one is a mistake, not a setting.
MAX_SECONDS = 10 * 365 * 86_400.0


def check_int(value: object, arg: str, low: int, high: int) -> int:
    """Returns ``value`` as an int if it is one (or has ``__index__``), not a bool, in range.

    Raises:
        TypeError: Not an int (the message names ``arg``).
        InvalidConfigError: Outside ``low..=high`` (the message names ``arg`` and the range).
    """
    if isinstance(value, bool):
        raise TypeError(f"{arg} must be int, got bool")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{arg} must be int, got {type(value).__name__}") from None
    if not low <= number <= high:
        raise InvalidConfigError(f"{arg} must be between {low} and {high}, got {number}")
    return number


def check_seconds(value: object, arg: str, *, high: float = MAX_SECONDS) -> float:
    """Returns ``value`` if it is a positive, finite number of seconds up to ``high``.

    Raises:
        TypeError: Not a number (the message names ``arg``).
        InvalidConfigError: Not positive, not finite, or above ``high``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{arg} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value) if not isinstance(value, int) or abs(value) < 2**1000 else math.inf
    if not 0 < seconds <= high:
        raise InvalidConfigError(
            f"{arg} must be a positive number of seconds up to {high:.0f}, got {value}"
        )
    return seconds


def check_text(value: object, arg: str, *, empty: bool = True) -> str:
    """Returns ``value`` if it is a ``str`` that can be stored (valid Unicode, UTF-8).

    Raises:
        TypeError: Not a str (or empty, unless ``empty``); the message names ``arg``.
        InvalidConfigError: It holds a lone surrogate, which has no UTF-8 form.
    """
    if not isinstance(value, str) or (not empty and not value):
        what = "str" if empty else "a non-empty str"
        raise TypeError(f"{arg} must be {what}, got {type(value).__name__}")
    try:
        value.encode()
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "replace").decode()
        raise InvalidConfigError(
            f"{arg} {shown!r} is not valid Unicode (it holds a lone surrogate)"
        ) from None
    return value


def storage_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Makes an ``OSError`` from Python file I/O in ``method`` a :class:`StorageError`.

    The native core already raises :class:`StorageError`; this gives the Python layer's own
    files (group membership, work-queue state) the same contract: a ``TidelogError`` that is
    also an ``OSError`` with the ``errno``, ``strerror`` and ``filename`` of the failure.
    Applied to the methods that do such I/O, not to the hot paths that never do.
    """

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except OSError as e:
            if isinstance(e, TidelogError):
                raise
            code = e.errno if e.errno is not None else errno.EIO
            raise StorageError(code, e.strerror or str(e), e.filename) from e

    return wrapper

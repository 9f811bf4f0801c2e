"""``ProcessSlot``: the one runtime of a function process, built on first use, replaceable.

A function runtime keeps one runtime object per warm process: built from the environment by
the first invocation that needs it (not at import, so a cold start pays nothing before its
first line runs), then reused; tests install one made with parts of their own, or ``None``
so the next use builds a fresh one from the environment they set.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

_T = TypeVar("_T")


class ProcessSlot(Generic[_T]):
    """This process's runtime: ``get`` builds it with ``make`` on first use, then reuses it."""

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._value: _T | None = None

    def get(self) -> _T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def install(self, new: _T | None) -> _T | None:
        """Replace it (tests); ``None`` makes the next ``get`` build a fresh one. Returns the
        one it replaced."""
        with self._lock:
            old, self._value = self._value, new
            return old


__all__ = ["ProcessSlot"]

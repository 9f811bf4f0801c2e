"""``LazyParts``: a cloud runtime's parts, each built the first time something asks for it.

A function instance serves many invocations, and most use few parts: ``/health`` builds
nothing, the step worker never reads the API token, a request that reads the state store never
loads the blob client. So a runtime keeps its parts here, each built once (thread-safe: the
Functions host and Lambda both run invocations on threads) and then reused while the instance
lives; a part handed in up front (a test's clock, a store that fails on purpose) is never built.
``LazyProxy`` is a part that is built on its first attribute use, for an adapter that takes a
client at construction but may never call it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

_T = TypeVar("_T")


class LazyParts:
    def __init__(self, **given: Any) -> None:
        self._lock = threading.RLock()
        self._parts: dict[str, Any] = {k: v for k, v in given.items() if v is not None}

    def once(self, name: str, build: Callable[[], _T]) -> _T:
        """The part ``name``: ``build()`` the first time, the same object afterwards."""
        with self._lock:
            if name not in self._parts:
                self._parts[name] = build()
            part: _T = self._parts[name]
            return part

    def built(self, name: str) -> bool:
        with self._lock:
            return name in self._parts


class LazyProxy:
    """An object made on first attribute use, then used for every attribute."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._made: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if self._made is None:
            with self._lock:
                if self._made is None:
                    self._made = self._make()
        return getattr(self._made, name)


__all__ = ["LazyParts", "LazyProxy"]

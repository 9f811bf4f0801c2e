"""``Parts``: a cloud runtime's parts, each built the first time a handler asks for it.

A function runtime (Lambda, Cloud Functions, Azure Functions) keeps one runtime object per
warm process, and should build only what an invocation needs: the step worker never fetches
the API token, ``/health`` builds nothing, and a request that reads the state store loads no
queue or blob client. ``Parts`` is that cache, thread-safe (a handler's threads, lease
heartbeats), with parts a test hands in ready-made; ``Lazy`` is a part whose construction
waits for its first attribute use (an SDK client given to an adapter that may never call it).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

_T = TypeVar("_T")


class Parts:
    """Named parts built once by ``once``; ``given`` ones (``None`` values ignored) are kept
    as they are and never built."""

    def __init__(self, **given: object) -> None:
        # Reentrant: a part's builder asks for the parts it is made of.
        self._lock = threading.RLock()
        self._parts: dict[str, Any] = {k: v for k, v in given.items() if v is not None}

    def once(self, name: str, build: Callable[[], _T]) -> _T:
        """The part ``name``, built by ``build`` on the first call (by one thread) and kept."""
        with self._lock:
            if name not in self._parts:
                self._parts[name] = build()
            part: _T = self._parts[name]
            return part

    def lazy(self, name: str, build: Callable[[], Any]) -> Any:
        """A stand-in for the part ``name`` that builds it on its first attribute use."""
        return self.once(f"lazy:{name}", lambda: Lazy(lambda: self.once(name, build)))

    def built(self, name: str) -> bool:
        with self._lock:
            return name in self._parts


class Lazy:
    """An object made by ``make`` on first attribute use (once, whichever thread comes first);
    every use goes to it."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._made: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._made is None:
                self._made = self._make()
        return getattr(self._made, name)


__all__ = ["Lazy", "Parts"]

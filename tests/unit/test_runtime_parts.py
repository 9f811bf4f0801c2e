"""nclav.runtime.parts: a runtime's parts built once, on first use, by one thread."""

from __future__ import annotations

import threading
import time

from nclav.runtime.parts import Lazy, Parts


def test_a_part_is_built_once_however_many_threads_ask() -> None:
    parts, builds = Parts(), []

    def build() -> object:
        builds.append(1)
        time.sleep(0.05)  # long enough for the other threads to arrive meanwhile
        return object()

    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(parts.once("x", build))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len({id(g) for g in got}) == 1


def test_a_given_part_is_never_built_and_none_is_not_given() -> None:
    given = object()
    parts = Parts(store=given, clock=None)
    assert parts.once("store", lambda: object()) is given
    assert not parts.built("clock")
    assert parts.once("clock", lambda: "built") == "built"


def test_a_builder_may_ask_for_other_parts() -> None:
    parts = Parts()
    assert parts.once("outer", lambda: parts.once("inner", lambda: 2) + 1) == 3


def test_a_lazy_part_is_built_by_its_first_attribute_use() -> None:
    parts = Parts()
    proxy = parts.lazy("client", lambda: "made")
    assert parts.lazy("client", lambda: "other") is proxy
    assert not parts.built("client")
    assert proxy.upper() == "MADE"
    assert parts.built("client")


def test_a_lazy_object_is_made_once_on_first_use() -> None:
    made: list[int] = []

    def make() -> str:
        made.append(1)
        return "client"

    lazy = Lazy(make)
    assert made == []
    assert lazy.upper() == "CLIENT" and lazy.title() == "Client"
    assert made == [1]

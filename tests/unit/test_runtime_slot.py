"""Core's ``ProcessSlot``: a function process's one runtime, built on first use, replaceable."""

from __future__ import annotations

import threading

from nclav.runtime.slot import ProcessSlot


def test_the_slot_builds_once_on_first_use_even_when_asked_at_once() -> None:
    made: list[int] = []

    def make() -> list[str]:
        made.append(1)
        return ["fresh"]

    slot: ProcessSlot[list[str]] = ProcessSlot(make)
    assert made == []  # nothing at construction (a module import)
    barrier = threading.Barrier(8)
    found: list[list[str]] = []

    def ask() -> None:
        barrier.wait()
        found.append(slot.get())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == [1] and all(f is found[0] for f in found)


def test_the_slot_can_be_replaced_and_emptied() -> None:
    slot: ProcessSlot[list[str]] = ProcessSlot(lambda: ["fresh"])
    first = slot.get()
    assert slot.install(["installed"]) is first
    assert slot.get() == ["installed"]
    slot.install(None)
    assert slot.get() == ["fresh"] and slot.get() is not first

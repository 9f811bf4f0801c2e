"""``StepContext.update``: an enclave's read-modify-write starts from what the step last saw."""

from __future__ import annotations

from collections import Counter
from typing import Any

from nclav.config import Desired
from nclav.engine.steps import StepContext
from nclav.local import InMemoryStateStore
from nclav.model import Cloud
from nclav.plan import empty_graph
from nclav.state import EnclaveState


class Reads(InMemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def get_enclave(self, enclave_id: str) -> tuple[EnclaveState, int] | None:
        self.calls["get_enclave"] += 1
        return super().get_enclave(enclave_id)


def context(store: Reads) -> StepContext:
    def event(*_: Any, **__: Any) -> None:
        pass

    return StepContext(
        store=store,
        graph=empty_graph(Desired(())),
        files={},
        drivers={},
        default_cloud=Cloud.LOCAL,
        iac=None,  # type: ignore[arg-type]
        run_id="r",
        event=event,
    )


def vars_of(store: Reads) -> dict[str, str]:
    found = store.get_enclave("e")
    assert found is not None
    return found[0].context_vars


def test_an_update_after_a_read_or_a_write_of_the_step_reads_nothing_more() -> None:
    store = Reads()
    store.put_enclave(EnclaveState(enclave_id="e"), None)
    ctx = context(store)
    assert ctx.enclave("e") is not None
    ctx.update("e", lambda s: s.model_copy(update={"context_vars": {"a": "1"}}) if s else None)
    ctx.update(
        "e",
        lambda s: (
            s.model_copy(update={"context_vars": {**s.context_vars, "b": "2"}}) if s else None
        ),
    )
    assert store.calls["get_enclave"] == 1
    assert vars_of(store) == {"a": "1", "b": "2"}


def test_a_record_changed_meanwhile_is_read_again_and_nothing_is_lost() -> None:
    store = Reads()
    store.put_enclave(EnclaveState(enclave_id="e"), None)
    ctx = context(store)
    ctx.enclave("e")
    found = store.get_enclave("e")
    assert found is not None
    store.put_enclave(found[0].model_copy(update={"context_vars": {"other": "x"}}), found[1])
    ctx.update(
        "e",
        lambda s: (
            s.model_copy(update={"context_vars": {**s.context_vars, "a": "1"}}) if s else None
        ),
    )
    assert vars_of(store) == {"other": "x", "a": "1"}
    # Deleted meanwhile: the change sees None.
    seen: list[EnclaveState | None] = []

    def unchanged(s: EnclaveState | None) -> EnclaveState | None:
        seen.append(s)
        return s

    ctx.update("e", unchanged)
    store.delete_enclave("e", store.get_enclave("e")[1])  # type: ignore[index]
    ctx.update("e", unchanged)
    assert seen[-1] is None and store.get_enclave("e") is None

"""The group-join fix's pieces without a broker (the real-broker test is in integration)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

from kafka.future import Future

from streamwatch.sources.kafka_join import _Finished, install


def _finished(value: Any) -> Future:
    task = Future()
    task.success(value)
    return task


def test_a_finished_join_looks_in_flight_but_hands_over_its_result() -> None:
    shown = _Finished(_finished(b"assignment"))
    assert not shown.is_done  # so kafka-python awaits it instead of joining again
    got: list[Any] = []
    shown.add_callback(got.append)
    shown.add_errback(got.append)
    assert got == [b"assignment"]

    async def take() -> Any:
        return await shown

    coro = take()
    try:
        coro.send(None)
    except StopIteration as stop:
        assert stop.value == b"assignment"
    else:
        raise AssertionError("awaiting a finished join must not suspend")


def test_only_a_coordinator_of_the_known_shape_is_patched() -> None:
    assert not install(SimpleNamespace())  # no coordinator
    assert not install(SimpleNamespace(_coordinator=SimpleNamespace()))


def test_the_wrapper_takes_a_succeeded_join_and_leaves_a_failed_one() -> None:
    seen: list[Any] = []

    async def join_group_async(timeout_ms: int | None = None) -> bool:
        seen.append(coordinator._join_task)
        return True

    coordinator = SimpleNamespace(
        join_group_async=join_group_async, need_rejoin=lambda: False, _join_task=None
    )
    assert install(SimpleNamespace(_coordinator=coordinator))

    def run(task: Any) -> None:
        coordinator._join_task = task
        with contextlib.suppress(StopIteration):
            coordinator.join_group_async(timeout_ms=0).send(None)

    run(_finished(b"x"))
    failed = Future()
    failed.failure(RuntimeError("rebalance"))
    run(failed)
    pending = Future()
    run(pending)
    run(None)
    assert isinstance(seen[0], _Finished)
    assert seen[1:] == [failed, pending, None]


def test_a_finished_join_that_is_not_taken_is_put_back_as_it_was() -> None:
    async def join_group_async(timeout_ms: int | None = None) -> bool:
        return False  # as kafka-python's loop when no coordinator answers in time

    task = _finished(b"old")
    coordinator = SimpleNamespace(
        join_group_async=join_group_async, need_rejoin=lambda: False, _join_task=task
    )
    assert install(SimpleNamespace(_coordinator=coordinator))
    with contextlib.suppress(StopIteration):
        coordinator.join_group_async(timeout_ms=0).send(None)
    assert coordinator._join_task is task


def test_a_join_in_flight_or_untaken_keeps_a_rejoin_due() -> None:
    """kafka-python only enters its join loop when a rejoin is due, and may stop thinking one
    is (its reason cleared inside the join) while the join is still to be finished."""

    async def join_group_async(timeout_ms: int | None = None) -> bool:
        return True

    reason = [False]
    coordinator = SimpleNamespace(
        join_group_async=join_group_async, need_rejoin=lambda: reason[0], _join_task=None
    )
    assert install(SimpleNamespace(_coordinator=coordinator))
    assert not coordinator.need_rejoin()
    reason[0] = True
    assert coordinator.need_rejoin()
    reason[0] = False
    coordinator._join_task = Future()  # in flight
    assert coordinator.need_rejoin()
    coordinator._join_task = _finished(b"x")  # finished, not yet taken
    assert coordinator.need_rejoin()

"""Fixes for kafka-python 3.0.x's group join, where a join that a poll did not wait out is lost.

kafka-python runs JoinGroup and SyncGroup as one task on its IO thread, and ``poll`` waits for
that task only as long as its own timeout; a later poll is meant to pick the task up.  Two
ways it does not:

- *A join that finished while nobody waited is thrown away.*  The next ``poll`` sees a
  finished task, takes it for a stale one and sends a new JoinGroup, dropping the assignment
  it had just been given.  The new JoinGroup starts another rebalance, the other members
  rejoin, and the same can happen again: we saw a group of two stay split wrongly for over a
  minute (one member still holding both partitions, the other one of them).
- *A join whose reason went away inside it is forgotten.*  A rejoin that new metadata asked
  for (a topic created after the member joined, say) is due only while the metadata differs
  from what the last assignment used, and the leader's own assignment, inside the join,
  records the new metadata.  If the poll that started the join returned first, the next one
  sees no rejoin due and never finishes the join: the member sits with no partitions, its
  heartbeats off (they stay off during a join), until the broker drops it.  This was the
  daemon's 90 s stall in CI.

Both are fixed on one consumer instance, wrapping two coordinator methods:
``need_rejoin`` also says yes while a join task exists, so every poll carries an unfinished
join on; and in ``join_group_async`` a task that finished with success is shown to
kafka-python's loop as still in flight, so the loop awaits it (which returns at once) and
completes the join with its assignment, as it does for a join that finishes inside a poll.  A
join that failed is left alone: its error handlers already asked for a new join.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from streamwatch.sources import kafka_compat

PATCH = "join_fix"  # its name in logs and in streamwatch_kafka_patch_active


class _Finished:
    """A finished join task that reports itself still in flight.  kafka-python's loop uses
    only ``is_done``, the callbacks (through ``wait_for``) and ``await``."""

    is_done = False

    def __init__(self, task: Any) -> None:
        self._task = task

    def add_callback(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._task.add_callback(f, *args, **kwargs)  # a done Future calls f at once

    def add_errback(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._task.add_errback(f, *args, **kwargs)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._task.__await__()


def install(consumer: Any) -> bool:
    """Wrap ``consumer``'s (a KafkaConsumer's) group join; False where kafka-python's
    coordinator does not have the shape this fix knows."""
    try:
        import kafka
    except ImportError:
        return False
    coordinator: Any = getattr(consumer, "_coordinator", None)
    join: Any = getattr(coordinator, "join_group_async", None)
    need: Any = getattr(coordinator, "need_rejoin", None)
    if (
        not kafka_compat.known(kafka.__version__)  # the coordinator internals used below
        or join is None
        or need is None
        or not hasattr(coordinator, "_join_task")
    ):
        return False

    def need_rejoin() -> bool:
        return coordinator._join_task is not None or bool(need())

    async def join_group_async(timeout_ms: int | None = None) -> bool:
        task = coordinator._join_task
        if task is None or not task.is_done or not task.succeeded():
            return bool(await join(timeout_ms=timeout_ms))
        shown = coordinator._join_task = _Finished(task)
        try:
            return bool(await join(timeout_ms=timeout_ms))
        finally:
            if coordinator._join_task is shown:  # not taken (no coordinator in time, say):
                coordinator._join_task = task  # back as it was, for the next poll to take

    coordinator.need_rejoin = need_rejoin
    coordinator.join_group_async = join_group_async
    return True

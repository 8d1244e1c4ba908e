"""Kafka source on kafka-python: a consumer group member that never auto-commits."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

import kafka
from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import AuthorizationError, GroupAuthorizationFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from streamwatch.config import KafkaConfig, key_path
from streamwatch.errors import ConfigError, SourceError
from streamwatch.records import Record
from streamwatch.sinks import DENIED
from streamwatch.sinks.kafka import (
    READ,
    TOPIC_WAIT_SECONDS,
    admin_settings,
    closing_quietly,
    topic_access,
)
from streamwatch.sources import (
    Offsets,
    Partition,
    PartitionEvent,
    kafka_compat,
    kafka_join,
    kafka_records,
)

if TYPE_CHECKING:
    from streamwatch.metrics import Metrics

log = logging.getLogger("streamwatch")

# The patches of kafka-python's internals, each with what the daemon loses without it.
PATCHES: dict[str, tuple[Callable[[KafkaConsumer], bool], str]] = {
    kafka_records.PATCH: (
        kafka_records.install,
        "records are read with kafka-python's own decoder (slower)",
    ),
    kafka_join.PATCH: (
        kafka_join.install,
        "a group join that finishes between polls can be lost again, leaving a member without "
        "partitions until the broker drops it (the 90 s join stall)",
    ),
}
_warned: set[str] = set()  # patches already warned about: once a process, not once a consumer

_ASSIGNORS = {
    "cooperative-sticky": CooperativeStickyAssignor,
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
}

# The final commit and leaving the group each wait this long at most: a stop with the broker
# away must end in bounded time (what is not committed is read again: at least once).
CLOSE_TIMEOUT_MS = 10_000
COMMIT_RETRY_SECONDS = 1.0  # after a failed asynchronous commit
COMMITTED_MS = 10_000  # asking for a newly assigned partition's committed offset


def check_extra_settings(cfg: KafkaConfig) -> None:
    """Unknown keys under kafka.consumer / kafka.producer are errors, as everywhere."""
    from kafka import KafkaProducer

    for section, known in (
        ("consumer", KafkaConsumer.DEFAULT_CONFIG),
        ("producer", KafkaProducer.DEFAULT_CONFIG),
    ):
        for key in getattr(cfg, section):
            if key not in known:
                # the key as the config loader shows keys: quoted and cut when it is odd
                raise ConfigError(key_path(f"kafka.{section}", key), "not a kafka-python setting")


class _Listener(ConsumerRebalanceListener):
    """kafka-python calls these on its IO thread, from inside ``poll`` or ``close``, where
    nothing may block: they only queue the change for the run loop (``events``), pause what
    is new until the loop has restored its state and positioned it (``start``), and stop
    committing offsets for what is gone (committed later, they would move the new owner's
    offsets back).  Every batch's offsets were handed to an asynchronous commit before the
    next poll; should that last commit lose the race with the rebalance, the next owner
    replays one batch: at least once."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._gone("revoked", revoked)

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self._gone("lost", lost)

    def _gone(self, kind: Literal["revoked", "lost"], tps: Iterable[TopicPartition]) -> None:
        parts = frozenset((tp.topic, tp.partition) for tp in tps)
        log.info("partitions %s: %s", kind, _names(parts))
        self.source.forget(parts)
        if parts:
            self.source._events.append(PartitionEvent(kind, parts))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        tps = list(assigned)
        parts = frozenset((tp.topic, tp.partition) for tp in tps)
        log.info("partitions assigned: %s", _names(parts))
        if tps:
            self.source.consumer.pause(*tps)
            self.source._events.append(PartitionEvent("assigned", parts))


def _names(parts: Iterable[Partition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(parts)) or "none"


def _kafka_offsets(offsets: Offsets) -> dict[TopicPartition, OffsetAndMetadata]:
    return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}


def install_patches(consumer: KafkaConsumer, metrics: Metrics | None = None) -> dict[str, bool]:
    """Install each of PATCHES on ``consumer``: which ones took, also exported as
    streamwatch_kafka_patch_active.  One that stands down is logged at WARNING once a process:
    an operator should know that the daemon runs without it, and why."""
    version = kafka.__version__
    active: dict[str, bool] = {}
    for name, (install, cost) in PATCHES.items():
        active[name] = install(consumer)
        if metrics is not None:
            metrics.kafka_patch_active.labels(patch=name).set(1 if active[name] else 0)
        if not active[name] and name not in _warned:
            _warned.add(name)
            why = (
                f"it knows kafka-python {kafka_compat.REQUIREMENT} only"
                if not kafka_compat.known(version)
                else "the consumer's internals or settings are not those it knows"
            )
            log.warning(
                "kafka-python %s: patch %s not installed (%s): %s", version, name, why, cost
            )
    return active


class KafkaSource:
    def __init__(self, cfg: KafkaConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        check_extra_settings(cfg)
        try:
            self.consumer = KafkaConsumer(
                **cfg.consumer,
                **cfg.client_settings(os.environ),
                group_id=cfg.group_id,
                enable_auto_commit=False,  # offsets move only after outputs are acknowledged
                auto_offset_reset=cfg.auto_offset_reset,
                max_poll_records=cfg.max_poll_records,
                group_instance_id=cfg.instance_id(os.environ),
                partition_assignment_strategy=(_ASSIGNORS[cfg.partition_assignment],),
            )
        except KafkaError as exc:
            raise SourceError(
                f"cannot connect to Kafka at {cfg.bootstrap_servers}: {exc}", retriable=True
            ) from exc
        self.patches = install_patches(self.consumer, metrics)
        self._events: deque[PartitionEvent] = deque()  # appended on the IO thread
        self._pending: Offsets = {}  # the latest offsets handed to commit, per partition
        self._in_flight = False
        self._sent: Offsets = {}  # what the last asynchronous commit carried
        self._failing_since: float | None = None  # commits failing (the broker away) since
        self._retry_at = 0.0  # and not tried again before this (monotonic), not every poll
        self.consumer.subscribe(list(cfg.input_topics), listener=_Listener(self))

    def poll(self, timeout_ms: int) -> list[Record]:
        try:
            batches = self.consumer.poll(
                timeout_ms=timeout_ms, max_records=self.cfg.max_poll_records
            )
        except AuthorizationError as exc:  # the group's or a topic's ACL
            if not isinstance(exc, GroupAuthorizationFailedError):
                raise SourceError(f"consuming failed: {exc}", retriable=False) from exc
            raise SourceError(
                f"kafka.group_id: group {self.cfg.group_id!r} is not usable by this client: the "
                "broker's ACLs do not allow Read on it to the daemon's principal: grant it or "
                f"name another group ({exc})",
                retriable=False,  # waiting changes nothing: an operator grants it, a restart runs
            ) from exc
        except KafkaError as exc:  # what kafka-python does not retry itself: the loop will
            raise SourceError(f"consuming failed: {exc}", retriable=True) from exc
        out: list[Record] = []
        for records in batches.values():
            # Records already (kafka_records), or kafka-python's ConsumerRecords, which have
            # Record's fields under the same names: passed on as they are either way.
            out.extend(records)
        return out

    def commit(self, offsets: Offsets) -> None:
        """Commit without waiting for the broker: a round trip per batch would add its time to
        every record's latency.  Offsets only ever move forward, so a lost asynchronous commit
        is covered by the next; at close the last offsets are committed synchronously."""
        self._pending.update(offsets)
        # One commit in flight at a time: a commit per batch every few milliseconds would
        # fill the connection's in-flight slots that the fetches need.  The newest offsets
        # go out with the first batch (or empty poll) after the previous commit is answered.
        if (
            not self._in_flight
            and self._pending != self._sent
            and time.monotonic() >= self._retry_at
        ):
            self._in_flight = True
            self._sent = dict(self._pending)
            self.consumer.commit_async(_kafka_offsets(self._sent), callback=self._committed)

    def _committed(self, offsets: object, response: object) -> None:
        self._in_flight = False
        if isinstance(response, Exception):
            if self.metrics is not None:
                self.metrics.commit_failures.inc()
            self._sent = {}  # send again, a second from now
            self._retry_at = time.monotonic() + COMMIT_RETRY_SECONDS
            if self._failing_since is None:  # once per outage, not once a second
                self._failing_since = time.monotonic()
                log.warning(
                    "offset commits failing (the next one that succeeds covers them): %s", response
                )
        elif self._failing_since is not None:
            log.info(
                "offset commits go through again after %.1f s",
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None

    def forget(self, parts: Iterable[Partition]) -> None:
        """Stop committing offsets for partitions this member no longer owns."""
        for part in parts:
            self._pending.pop(part, None)
            self._sent.pop(part, None)

    def commit_sync(self, timeout_ms: int = CLOSE_TIMEOUT_MS) -> None:
        """Commit the latest offsets and wait for the broker (not from the IO thread)."""
        if self._pending:
            try:
                self.consumer.commit(_kafka_offsets(self._pending), timeout_ms=timeout_ms)
            except KafkaError:
                if self.metrics is not None:
                    self.metrics.commit_failures.inc()
                raise

    def unreadable_topics(self, timeout_s: float = TOPIC_WAIT_SECONDS) -> dict[str, str]:
        """Input topics the ACLs do not let this client read.  Without this check the consumer
        would sit with no partitions, kafka-python logging once that a topic is not
        authorised, and the daemon waiting for partitions forever."""
        settings = admin_settings(self.cfg.client_settings(os.environ), self.cfg.consumer)
        found = topic_access(
            settings, self.cfg.input_topics, READ, create=False, timeout_s=timeout_s
        )
        return {t: why for t, why in found.items() if why == DENIED}

    def reachable(self) -> bool:
        # kafka-python forgets the group coordinator (coordinator_id None) when its connection
        # fails, and finds it again once the broker answers; read only, from this thread
        coordinator = getattr(self.consumer, "_coordinator", None)
        return getattr(coordinator, "coordinator_id", 0) is not None

    def partition_count(self) -> int:
        """The partition count of the largest input topic (0: none known)."""
        counts = [len(self.consumer.partitions_for_topic(t) or ()) for t in self.cfg.input_topics]
        return max(counts, default=0)

    def assignment(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def events(self) -> list[PartitionEvent]:
        out = []
        while self._events:
            out.append(self._events.popleft())
        return out

    def committed_offsets(self, partitions: set[Partition]) -> Offsets:
        out: Offsets = {}
        for t, p in sorted(partitions):
            try:
                offset = self.consumer.committed(TopicPartition(t, p), timeout_ms=COMMITTED_MS)
            except KafkaError as exc:
                # not fatal: the state is rebuilt from its checkpoint with output, so the
                # verdicts since it are sent again (at least once)
                log.warning("the committed offset of %s[%d] is not known: %s", t, p, exc)
                continue
            if offset is not None:
                out[(t, p)] = offset
        return out

    def start(self, offsets: dict[Partition, int | None]) -> None:
        owned = self.consumer.assignment()
        tps = [TopicPartition(t, p) for t, p in offsets]
        tps = [tp for tp in tps if tp in owned]  # revoked meanwhile: nothing to start
        for tp in tps:
            offset = offsets[(tp.topic, tp.partition)]
            if offset is not None:
                self.consumer.seek(tp, offset)
        if tps:
            self.consumer.resume(*tps)

    def lag(self) -> dict[Partition, int]:
        """From what the client holds (fetched high-water marks, positions): no broker call,
        cheap enough for every poll, empty ones too."""
        out = {}
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)  # known once a fetch for tp has returned
            if end is None:
                continue
            # timeout 0: a position being reset (offset out of range) is not waited for
            position = self.consumer.position(tp, timeout_ms=0)
            if position is not None:
                out[(tp.topic, tp.partition)] = max(0, end - position)
        return out

    def close(self) -> None:
        try:
            self.commit_sync()
        except KafkaError as exc:  # the broker may be gone: at least once, so a replay follows
            log.warning("final offset commit failed: %s", exc)
        with closing_quietly():
            self.consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)

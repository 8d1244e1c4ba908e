"""Kafka sink on kafka-python: acks from all in-sync replicas before offsets may commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka import __version__ as kafka_version
from kafka.errors import (
    AuthorizationError,
    KafkaError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from kafka.protocol.metadata import MetadataRequest

from streamwatch.errors import SourceError
from streamwatch.records import Outgoing
from streamwatch.sinks import DENIED, MISSING

log = logging.getLogger("streamwatch")

# How long an absent output topic may take to appear.  A broker that creates topics on first
# use has one within tens of milliseconds (60 ms on the local broker); one that does not never
# will, and the producer would wait its max_block_ms (60 s) on the first send to find out.
TOPIC_WAIT_SECONDS = 5.0
TOPIC_RETRY_SECONDS = 0.1


@contextmanager
def closing_quietly() -> Iterator[None]:
    """Silence kafka-python's own ERROR lines while we close a client on purpose.

    Closing cancels its requests in flight (a metadata refresh, a heartbeat), and it logs each
    as an error ("Metadata refresh: failed Cancelled"), after the one line that says why the
    daemon stops.  What matters in a close (the final commit) is reported by our own code.
    """
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_log.setLevel(level)


class _DeniedTopic(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Topic %s is not authorized")


@contextmanager
def denied_topics_quietly() -> Iterator[None]:
    """Drop kafka-python's own ERROR for a topic the ACLs deny ("Topic x is not authorized for
    this client", logged by ``kafka.cluster`` as soon as a metadata response says so) while the
    daemon starts: its topic check says the same in one line that names the config key, and
    that line must be the only one.  Refusals later on (an ACL revoked while running) are
    logged as kafka-python logs them."""
    cluster_log, quiet = logging.getLogger("kafka.cluster"), _DeniedTopic()
    cluster_log.addFilter(quiet)
    try:
        yield
    finally:
        cluster_log.removeFilter(quiet)


class KafkaSink:
    def __init__(self, settings: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """``settings``: connection settings (KafkaConfig.client_settings); ``extra``: more
        kafka-python producer settings from the config."""
        self._settings, self._extra = settings, extra or {}
        self._producer: KafkaProducer | None = None
        # every message sent since the last flush that went through, with its future: None
        # where the send itself failed; failed ones are sent again by the next flush
        self._unacked: list[tuple[Outgoing, Any]] = []
        self._error: Exception | None = None  # the latest failure, for the flush's message

    @property
    def producer(self) -> KafkaProducer:
        """Made on first use, after the daemon's start check: a producer asks the broker for
        a producer id at once, and where the ACLs deny it that logs an error of its own
        beside the check's clearer one."""
        if self._producer is None:
            tuning = {"linger_ms": 5, "retries": 5, **self._extra}
            try:
                # acks from all in-sync replicas: offsets are committed only after these acks
                self._producer = KafkaProducer(**tuning, **self._settings, acks="all")
            except KafkaError as exc:
                raise SourceError(
                    f"cannot connect to Kafka at {self._settings.get('bootstrap_servers')}: {exc}",
                    retriable=True,
                ) from exc
        return self._producer

    def send(self, message: Outgoing) -> None:
        """Hand ``message`` to the producer.  Never raises for the broker's sake: a message
        that cannot be handed over now is kept, and the next flush tries it again (and fails
        while it cannot), so that a batch is never left half sent."""
        self._unacked.append((message, self._send(message)))

    def _send(self, message: Outgoing) -> Any:
        try:
            return self.producer.send(
                message.topic, value=message.value, key=message.key, headers=list(message.headers)
            )
        except (KafkaError, SourceError) as exc:  # no metadata in max_block_ms, no producer
            self._error = exc
            return None

    def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every message sent since the last successful flush;
        send again those that failed first.  SourceError (retriable) if any is still not
        acknowledged: call again to retry them."""
        if not self._unacked:
            return
        for i, (message, future) in enumerate(self._unacked):
            if future is None or future.failed():
                self._unacked[i] = (message, self._send(message))
        if self._producer is not None:
            try:
                self._producer.flush(timeout=timeout_s)
            except KafkaError as exc:  # a timeout: what is not done is told apart below
                self._error = exc
        total = len(self._unacked)
        self._unacked = [(m, f) for m, f in self._unacked if f is None or not f.succeeded()]
        if self._unacked:
            failed = next((f for _, f in self._unacked if f is not None and f.failed()), None)
            why = failed.exception if failed is not None else self._error or "timed out"
            raise SourceError(
                f"{len(self._unacked)} of {total} messages not acknowledged: {why}",
                # a broker away comes back; a refused ACL waits for an operator
                retriable=not isinstance(why, AuthorizationError),
            )

    def unwritable_topics(
        self, topics: Collection[str], timeout_s: float = TOPIC_WAIT_SECONDS
    ) -> dict[str, str]:
        """The topics among ``topics`` that the broker neither has nor creates within
        ``timeout_s`` (MISSING), or whose ACLs do not let this client write (DENIED).  Asked
        as the producer asks, with a metadata request that allows auto-creation, so a broker
        that creates topics on first use creates them now."""
        settings = admin_settings(self._settings, self._extra)
        return topic_access(settings, topics, WRITE, create=True, timeout_s=timeout_s)

    def close(self) -> None:
        if self._producer is not None:
            try:
                with closing_quietly():
                    self._producer.close(timeout=10)
            except KafkaError as exc:  # the broker away: what is unacknowledged is read again
                log.warning("closing the producer: %s", exc)


# kafka.producer / kafka.consumer settings that apply to the topic check's admin client too
# (api_version, socket options, backoffs); its own timeouts are the check's
_ADMIN_SETTINGS = frozenset(KafkaAdminClient.DEFAULT_CONFIG)

READ, WRITE = 3, 4  # the operations' codes in a topic's authorised operations


def admin_settings(connection: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Settings for a check's admin client: the connection settings, and those of a client's
    ``extra`` settings (kafka.consumer or kafka.producer) that an admin client knows."""
    return {**{k: v for k, v in extra.items() if k in _ADMIN_SETTINGS}, **connection}


def topic_access(
    settings: dict[str, Any],
    topics: Collection[str],
    operation: int,
    create: bool,
    timeout_s: float = TOPIC_WAIT_SECONDS,
) -> dict[str, str]:
    """Which of ``topics`` this client cannot use for ``operation`` (READ or WRITE), and why:
    MISSING (unknown to the broker; with ``create``, still unknown after ``timeout_s`` of
    asking with auto-creation allowed, as a producer asks) or DENIED (the ACLs do not allow
    it).  ``settings``: kafka-python settings for an admin client of its own (a consumer's or
    producer's network loop belongs to its own thread); see ``admin_settings``."""
    timeout_ms = max(int(timeout_s * 1000), 1)
    settings = {**settings, "bootstrap_timeout_ms": timeout_ms, "request_timeout_ms": timeout_ms}
    try:
        admin = KafkaAdminClient(**settings)
    except KafkaError as exc:
        raise SourceError(
            f"cannot connect to Kafka at {settings.get('bootstrap_servers')}: {exc}",
            retriable=True,
        ) from exc
    try:
        manager = getattr(admin, "_manager", None)
        if not all(hasattr(manager, name) for name in ("run", "send", "wait_for")):
            log.info(
                "not checking the topics %s: kafka-python %s's admin client is not shaped as 3.0's",
                ", ".join(sorted(topics)),
                kafka_version,
            )
            return {}
        deadline = time.monotonic() + timeout_s
        left, found = set(topics), {}
        while True:
            # each request gets at least a second: near the deadline a few milliseconds' wait
            # (on a loaded machine) would fail the check rather than answer it
            ask_ms = max(int((deadline - time.monotonic()) * 1000), 1000)
            found.update(_topic_problems(manager, left, ask_ms, operation, create))
            left = {t for t in left if found.get(t) == MISSING}
            if not create or not left or time.monotonic() + TOPIC_RETRY_SECONDS > deadline:
                return found
            # Kafka 4 answers UNKNOWN_TOPIC_OR_PARTITION even to the request that starts an
            # auto-creation, so an unknown topic is asked about again until it appears
            time.sleep(TOPIC_RETRY_SECONDS)
            for t in left:
                del found[t]
    except KafkaError as exc:
        raise SourceError(f"cannot read the topics' metadata: {exc}", retriable=True) from exc
    finally:
        with closing_quietly():
            admin.close()


def _allowed(ops: Any, operation: int) -> bool:
    """From a metadata response's authorised operations: kafka-python 3.0 decodes the bit
    field into a set of operation codes; a raw int is the field itself; None, or INT32_MIN,
    means the broker did not say (then the first fetch or send will tell)."""
    if isinstance(ops, (set, frozenset)):
        return operation in ops
    if isinstance(ops, int) and ops != -(2**31):
        return bool(ops & (1 << operation))
    return True


def _topic_problems(
    manager: Any, topics: set[str], timeout_ms: int, operation: int, create: bool
) -> dict[str, str]:
    """What one metadata request finds wrong with ``topics``.  A topic the client may not even
    describe answers TOPIC_AUTHORIZATION_FAILED (whether it exists or not, which the broker
    does not reveal); one it may describe but not use comes back without ``operation`` among
    its authorised operations."""
    request = MetadataRequest(
        topics=[MetadataRequest.MetadataRequestTopic(name=t) for t in sorted(topics)],
        allow_auto_topic_creation=create,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=True,
    )

    async def ask() -> Any:  # on the admin client's IO thread
        return await manager.wait_for(manager.send(request), timeout_ms)

    response = manager.run(ask)
    out = {}
    for t in response.topics:
        # kafka-python names the schema's topic_authorized_operations authorized_operations
        ops = getattr(t, "authorized_operations", getattr(t, "topic_authorized_operations", None))
        if t.error_code == UnknownTopicOrPartitionError.errno:
            out[t.name] = MISSING
        elif t.error_code == TopicAuthorizationFailedError.errno or (
            t.error_code == 0 and not _allowed(ops, operation)
        ):
            out[t.name] = DENIED
    return out


def produce(
    bootstrap_servers: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes]],
    rate: float = 0.0,
    progress_every: int = 0,
) -> int:
    """Produce (key, value) pairs to ``topic``, at ``rate`` messages per second if > 0."""
    sink = KafkaSink(
        {"bootstrap_servers": bootstrap_servers.split(","), "client_id": "streamwatch-producer"}
    )
    sent, started = 0, time.monotonic()
    try:
        for key, value in messages:
            sink.send(Outgoing(topic, key, value))
            sent += 1
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0.01:
                    time.sleep(ahead)
            if progress_every and sent % progress_every == 0:
                sink.flush(60)
                print(f"produced {sent} messages to {topic}", flush=True)
        sink.flush(60)
    finally:
        sink.close()
    return sent

"""Kafka sink on kafka-python: acks from all in-sync replicas before offsets may commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka import __version__ as kafka_version
from kafka.errors import KafkaError, UnknownTopicOrPartitionError
from kafka.protocol.metadata import MetadataRequest

from streamwatch.errors import SourceError
from streamwatch.records import Outgoing

log = logging.getLogger("streamwatch")

# How long an absent output topic may take to appear.  A broker that creates topics on first
# use has one within tens of milliseconds (60 ms on the local broker); one that does not never
# will, and the producer would wait its max_block_ms (60 s) on the first send to find out.
TOPIC_WAIT_SECONDS = 5.0
TOPIC_RETRY_SECONDS = 0.1


class KafkaSink:
    def __init__(self, settings: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """``settings``: connection settings (KafkaConfig.client_settings); ``extra``: more
        kafka-python producer settings from the config."""
        self._settings, self._extra = settings, extra or {}
        tuning = {"linger_ms": 5, "retries": 5, **self._extra}
        try:
            # acks from all in-sync replicas: offsets are committed only after these acks
            self.producer = KafkaProducer(**tuning, **settings, acks="all")
        except KafkaError as exc:
            raise SourceError(
                f"cannot connect to Kafka at {settings.get('bootstrap_servers')}: {exc}",
                retriable=True,
            ) from exc
        self._futures: list = []

    def send(self, message: Outgoing) -> None:
        self._futures.append(
            self.producer.send(
                message.topic, value=message.value, key=message.key, headers=list(message.headers)
            )
        )

    def flush(self, timeout_s: float) -> None:
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise SourceError(f"producer flush failed: {exc}", retriable=True) from exc
        futures, self._futures = self._futures, []
        failed = [f for f in futures if not f.is_done or f.failed()]
        if failed:
            first = failed[0].exception if failed[0].is_done else "timed out"
            raise SourceError(
                f"{len(failed)} of {len(futures)} messages not acknowledged: {first}",
                retriable=True,
            )

    def missing_topics(
        self, topics: Collection[str], timeout_s: float = TOPIC_WAIT_SECONDS
    ) -> set[str]:
        """The topics among ``topics`` that the broker neither has nor creates within
        ``timeout_s``.  Asked as the producer asks, with a metadata request that allows
        auto-creation, so a broker that creates topics on first use creates them now."""
        # A client of its own: the producer's network loop belongs to its sender thread, while
        # kafka-python's admin client serves requests made from the caller's thread.
        timeout_ms = max(int(timeout_s * 1000), 1)
        settings = {k: v for k, v in self._extra.items() if k in _ADMIN_SETTINGS}
        settings.update(
            self._settings, bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms
        )
        try:
            admin = KafkaAdminClient(**settings)
        except KafkaError as exc:
            raise SourceError(
                f"cannot connect to Kafka at {self._settings.get('bootstrap_servers')}: {exc}",
                retriable=True,
            ) from exc
        try:
            manager = getattr(admin, "_manager", None)
            if not all(hasattr(manager, name) for name in ("run", "send", "wait_for")):
                log.info(
                    "not checking that the output topics exist: kafka-python %s's admin client "
                    "is not shaped as 3.0's",
                    kafka_version,
                )
                return set()
            return _wait_for_topics(manager, set(topics), time.monotonic() + timeout_s)
        except KafkaError as exc:
            raise SourceError(
                f"cannot read the output topics' metadata: {exc}", retriable=True
            ) from exc
        finally:
            admin.close()

    def close(self) -> None:
        self.producer.close(timeout=10)


# kafka.producer settings that apply to the topic check's admin client too (api_version,
# socket options, backoffs); its own timeouts are the check's
_ADMIN_SETTINGS = frozenset(KafkaAdminClient.DEFAULT_CONFIG)


def _wait_for_topics(manager: Any, topics: set[str], deadline: float) -> set[str]:
    """The topics still unknown at ``deadline`` (time.monotonic()).  Kafka 4 answers
    UNKNOWN_TOPIC_OR_PARTITION even to the request that starts an auto-creation, so an unknown
    topic is asked about again until it appears or time is up."""
    while True:
        left_ms = max(int((deadline - time.monotonic()) * 1000), 1)
        topics = _unknown_topics(manager, topics, left_ms)
        if not topics or time.monotonic() + TOPIC_RETRY_SECONDS > deadline:
            return topics
        time.sleep(TOPIC_RETRY_SECONDS)


def _unknown_topics(manager: Any, topics: set[str], timeout_ms: int) -> set[str]:
    """The topics that one metadata request allowing auto-creation finds unknown."""
    request = MetadataRequest(
        topics=[MetadataRequest.MetadataRequestTopic(name=t) for t in sorted(topics)],
        allow_auto_topic_creation=True,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )

    async def ask() -> Any:  # on the admin client's IO thread
        return await manager.wait_for(manager.send(request), timeout_ms)

    response = manager.run(ask)
    unknown = UnknownTopicOrPartitionError.errno
    return {t.name for t in response.topics if t.error_code == unknown}


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

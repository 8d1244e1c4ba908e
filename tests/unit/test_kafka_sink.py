"""KafkaSink keeps what the broker has not acknowledged and sends it again at the next flush
(the real broker's outage: tests/integration/test_broker_outage.py)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import (
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)
from kafka.future import Future

from streamwatch.errors import SourceError
from streamwatch.records import Outgoing
from streamwatch.sinks.kafka import KafkaSink


class FakeProducer:
    """Sends fail while ``down``: at send (no metadata in max_block_ms) or at flush."""

    def __init__(self) -> None:
        self.down: str | None = None  # None, "send" or "flush"
        self.error: Exception = NotLeaderForPartitionError()
        self.futures: list[tuple[Any, Future]] = []
        self.delivered: list[Any] = []

    def send(self, topic: str, value: bytes, key: bytes | None, headers: list) -> Future:
        if self.down == "send":
            raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")
        future = Future()
        self.futures.append((value, future))
        return future

    def flush(self, timeout: float) -> None:
        for value, future in self.futures:
            if self.down == "flush":
                future.failure(self.error)
            else:
                future.success(None)
                self.delivered.append(value)
        self.futures.clear()


def _sink() -> tuple[KafkaSink, FakeProducer]:
    sink, producer = KafkaSink({}), FakeProducer()
    sink._producer = producer  # type: ignore[assignment]
    return sink, producer


@pytest.mark.parametrize("where", ["send", "flush"])
def test_unacknowledged_messages_are_sent_again_until_they_go(where: str) -> None:
    sink, producer = _sink()
    sink.send(Outgoing("t", None, b"before"))
    producer.down = where
    sink.send(Outgoing("t", None, b"during"))
    for _ in range(3):
        with pytest.raises(SourceError) as caught:
            sink.flush(1.0)
        assert caught.value.retriable
    assert "messages not acknowledged" in str(caught.value)
    producer.down = None
    sink.flush(1.0)
    # each message delivered once, the one in flight when the outage began too
    assert sorted(producer.delivered) == [b"before", b"during"]
    sink.flush(1.0)  # nothing left to do
    assert sorted(producer.delivered) == [b"before", b"during"]


def test_a_refused_acl_is_not_retriable() -> None:
    sink, producer = _sink()
    producer.down, producer.error = "flush", TopicAuthorizationFailedError()
    sink.send(Outgoing("t", None, b"x"))
    with pytest.raises(SourceError) as caught:
        sink.flush(1.0)
    assert not caught.value.retriable


def test_kafka_pythons_own_line_for_a_denied_topic_is_dropped_only_while_starting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the daemon checks its topics, its own line names the key: kafka-python's
    "Topic x is not authorized" is dropped then, and only then; its other lines stay."""
    import logging

    from streamwatch.sinks.kafka import denied_topics_quietly

    cluster = logging.getLogger("kafka.cluster")
    with caplog.at_level(logging.ERROR, logger="kafka"):
        with denied_topics_quietly():
            cluster.error("Topic %s is not authorized for this client", "readings")
            cluster.error("Topic %s not found in cluster metadata", "readings")
        cluster.error("Topic %s is not authorized for this client", "later")
    assert [r.getMessage() for r in caplog.records] == [
        "Topic readings not found in cluster metadata",
        "Topic later is not authorized for this client",
    ]

"""Offset commits of the Kafka source, counted where they fail (no broker: a consumer twin)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.errors import CommitFailedError, KafkaError
from prometheus_client import CollectorRegistry

from streamwatch.config import parse
from streamwatch.metrics import Metrics
from streamwatch.sources import kafka as kafka_source

FAILURES = "streamwatch_offset_commit_failures_total"


class _Consumer:
    """What KafkaSource asks of a KafkaConsumer on the commit path."""

    DEFAULT_CONFIG = KafkaConsumer.DEFAULT_CONFIG

    def __init__(self, **_settings: Any) -> None:
        self.callbacks: list[Any] = []
        self.fail_sync = False

    def subscribe(self, topics: list[str], listener: object) -> None:
        pass

    def commit_async(self, offsets: object, callback: Any) -> None:
        self.callbacks.append(callback)

    def commit(self, offsets: object, timeout_ms: int) -> None:
        if self.fail_sync:
            raise KafkaError("coordinator away")

    def close(self, autocommit: bool, timeout_ms: int) -> None:
        pass


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch) -> tuple[kafka_source.KafkaSource, CollectorRegistry]:
    monkeypatch.setattr(kafka_source, "KafkaConsumer", _Consumer)
    monkeypatch.setattr(kafka_source, "install_patches", lambda consumer, metrics: {})
    cfg = parse({"kafka": {"bootstrap_servers": "unused:9092", "input_topics": ["in"]}})
    assert cfg.kafka is not None
    registry = CollectorRegistry()
    return kafka_source.KafkaSource(cfg.kafka, Metrics(registry)), registry


def test_failed_asynchronous_commits_are_counted(
    source: tuple[kafka_source.KafkaSource, CollectorRegistry],
) -> None:
    src, registry = source
    consumer: _Consumer = src.consumer
    assert registry.get_sample_value(FAILURES) == 0.0
    src.commit({("in", 0): 10})
    consumer.callbacks[-1]({}, CommitFailedError("rebalanced"))
    assert registry.get_sample_value(FAILURES) == 1.0
    src._retry_at = 0.0  # the retry a second later
    src.commit({})
    consumer.callbacks[-1]({}, {})  # went through
    assert len(consumer.callbacks) == 2
    assert registry.get_sample_value(FAILURES) == 1.0


def test_a_failed_final_commit_is_counted(
    source: tuple[kafka_source.KafkaSource, CollectorRegistry],
) -> None:
    src, registry = source
    consumer: _Consumer = src.consumer
    src.commit({("in", 0): 10})
    consumer.fail_sync = True
    src.close()  # logged, not raised: the next owner replays from the last commit
    assert registry.get_sample_value(FAILURES) == 1.0

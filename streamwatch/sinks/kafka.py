"""Kafka sink on kafka-python: acks from all in-sync replicas before offsets may commit."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from streamwatch.errors import SourceError
from streamwatch.records import Outgoing


class KafkaSink:
    def __init__(self, settings: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """``settings``: connection settings (KafkaConfig.client_settings); ``extra``: more
        kafka-python producer settings from the config."""
        tuning = {"linger_ms": 5, "retries": 5, **(extra or {})}
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

    def close(self) -> None:
        self.producer.close(timeout=10)


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

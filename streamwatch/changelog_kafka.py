"""The changelog topic on kafka-python: written in rounds with the checkpoints, read back on
assignment (the record format and its rules: ``changelog.py``).

The topic is compacted and co-partitioned with the input: the streams of input partition p
live in changelog partition p.  The daemon creates it at start with the partition count of its
largest input topic, or refuses to start, naming ``state.changelog_topic``, when it may not or
when an existing one cannot hold the state (not compacted, too few partitions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import TopicPartition

from streamwatch import changelog
from streamwatch.checkpoint import Failure, Job
from streamwatch.errors import SourceError
from streamwatch.sinks.kafka import admin_settings, closing_quietly
from streamwatch.sources import Partition

log = logging.getLogger("streamwatch")

KEY = "state.changelog_topic"
# what the topic needs: compaction keeps each stream's latest row; a round cut short by a crash
# is not compacted under a later round for this long (its rows are then found missing and the
# changelog refused, rather than used)
TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": str(3_600_000),
    "segment.bytes": str(64 * 1024 * 1024),
}
FLUSH_SECONDS = 30.0  # a round's records get this long to be acknowledged
RESTORE_POLL_MS = 500
RESTORE_STALL_SECONDS = 60.0  # a restore that reads nothing for this long gives up


class Changelog:
    """One changelog topic: ``write`` runs on the checkpoint writer's thread, the rest on the
    run loop's, never at the same time (the loop waits for the writer before it restores)."""

    def __init__(self, topic: str, settings: dict[str, Any], producer: dict[str, Any]) -> None:
        self.topic = topic
        self._settings, self._producer_extra = settings, producer
        self._producer: KafkaProducer | None = None
        self._reader: KafkaConsumer | None = None
        # input partition -> the input offset of its last full round in the changelog; a
        # partition absent here gets a full round next (deltas need a base to build on)
        self.base: dict[Partition, int] = {}

    # -- start ---------------------------------------------------------------------------

    def ensure_topic(self, partitions: int, timeout_s: float = 10.0) -> str:
        """Create the topic (``partitions`` partitions, compacted) or check the one there;
        ``SourceError`` (not retriable) names the key and what is wrong.  Returns what was
        done, for the log."""
        settings = admin_settings(self._settings, self._producer_extra)
        timeout_ms = int(timeout_s * 1000)
        try:
            admin = KafkaAdminClient(
                **settings, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
            )
        except KafkaError as exc:
            raise SourceError(f"cannot connect to Kafka: {exc}", retriable=True) from exc
        try:
            created = "exists"
            try:
                admin.create_topics(
                    {
                        self.topic: {
                            "num_partitions": partitions,
                            "replication_factor": -1,  # the broker's default
                            "configs": TOPIC_CONFIGS,
                        }
                    },
                    timeout_ms=timeout_ms,
                    wait_for_metadata=True,
                )
                created = "created"
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                raise SourceError(
                    f"{KEY}: topic {self.topic!r} could not be created ({exc}): create it with "
                    f"cleanup.policy=compact and at least {partitions} partitions, or give the "
                    "daemon's principal Create on it",
                    retriable=False,
                ) from exc
            self._check(admin, partitions)
            return created
        except KafkaError as exc:
            raise SourceError(
                f"{KEY}: topic {self.topic!r} could not be described: {exc}", retriable=True
            ) from exc
        finally:
            with closing_quietly():
                admin.close()

    def _check(self, admin: KafkaAdminClient, partitions: int) -> None:
        found = admin.describe_topics([self.topic])
        have = len(found[0]["partitions"]) if found and not found[0]["error_code"] else 0
        if have < partitions:
            raise SourceError(
                f"{KEY}: topic {self.topic!r} has {have} partition(s), fewer than the input's "
                f"{partitions}: changelog partition p holds input partition p's state; add "
                "partitions to it or name a new topic",
                retriable=False,
            )
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, self.topic, None)], config_filter="all"
        )
        policy = _config_value(configs, self.topic, "cleanup.policy")
        if policy is not None and "compact" not in policy.split(","):
            raise SourceError(
                f"{KEY}: topic {self.topic!r} has cleanup.policy={policy}, not compact: its "
                "retention would delete the state of streams that stay unchanged; set "
                "cleanup.policy=compact on it or name a new topic",
                retriable=False,
            )

    # -- rounds (the writer's thread) ------------------------------------------------------

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            tuning = {"linger_ms": 20, "batch_size": 256 * 1024, "retries": 5}
            tuning.update(self._producer_extra)
            # one connection's worth in flight: a retried batch must not land after the next
            tuning["max_in_flight_requests_per_connection"] = 1
            self._producer = KafkaProducer(**tuning, **self._settings, acks="all")
        return self._producer

    def write(self, jobs: list[Job]) -> tuple[dict[Partition, dict[str, int]], list[Failure]]:
        """Send each job's round (rows, tombstones, then its marker) and wait for the broker.
        Returns, per partition written, where the changelog stood after it (``end``, ``base``),
        and the partitions that failed, with why: their next round must be full.  Never
        raises."""
        done: dict[Partition, dict[str, int]] = {}
        failed: list[Failure] = []
        sent: list[tuple[Job, int, list[Any]]] = []
        for job in jobs:
            if not job.full and job.part not in self.base:
                failed.append((job.part, "a delta with no full round before it in the changelog"))
                continue
            base = job.offset if job.full else self.base[job.part]
            try:
                sent.append((job, base, self._send(job, base)))
            except Exception as exc:  # no metadata, no producer: the broker away
                failed.append((job.part, f"not sent: {exc}"))
        if sent:
            try:
                self.producer.flush(timeout=FLUSH_SECONDS)
            except Exception as exc:  # a timeout: the futures below say which
                log.debug("changelog flush: %s", exc)
        for job, base, futures in sent:
            bad = next((f for f in futures if not f.succeeded()), None)
            if bad is not None:
                failed.append((job.part, str(bad.exception or "not acknowledged in time")))
                self.base.pop(job.part, None)
                continue
            self.base[job.part] = base
            done[job.part] = {"end": futures[-1].value.offset + 1, "base": base}
        for part, _ in failed:
            self.base.pop(part, None)
        return done, failed

    def _send(self, job: Job, base: int) -> list[Any]:
        topic, partition = job.part
        send = self.producer.send
        keys, values, dtype = changelog.encode_rows(topic, job.offset, job.rows)
        futures = [
            send(self.topic, key=k, value=v, partition=partition)
            for k, v in zip(keys, values, strict=True)
        ]
        futures += [
            send(self.topic, key=k, value=None, partition=partition)
            for k in changelog.tombstone_keys(topic, job.gone)
        ]
        marker = changelog.encode_marker(job.offset, base, job.streams, job.model, dtype)
        futures.append(
            send(self.topic, key=changelog.marker_key(topic), value=marker, partition=partition)
        )
        return futures

    # -- restore (the run loop's thread) ---------------------------------------------------

    @property
    def reader(self) -> KafkaConsumer:
        if self._reader is None:
            self._reader = KafkaConsumer(
                **self._settings,
                group_id=None,
                enable_auto_commit=False,
                max_partition_fetch_bytes=8 * 1024 * 1024,
                fetch_max_bytes=64 * 1024 * 1024,
            )
        return self._reader

    def end_offset(self, partition: int) -> int:
        tp = TopicPartition(self.topic, partition)
        return int(self.reader.end_offsets([tp])[tp])

    def restore(
        self,
        part: Partition,
        model: dict[str, object],
        progress: Callable[[int, int], None] | None = None,
    ) -> changelog.Folded | None:
        """Read the changelog partition of ``part`` to its end and fold it (``fold``);
        ``progress(read, total)`` is told as records come.  ``ChangelogError`` if what is
        there cannot be used; ``SourceError`` (retriable) if it cannot be read."""
        topic, partition = part
        tp = TopicPartition(self.topic, partition)
        try:
            reader = self.reader
            end = int(reader.end_offsets([tp])[tp])
            reader.assign([tp])
            reader.seek_to_beginning(tp)
            start = reader.position(tp)
            got = changelog.fold(self._read(reader, tp, start, end, progress), topic, model)
        except KafkaError as exc:
            raise SourceError(
                f"{KEY}: reading partition {partition}: {exc}", retriable=True
            ) from exc
        finally:
            if self._reader is not None:
                self._reader.assign([])
        if got is not None:
            self.base[part] = got.base
        return got

    def _read(
        self,
        reader: KafkaConsumer,
        tp: TopicPartition,
        start: int,
        end: int,
        progress: Callable[[int, int], None] | None,
    ) -> Iterator[tuple[bytes, bytes | None]]:
        total, read, position = max(end - start, 0), 0, start
        last_news = time.monotonic()
        while position < end:
            batch = reader.poll(timeout_ms=RESTORE_POLL_MS, max_records=100_000)
            records = batch.get(tp, [])
            if records:
                last_news = time.monotonic()
            elif time.monotonic() - last_news > RESTORE_STALL_SECONDS:
                raise SourceError(
                    f"{KEY}: partition {tp.partition}: nothing read for "
                    f"{RESTORE_STALL_SECONDS:.0f} s at offset {position} of {end}",
                    retriable=True,
                )
            for rec in records:
                if rec.offset >= end:
                    break
                yield rec.key, rec.value
            if records:
                position = records[-1].offset + 1
                read = position - start
                if progress is not None:
                    progress(min(read, total), total)
            position = max(position, reader.position(tp) or position)

    def forget(self, part: Partition) -> None:
        self.base.pop(part, None)

    def close(self) -> None:
        with closing_quietly():
            if self._producer is not None:
                self._producer.close(timeout=10)
            if self._reader is not None:
                self._reader.close()


def _config_value(configs: Any, topic: str, name: str) -> str | None:
    """A topic setting's value from ``describe_configs``' answer (kafka-python 3.0's shape:
    {"topic": {name: {setting: {"value": ...}}}}); None: not there."""
    try:
        value = configs["topic"][topic][name]["value"]
    except (KeyError, TypeError):
        return None
    return None if value is None else str(value)

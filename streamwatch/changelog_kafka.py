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
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import TopicPartition

from streamwatch import changelog
from streamwatch.changelog import Link
from streamwatch.checkpoint import Failure, Job
from streamwatch.errors import SourceError
from streamwatch.sinks.kafka import admin_settings, closing_quietly
from streamwatch.sources import Partition

log = logging.getLogger("streamwatch")

KEY = "state.changelog_topic"
# What the topic needs: compaction keeps each input topic's latest marker and every chunk not
# tombstoned (chunk keys are never reused), and smaller log segments than the broker's 1 GiB
# let it drop the chains replaced soon.
TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": str(64 * 1024 * 1024)}
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
        # input partition -> the chain its changelog marker names, as this member last wrote
        # or read it; deltas go on it only while it holds the state served ("current")
        self.chains: dict[Partition, list[Link]] = {}
        self.current: set[Partition] = set()
        # chunk keys no marker names any more (chains replaced, rounds cut short found by a
        # restore): tombstoned with the partition's next round
        self.strays: dict[Partition, list[bytes]] = {}

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
            tuning = {"linger_ms": 20, "retries": 5}
            tuning.update(self._producer_extra)
            # one request in flight: a retried chunk must not land after the marker
            tuning["max_in_flight_requests_per_connection"] = 1
            self._producer = KafkaProducer(**tuning, **self._settings, acks="all")
        return self._producer

    def write(self, segments: list[tuple[Job, bytes]]) -> list[Failure]:
        """Send each partition's segment (its chunks, then the marker naming its chain, then
        tombstones for the chain it replaces) and wait for the broker.  Returns the partitions
        that failed, with why: their next round must be full.  Never raises."""
        failed: list[Failure] = []
        sent: list[tuple[Job, list[Link], list[Any]]] = []
        for job, data in segments:
            chain = self.chains.get(job.part)
            if not job.full and (chain is None or job.part not in self.current):
                failed.append((job.part, "a delta with no whole chain before it in the changelog"))
                continue
            try:
                sent.append(self._send(job, data, chain))
            except Exception as exc:  # no metadata, no producer: the broker away
                failed.append((job.part, f"not sent: {exc}"))
        if sent:
            try:
                self.producer.flush(timeout=FLUSH_SECONDS)
            except Exception as exc:  # a timeout: the futures below say which
                log.debug("changelog flush: %s", exc)
        for job, chain, futures in sent:
            bad = next((f for f in futures if not f.succeeded()), None)
            if bad is not None:
                failed.append((job.part, str(bad.exception or "not acknowledged in time")))
                continue
            if job.full:  # the chain it replaces goes with the partition's next round
                old = self.chains.get(job.part) or []
                self.strays[job.part] = [
                    k for o in old for k in changelog.link_keys(job.part[0], o)
                ]
            self.chains[job.part] = chain
            self.current.add(job.part)
        for part, _ in failed:
            self.current.discard(part)
        return failed

    def _send(
        self, job: Job, data: bytes, chain: list[Link] | None
    ) -> tuple[Job, list[Link], list[Any]]:
        topic, partition = job.part
        send = self.producer.send
        # First the chunks of the chain the last full round replaced: its marker (acknowledged)
        # names the new chain, so nothing named is deleted, whatever becomes of this round.
        # Sent with the marker instead, they could land though the marker failed.
        futures = [
            send(self.topic, key=k, value=None, partition=partition)
            for k in self.strays.pop(job.part, [])
        ]
        pieces = changelog.chunks(data)
        link = Link(changelog.new_id(), len(pieces), len(data))
        futures += [
            send(
                self.topic,
                key=changelog.chunk_key(topic, link.sid, i),
                value=v,
                partition=partition,
            )
            for i, v in enumerate(pieces)
        ]
        new = [link] if job.full or chain is None else [*chain, link]
        marker = changelog.encode_marker(job.offset, new, job.model)
        key = changelog.marker_key(topic)
        futures.append(send(self.topic, key=key, value=marker, partition=partition))
        return job, new, futures

    # -- restore (the run loop's thread) ---------------------------------------------------

    @property
    def reader(self) -> KafkaConsumer:
        if self._reader is None:
            self._reader = KafkaConsumer(
                **self._settings,
                group_id=None,
                enable_auto_commit=False,
                max_partition_fetch_bytes=16 * 1024 * 1024,
                fetch_max_bytes=64 * 1024 * 1024,
            )
        return self._reader

    @contextmanager
    def _reading(self, tp: TopicPartition) -> Iterator[KafkaConsumer]:
        """The reader, assigned ``tp`` alone meanwhile; its failures as SourceError naming the
        key (retriable: the broker away)."""
        try:
            reader = self.reader
            reader.assign([tp])
            yield reader
        except KafkaError as exc:
            raise SourceError(
                f"{KEY}: reading partition {tp.partition}: {exc}", retriable=True
            ) from exc
        finally:
            if self._reader is not None:
                self._reader.assign([])

    def last_marker(self, part: Partition) -> changelog.Marker | None:
        """The marker of ``part``'s last round, if the partition's last record is one (None:
        empty, or a round cut short, or another input topic's round last)."""
        topic, partition = part
        tp = TopicPartition(self.topic, partition)
        with self._reading(tp) as reader:
            end = int(reader.end_offsets([tp])[tp])
            if end == 0:
                return None
            reader.seek(tp, end - 1)
            deadline = time.monotonic() + RESTORE_STALL_SECONDS
            while time.monotonic() < deadline:
                for rec in reader.poll(timeout_ms=RESTORE_POLL_MS).get(tp, []):
                    if rec.offset == end - 1:
                        if rec.key != changelog.marker_key(topic) or rec.value is None:
                            return None
                        return changelog.decode_marker(rec.value)
                if (reader.position(tp) or 0) >= end:
                    return None  # compacted away meanwhile: scan
            raise SourceError(
                f"{KEY}: partition {partition}: its last record not read", retriable=True
            )

    def adopt(self, part: Partition, marker: changelog.Marker, current: bool) -> None:
        """Take ``marker``'s chain as the partition's: deltas go on it while it is
        ``current`` (the state served is the one it holds); the next full round replaces it."""
        self.chains[part] = list(marker.chain)
        if current:
            self.current.add(part)
        else:
            self.current.discard(part)

    def restore(
        self,
        part: Partition,
        model: dict[str, object],
        progress: Callable[[int, int], None] | None = None,
    ) -> changelog.Folded | None:
        """Read the changelog partition of ``part`` to its end and fold it (``fold``);
        ``progress(read, total)`` is told as records come.  ``ChangelogError`` if what is
        there cannot be used; ``SourceError`` (retriable) if it cannot be read.  The chain
        found becomes the partition's (current), and the chunks no marker names are
        tombstoned with its next round."""
        topic, partition = part
        tp = TopicPartition(self.topic, partition)
        with self._reading(tp) as reader:
            end = int(reader.end_offsets([tp])[tp])
            reader.seek_to_beginning(tp)
            start = reader.position(tp)
            got = changelog.fold(self._read(reader, tp, start, end, progress), topic, model)
        if got is not None:
            self.adopt(part, got.marker, current=True)
            self.strays[part] = got.strays
        return got

    def _read(
        self,
        reader: KafkaConsumer,
        tp: TopicPartition,
        start: int,
        end: int,
        progress: Callable[[int, int], None] | None,
    ) -> Iterator[tuple[bytes, bytes | None]]:
        total, position = max(end - start, 0), start
        last_news = time.monotonic()
        while position < end:
            records = reader.poll(timeout_ms=RESTORE_POLL_MS, max_records=10_000).get(tp, [])
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
                if progress is not None:
                    progress(min(position - start, total), total)
            position = max(position, reader.position(tp) or position)

    def forget(self, part: Partition) -> None:
        self.chains.pop(part, None)
        self.current.discard(part)
        self.strays.pop(part, None)

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

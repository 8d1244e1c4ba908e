"""KafkaSource against the real broker: offsets across a rebalance."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.structs import TopicPartition

from streamwatch.config import KafkaConfig
from streamwatch.records import Record
from streamwatch.sources.kafka import KafkaSource


def _produce(bootstrap: str, topic: str, per_partition: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for p in (0, 1):
        for i in range(per_partition):
            producer.send(topic, value=b"%d" % i, partition=p)
    producer.flush()
    producer.close()


def _poll(source: KafkaSource, timeout_ms: int) -> list[Record]:
    """Poll as the daemon does: partitions newly assigned are started (from their committed
    offsets) once the poll that assigned them returns."""
    records = source.poll(timeout_ms)
    for event in source.events():
        if event.kind == "assigned":
            source.start(dict.fromkeys(event.partitions))
    return records


def _two_partitions(
    bootstrap: str, prefix: str, heartbeat_ms: int, assignment: str = "cooperative-sticky"
) -> tuple[str, KafkaConfig]:
    """A new topic of two partitions, and a config for a new group reading it."""
    tag = uuid.uuid4().hex[:8]
    topic = f"{prefix}-{tag}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    cfg = KafkaConfig(
        bootstrap,
        (topic,),
        group_id=topic,
        partition_assignment=assignment,
        consumer={"session_timeout_ms": 10000, "heartbeat_interval_ms": heartbeat_ms},
    )
    return topic, cfg


def _next_offsets(records: list[Record]) -> dict[tuple[str, int], int]:
    return {(r.topic, r.partition): r.offset + 1 for r in records}


def test_a_revoked_partition_keeps_its_new_owners_offsets(kafka_bootstrap: str) -> None:
    """A member that gives up a partition in a rebalance must not commit that partition's
    old offsets afterwards, or it moves the new owner's committed offsets back."""
    topic, cfg = _two_partitions(kafka_bootstrap, "source", heartbeat_ms=500)
    group = cfg.group_id
    _produce(kafka_bootstrap, topic, 10)
    a = KafkaSource(cfg)
    b = None
    try:
        seen: list[Record] = []
        deadline = time.monotonic() + 60
        while len(seen) < 20 and time.monotonic() < deadline:
            seen += _poll(a, 200)
        assert len(seen) == 20
        a.commit(_next_offsets(seen))
        a.commit_sync()  # both partitions committed at 10 by a

        b = KafkaSource(cfg)
        deadline = time.monotonic() + 60
        # Both poll until the group has split the topic.  Both non-empty is not enough: b can
        # hold its new partition while a, not yet through the rebalance, still holds both.
        while time.monotonic() < deadline:
            assert not _poll(a, 100) and not _poll(b, 100)
            if len(a.assignment()) == len(b.assignment()) == 1:
                break
        assert len(a.assignment()) == len(b.assignment()) == 1
        ((_, mine),) = a.assignment()
        ((_, theirs),) = b.assignment()

        _produce(kafka_bootstrap, topic, 10)
        got = {"a": [], "b": []}
        deadline = time.monotonic() + 60
        while (len(got["a"]) < 10 or len(got["b"]) < 10) and time.monotonic() < deadline:
            got["a"] += _poll(a, 100)
            got["b"] += _poll(b, 100)
        b.commit(_next_offsets(got["b"]))
        b.commit_sync()  # b's partition at 20
        a.commit(_next_offsets(got["a"]))
        a.commit_sync()  # a's at 20, and nothing about b's partition

        check = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
        committed = {p: check.committed(TopicPartition(topic, p)) for p in (mine, theirs)}
        check.close()
        assert committed == {mine: 20, theirs: 20}
    finally:
        a.close()
        if b is not None:
            b.close()


def test_a_join_that_finishes_between_polls_is_taken_not_thrown_away(
    kafka_bootstrap: str,
) -> None:
    """kafka-python 3.0.x sends a new JoinGroup when its last one finished while nobody was
    polling, dropping the assignment (kafka_join).  Here both members' joins finish while
    neither polls; one short poll each must then take their assignments.  An eager group:
    one rebalance hands out everything (a cooperative one takes a second round, which its
    members' next polls join)."""
    _, cfg = _two_partitions(kafka_bootstrap, "join", heartbeat_ms=300, assignment="range")
    a = KafkaSource(cfg)
    b = None
    try:
        deadline = time.monotonic() + 60
        while len(a.assignment()) < 2 and time.monotonic() < deadline:
            _poll(a, 100)
        assert len(a.assignment()) == 2

        b = KafkaSource(cfg)
        for _ in range(15):  # b's JoinGroup goes out (two, the first asks for a member
            _poll(b, 100)  # id); the broker holds it until a rejoins.  Meanwhile a's
        # heartbeat (every 0.3 s, on its IO thread) hears of the rebalance.
        _poll(a, 0)  # a's JoinGroup goes out: the rebalance completes on the IO threads
        time.sleep(1.5)  # while neither member polls
        _poll(a, 0)
        _poll(b, 0)
        mine, theirs = a.assignment(), b.assignment()
        assert len(mine) == len(theirs) == 1 and mine != theirs
    finally:
        a.close()
        if b is not None:
            b.close()


def test_a_member_that_never_waits_in_poll_still_gets_its_partitions(
    kafka_strict_bootstrap: str,
) -> None:
    """Polls that return before a rebalance finishes (timeout 0, the time spent elsewhere)
    must still take its assignment.  The member joins while its topic does not exist yet (a
    broker that does not create topics) and is assigned nothing; the topic's creation asks for
    a second join, whose reason kafka-python 3.0.x clears inside that join (the leader's
    assignment records the metadata it used).  A later poll then saw no join to finish, and
    the member sat with no partitions and its heartbeats off until the broker dropped it: the
    daemon's 90 s stall in CI (kafka_join)."""
    bootstrap = kafka_strict_bootstrap
    tag = uuid.uuid4().hex[:8]
    topic = f"late-{tag}"
    source = KafkaSource(KafkaConfig(bootstrap, (topic,), group_id=f"late-{tag}"))
    try:
        for _ in range(40):  # 2 s: joined, with nothing to assign
            source.poll(0)
            time.sleep(0.05)
        assert source.assignment() == set()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, 1, 1)])
        admin.close()
        deadline = time.monotonic() + 20
        while not source.assignment() and time.monotonic() < deadline:
            source.poll(0)
            time.sleep(0.05)
        assert source.assignment() == {(topic, 0)}
    finally:
        source.close()

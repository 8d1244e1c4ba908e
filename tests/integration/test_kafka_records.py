"""The fast record path against the real broker: what comes back is what kafka-python's own
decoder returns, through compression, headers, transactions (control batches and aborted
batches) and both isolation levels."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.serializer import Deserializer

from streamwatch.records import Record
from streamwatch.sources.kafka_records import install

pytestmark = pytest.mark.kafka


def _fill(bootstrap: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    sent = 0
    for compression in (None, "gzip"):
        p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression, linger_ms=5)
        for i in range(400):
            headers = [("source", b"test"), ("n", str(i).encode())] if i % 3 == 0 else []
            key = None if i % 7 == 0 else b"k%d" % (i % 11)
            p.send(topic, key=key, value=b"x" * (i % 200), headers=headers, partition=i % 2)
            sent += 1
        p.flush()
        p.close()
    tx = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{topic}")
    tx.init_transactions()
    for commit in (True, False, True):
        tx.begin_transaction()
        for i in range(50):
            tx.send(topic, key=b"t", value=b"committed" if commit else b"aborted", partition=i % 2)
        tx.flush()  # an abort drops what was not yet sent: make the aborted records real
        if commit:
            tx.commit_transaction()
            sent += 50
        else:
            tx.abort_transaction()
    tx.close()
    return sent


def _consume(bootstrap: str, topic: str, fast: bool, isolation: str) -> list[tuple]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
        max_poll_records=97,  # takes that end inside batches
    )
    if fast:
        assert install(consumer)
    out: list[tuple] = []
    idle = 0
    while idle < 5:
        got = consumer.poll(timeout_ms=500)
        idle = 0 if got else idle + 1
        for records in got.values():
            if fast:
                assert all(type(r) is Record for r in records)
            out.extend(
                (r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers))
                for r in records
            )
    consumer.close()
    return sorted(out)


@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
def test_fast_path_reads_what_kafka_python_reads(kafka_bootstrap: str, isolation: str) -> None:
    topic = f"records-{uuid.uuid4().hex[:8]}"
    sent = _fill(kafka_bootstrap, topic)
    plain = _consume(kafka_bootstrap, topic, False, isolation)
    fast = _consume(kafka_bootstrap, topic, True, isolation)
    aborted = [r for r in plain if r[5] == b"aborted"]
    if isolation == "read_committed":
        assert len(plain) == sent and not aborted
    else:
        assert len(plain) == sent + 50 and len(aborted) == 50
    assert any(r[6] for r in plain) and any(r[4] is None for r in plain)
    assert fast == plain


def test_deserializers_keep_kafka_pythons_decoder(kafka_bootstrap: str) -> None:
    class Text(Deserializer):
        def deserialize(self, topic: str, headers: object, data: bytes) -> str:
            return data.decode()

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, value_deserializer=Text())
    try:
        assert install(consumer) is False
    finally:
        consumer.close()


def test_another_kafka_python_version_keeps_its_own_decoder(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kafka

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        monkeypatch.setattr(kafka, "__version__", "3.1.0")  # internals may differ: not ours
        assert install(consumer) is False
        monkeypatch.undo()
        assert install(consumer) is True
    finally:
        consumer.close()

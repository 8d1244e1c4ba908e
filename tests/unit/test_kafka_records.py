"""The fast record path reads exactly what kafka-python's own decoder reads.

Batches are built with kafka-python's batch builder (the producer's encoder) and read both
ways; the real-broker side is in tests/integration/test_kafka_records.py."""

from __future__ import annotations

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.structs import TopicPartition

from streamwatch.records import Record
from streamwatch.sources.kafka_records import (
    CorruptRecord,
    _partition_records_class,
    parse_records,
)

TP = TopicPartition("readings", 3)
GZIP = DefaultRecordBatch.CODEC_GZIP


def _batch(rows: list[tuple], base_offset: int = 0, codec: int = 0) -> bytes:
    """rows: (offset delta, timestamp, key, value, headers)."""
    b = DefaultRecordBatchBuilder(2, codec, False, -1, -1, -1, 1 << 24)
    for delta, ts, key, value, headers in rows:
        b.append(delta, ts, key, value, headers)
    data = bytearray(b.build())
    data[0:8] = base_offset.to_bytes(8, "big")  # outside the CRC, as the broker assigns it
    return bytes(data)


def _read(cls: type, data: bytes, take: int | None = None) -> list[tuple]:
    pr = cls(
        0,
        TP,
        MemoryRecords(data),
        key_deserializer=None,
        value_deserializer=None,
        check_crcs=True,
        isolation_level=0,
        aborted_transactions=None,
        metric_aggregator=None,
        on_drain=lambda _: None,
    )
    out = []
    while pr and (chunk := pr.take(take)):  # a drained PartitionRecords is falsy
        out.extend(
            (r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers))
            for r in chunk
        )
    return out


FAST = _partition_records_class(Fetcher.PartitionRecords)


def _rows(n: int, value_size: int = 40) -> list[tuple]:
    return [
        (i, 1_700_000_000_000 + (i * 37) % 500, b"s%05d" % i, b"v" * (value_size + i % 3), [])
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "rows",
    [
        _rows(5),
        _rows(300),  # offset deltas past one varint byte
        _rows(20, value_size=5000),  # value lengths of two and more varint bytes
        [
            (0, 1_700_000_000_000, None, b"no key", []),
            (1, 1_700_000_000_000, b"k", None, []),  # a tombstone
            (2, 1_700_000_000_000, b"", b"", []),
            (3, 1_699_999_999_000, b"k", b"earlier timestamp", []),
            (4, 1_700_000_000_001, b"k", b"v", [("trace", b"abc"), ("empty", None)]),
            (5, 1_700_000_000_002, b"k", b"v", [("\u00e9t\u00e9", b"x" * 300)]),
        ],
    ],
    ids=["small", "many", "large-values", "nulls-and-headers"],
)
@pytest.mark.parametrize("codec", [0, GZIP], ids=["plain", "gzip"])
def test_same_records_as_kafka_python(rows: list[tuple], codec: int) -> None:
    data = _batch(rows, base_offset=1000, codec=codec) + _batch(rows, base_offset=5000)
    expected = _read(Fetcher.PartitionRecords, data)
    assert len(expected) == 2 * len(rows)
    assert _read(FAST, data) == expected
    assert _read(FAST, data, take=7) == expected  # taken in pieces across batches


def test_position_after_a_partial_take_matches_kafka_python() -> None:
    data = _batch(_rows(50), base_offset=200)
    positions = []
    for cls in (Fetcher.PartitionRecords, FAST):
        pr = cls(0, TP, MemoryRecords(data), None, None, True, 0, None, None, lambda _: None)
        got = pr.take(10)
        positions.append((got[-1].offset, pr.next_fetch_offset, pr.records_read))
    assert positions[0][:2] == positions[1][:2] == (209, 210)


def test_records_are_streamwatch_records() -> None:
    data = _batch(_rows(3))
    pr = FAST(0, TP, MemoryRecords(data), None, None, True, 0, None, None, lambda _: None)
    (first, *_rest) = pr.take(None)
    assert type(first) is Record
    assert first.headers == ()


def test_a_fetch_that_starts_inside_a_batch_skips_the_earlier_records() -> None:
    data = _batch(_rows(20), base_offset=100)
    pr = FAST(112, TP, MemoryRecords(data), None, None, True, 0, None, None, lambda _: None)
    assert [r.offset for r in pr.take(None)] == list(range(112, 120))


def _body(rows: list[tuple]) -> tuple[bytes, int, int, int]:
    batch = DefaultRecordBatch(_batch(rows))
    return bytes(batch._buffer), batch._pos, batch._num_records, batch._header_data[7]


def test_log_append_time_stands_for_every_record() -> None:
    buf, pos, n, first = _body(_rows(4))
    got = parse_records(buf, pos, n, "t", 0, 0, first, 1_800_000_000_000)
    assert {r.timestamp for r in got} == {1_800_000_000_000}


def test_a_truncated_batch_is_corrupt_not_an_index_error() -> None:
    buf, pos, n, first = _body(_rows(4))
    with pytest.raises(CorruptRecord, match="ends inside record"):
        parse_records(buf[:-10], pos, n, "t", 0, 0, first, None)


def test_a_record_length_that_disagrees_with_its_fields_is_corrupt() -> None:
    buf, pos, n, first = _body(_rows(2))
    bad = bytearray(buf)
    bad[pos] += 2  # the first record's length (a one-byte zigzag varint) grows by one
    with pytest.raises(CorruptRecord, match="bytes long"):
        parse_records(bytes(bad), pos, n, "t", 0, 0, first, None)


def test_bytes_after_the_last_record_are_corrupt() -> None:
    buf, pos, n, first = _body(_rows(2))
    with pytest.raises(CorruptRecord, match="unread bytes"):
        parse_records(buf + b"\x00", pos, n, "t", 0, 0, first, None)


def test_legacy_message_format_goes_through_kafka_pythons_reader() -> None:
    from kafka.record.legacy_records import LegacyRecordBatchBuilder

    b = LegacyRecordBatchBuilder(1, 0, 1 << 20)
    for i in range(5):
        b.append(i, 1_700_000_000_000 + i, b"k", b"v%d" % i)
    data = bytes(b.build())
    expected = _read(Fetcher.PartitionRecords, data)
    assert len(expected) == 5 and _read(FAST, data) == expected


def test_a_batch_that_fails_its_crc_is_refused() -> None:
    from kafka.errors import CorruptRecordError

    data = bytearray(_batch(_rows(5)))
    data[-1] ^= 0xFF  # inside the records, which the batch CRC covers
    with pytest.raises(CorruptRecordError, match="crc"):
        _read(FAST, bytes(data))

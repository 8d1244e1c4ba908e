"""A faster record path for kafka-python: record batches straight into streamwatch Records.

kafka-python turns each record into a DefaultRecord, then a 13-field ConsumerRecord, with a
function call per varint; that is most of what a consumer costs per message.  Here each
message-format-v2 batch is read in one tight loop into the 7-field Record the daemon uses.
Everything around the loop (CRC checks, transactions, control batches, positions, metrics)
is kafka-python's own logic, kept as it is.

It plugs in through the fetcher's ``PartitionRecords`` class, on one consumer instance, and
only where that internal API has the shape checked below; otherwise kafka-python's decoder
runs unchanged (the daemon works either way, just slower).
"""

from __future__ import annotations

from typing import Any

from streamwatch.records import Record
from streamwatch.sources import kafka_compat

PATCH = "fast_records"  # its name in logs and in streamwatch_kafka_patch_active


class CorruptRecord(ValueError):
    """A record inside a batch whose CRC passed does not parse: kafka-python raises its own
    CorruptRecordError for the same, which the consumer treats as fatal for the partition."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint of any length (the loop below inlines the one-byte case)."""
    result, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift >= 64:
            raise CorruptRecord(f"varint longer than 64 bits at byte {pos}")


def parse_records(
    buf: bytes,
    pos: int,
    count: int,
    topic: str,
    partition: int,
    base_offset: int,
    first_timestamp: int,
    append_timestamp: int | None,
) -> list[Record]:
    """The ``count`` records of an uncompressed v2 batch body starting at ``pos``.

    ``append_timestamp`` is the batch's max timestamp when the topic uses LogAppendTime, which
    then stands for every record's.  Varints under 64 (one byte) take the inline branch; that
    is nearly every field of a small message.  The varint branch is written out per field on
    purpose: a helper call per field costs more than the rest of the loop.
    """
    out: list[Record] = []
    append = out.append
    end = len(buf)
    try:
        for _ in range(count):
            b = buf[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                length, pos = _varint(buf, pos)
            stop = pos + length
            pos += 1  # attributes (int8): unused since message format v2
            b = buf[pos]
            if b < 0x80:
                ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                ts_delta, pos = _varint(buf, pos)
            b = buf[pos]
            if b < 0x80:
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                offset_delta, pos = _varint(buf, pos)
            b = buf[pos]
            if b < 0x80:
                n, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                n, pos = _varint(buf, pos)
            if n >= 0:
                key: bytes | None = buf[pos : pos + n]
                pos += n
            else:
                key = None
            b = buf[pos]
            if b < 0x80:
                n, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                n, pos = _varint(buf, pos)
            if n >= 0:
                value: bytes | None = buf[pos : pos + n]
                pos += n
            else:
                value = None
            b = buf[pos]
            if b == 0:
                headers: tuple[tuple[str, bytes | None], ...] = ()
                pos += 1
            else:
                headers, pos = _headers(buf, pos)
            if pos != stop or pos > end:
                raise CorruptRecord(
                    f"record at offset {base_offset + offset_delta} is {length} bytes long "
                    f"but its fields take {length + pos - stop}"
                )
            append(
                Record(
                    topic,
                    partition,
                    base_offset + offset_delta,
                    first_timestamp + ts_delta if append_timestamp is None else append_timestamp,
                    key,
                    value,
                    headers,
                )
            )
    except IndexError:
        raise CorruptRecord(
            f"record batch at offset {base_offset} ends inside record {len(out)}"
        ) from None
    if pos != end:
        raise CorruptRecord(f"{end - pos} unread bytes after the last record at {base_offset}")
    return out


def _headers(buf: bytes, pos: int) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, pos = _varint(buf, pos)
    if count < 0:
        raise CorruptRecord(f"negative header count {count}")
    out: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        n, pos = _varint(buf, pos)
        if n < 0:
            raise CorruptRecord(f"negative header key length {n}")
        name = buf[pos : pos + n].decode("utf-8")
        pos += n
        n, pos = _varint(buf, pos)
        if n >= 0:
            out.append((name, buf[pos : pos + n]))
            pos += n
        else:
            out.append((name, None))
    return tuple(out), pos


def install(consumer: Any) -> bool:
    """Give ``consumer`` (a KafkaConsumer) the fast record path; False where it cannot be
    used: deserializers configured, or a kafka-python whose internals look different.

    ``poll()`` then returns Records.  kafka-python's iterator interface (``for r in
    consumer``) reads ``leader_epoch`` from each record, which Records lack: use ``poll()``.
    """
    try:
        import kafka
        from kafka.consumer.fetcher import Fetcher
        from kafka.record.default_records import DefaultRecordBatch
    except ImportError:
        return False
    fetcher: Any = getattr(consumer, "_fetcher", None)
    base: Any = getattr(Fetcher, "PartitionRecords", None)
    shaped = (
        isinstance(fetcher, Fetcher)
        and isinstance(base, type)
        and hasattr(base, "_unpack_records")
        and all(
            hasattr(base, name)
            for name in (
                "_consume_aborted_transactions_up_to",
                "_contains_abort_marker",
                "_is_batch_aborted",
                "drain",
            )
        )
        and all(
            name in DefaultRecordBatch.__slots__
            for name in ("_buffer", "_pos", "_num_records", "_header_data")
        )
        and hasattr(DefaultRecordBatch, "_maybe_uncompress")
    )
    # the fetcher internals above are kafka_compat's versions': others may keep the names
    # but change what they mean, and get kafka-python's decoder
    if not shaped or not kafka_compat.known(kafka.__version__):
        return False
    if fetcher.config.get("key_deserializer") or fetcher.config.get("value_deserializer"):
        return False
    fetcher.PartitionRecords = _partition_records_class(base)
    return True


_CLASSES: dict[type, type] = {}


def _partition_records_class(base: type) -> type:
    if base in _CLASSES:
        return _CLASSES[base]
    import kafka.errors as errors
    from kafka.consumer.fetcher import IsolationLevel

    class FastPartitionRecords(base):
        def _unpack_records(
            self, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
        ) -> Any:
            # kafka-python's own _unpack_records, but for the inner loop over a v2 batch.
            topic, partition = tp.topic, tp.partition
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch
                if self.check_crcs and not batch.validate_crc():
                    raise errors.CorruptRecordError(
                        f"Record batch for partition {tp} at offset {batch.base_offset} "
                        "failed crc check"
                    )
                if batch.magic != 2:  # legacy formats: rare, so the generic reader
                    for r in batch:
                        self.records_read += 1
                        self.bytes_read += r.size_in_bytes
                        self.next_fetch_offset = r.offset + 1
                        yield Record(topic, partition, r.offset, r.timestamp, r.key, r.value, ())
                    batch = records.next_batch()
                    continue
                self.leader_epoch = batch.leader_epoch
                if (
                    self.isolation_level == IsolationLevel.READ_COMMITTED
                    and batch.has_producer_id()
                ):
                    self._consume_aborted_transactions_up_to(batch.last_offset)
                    if self._contains_abort_marker(batch):
                        self.aborted_producer_ids.discard(batch.producer_id)
                    elif self._is_batch_aborted(batch):
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
                batch._maybe_uncompress()
                header = batch._header_data
                try:
                    parsed = parse_records(
                        bytes(batch._buffer),
                        batch._pos,
                        batch._num_records,
                        topic,
                        partition,
                        header[0],
                        header[7],
                        header[8] if header[5] & 0x08 else None,  # LogAppendTime
                    )
                except CorruptRecord as exc:
                    raise errors.CorruptRecordError(f"partition {tp}: {exc}") from None
                self.records_read += len(parsed)
                self.bytes_read += len(batch._buffer) - batch._pos
                for r in parsed:
                    self.next_fetch_offset = r.offset + 1
                    yield r
                batch = records.next_batch()
            # v2 keeps a batch's last offset even where compaction removed its last record:
            # continue after it, or the same batch would be fetched again and again.
            if last_batch is not None and last_batch.magic == 2:
                self.next_fetch_offset = last_batch.next_offset
            self.drain()

    _CLASSES[base] = FastPartitionRecords
    return FastPartitionRecords

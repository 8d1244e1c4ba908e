"""Prometheus remote write 1.0's ``WriteRequest``, encoded by hand (protobuf wire format).

The messages (prometheus/prompb ``remote.proto``, ``types.proto``), the only fields sent::

    message WriteRequest { repeated TimeSeries timeseries = 1; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }  // milliseconds

Every message is a length-delimited field (wire type 2: the key byte ``field << 3 | 2``, the
length as a varint, the bytes); a double is wire type 1 (eight bytes, little-endian), an int64
wire type 0 (a varint of its two's complement).  Both of a sample's fields are always written,
zeros included, which any protobuf reader accepts.  A series' labels must be sorted by name
(the spec; Prometheus stores them as given): ``labels`` sorts them.

>>> series = labels({"stream": "s1", "__name__": "up"})
>>> series.hex(" ")
'0a 0e 0a 08 5f 5f 6e 61 6d 65 5f 5f 12 02 75 70 0a 0c 0a 06 73 74 72 65 61 6d 12 02 73 31'
>>> sample(1.0, 1000).hex(" ")
'12 0c 09 00 00 00 00 00 00 f0 3f 10 e8 07'
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

_DOUBLE = struct.Struct("<d")
_UINT64 = (1 << 64) - 1

# field keys: (number << 3) | wire type
_LEN_1 = b"\x0a"  # field 1, length-delimited
_LEN_2 = b"\x12"  # field 2, length-delimited
_F64_1 = b"\x09"  # field 1, 64-bit
_VARINT_2 = b"\x10"  # field 2, varint


def varint(n: int) -> bytes:
    """``n`` as a protobuf varint; a negative int64 as its 64-bit two's complement."""
    n &= _UINT64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(key: bytes, payload: bytes) -> bytes:
    return key + varint(len(payload)) + payload


def label(name: str, value: str) -> bytes:
    """One ``Label`` as the ``labels`` field of a TimeSeries (key, length and message)."""
    return _field(_LEN_1, _field(_LEN_1, name.encode()) + _field(_LEN_2, value.encode()))


def labels(pairs: Mapping[str, str]) -> bytes:
    """A series' label set, sorted by name, as the ``labels`` fields of its TimeSeries."""
    return b"".join(label(k, pairs[k]) for k in sorted(pairs))


def sample(value: float, timestamp_ms: int) -> bytes:
    """One ``Sample`` as the ``samples`` field of a TimeSeries."""
    head, tail = sample_parts(timestamp_ms)
    return head + _DOUBLE.pack(value) + tail


def sample_parts(timestamp_ms: int) -> tuple[bytes, bytes]:
    """What comes before and after the eight bytes of the value in ``sample``, for every
    sample at ``timestamp_ms``.

    >>> head, tail = sample_parts(1000)
    >>> head + struct.pack("<d", 1.0) + tail == sample(1.0, 1000)
    True
    """
    tail = _VARINT_2 + varint(timestamp_ms)
    return _LEN_2 + varint(9 + len(tail)) + _F64_1, tail


def timeseries(encoded_labels: bytes, samples: Iterable[bytes]) -> bytes:
    """One ``TimeSeries`` as the ``timeseries`` field of a WriteRequest, from the output of
    ``labels`` (kept per series by a caller that sends it often) and of ``sample``."""
    return _field(_LEN_1, encoded_labels + b"".join(samples))


def write_request(series: Iterable[bytes]) -> bytes:
    """A ``WriteRequest`` of the output of ``timeseries``: a message is its fields, one after
    another, so this is their concatenation."""
    return b"".join(series)


# -- reading (for tests and for the curious: what a request holds) ------------------------------


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[i]
        i += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return n, i


def _fields(data: bytes) -> Iterable[tuple[int, int, bytes | int]]:
    """(field number, wire type, payload) of each field of one message."""
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, data[i : i + 8]
            i += 8
        elif wire == 2:
            size, i = _read_varint(data, i)
            if i + size > len(data):
                raise ValueError("truncated field")
            yield number, wire, data[i : i + size]
            i += size
        else:
            raise ValueError(f"wire type {wire} is not used by remote write")


def parse_write_request(data: bytes) -> list[tuple[dict[str, str], list[tuple[float, int]]]]:
    """A WriteRequest's series: (labels, [(value, timestamp ms), ...]) each, in order.

    >>> body = write_request([timeseries(labels({"__name__": "x"}), [sample(2.5, 7)])])
    >>> parse_write_request(body)
    [({'__name__': 'x'}, [(2.5, 7)])]
    """
    out = []
    for number, _, ts in _fields(data):
        if number != 1 or not isinstance(ts, bytes):
            continue
        names: dict[str, str] = {}
        samples: list[tuple[float, int]] = []
        for field, _, body in _fields(ts):
            assert isinstance(body, bytes)
            if field == 1:
                parts = {n: v for n, _, v in _fields(body)}
                name, value = parts.get(1, b""), parts.get(2, b"")
                assert isinstance(name, bytes) and isinstance(value, bytes)
                names[name.decode()] = value.decode()
            elif field == 2:
                parts = {n: v for n, _, v in _fields(body)}
                raw, stamp = parts.get(1, bytes(8)), parts.get(2, 0)
                assert isinstance(raw, bytes) and isinstance(stamp, int)
                if stamp >= 1 << 63:
                    stamp -= 1 << 64
                samples.append((_DOUBLE.unpack(raw)[0], stamp))
        out.append((names, samples))
    return out

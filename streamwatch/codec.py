"""Bytes -> readings, or a DecodeError with a short reason (pure; no I/O).

A message is a JSON object such as ``{"stream": "host-1.cpu", "ts": 1700000000.0,
"value": 0.73}``.  The stream id may come from the record key instead, and the timestamp
(epoch seconds) from the record.  A multivariate model reads several value fields, and a
model with covariates reads those fields too.  Anything Python's json would accept but that
is not a finite number where a number belongs (``NaN`` literals, ``1e400``, booleans) is
refused, and so is a stream id that is not a string of Unicode scalar values (JSON may spell a
lone surrogate, ``"\\ud800"``, which no UTF-8 output can carry), JSON nested too deeply to
parse, and, given ``not_after``, a reading dated after it (one reading from the year 3000
would otherwise lock its stream out: every later reading would look out of order).

>>> m = MessageFormat()
>>> m.decode(b'{"stream": "a", "ts": 10, "value": 2.5}', key=None, record_ts=None)
('a', 10.0, (2.5,), ())
>>> MessageFormat(value_fields=("cpu", "mem"), covariate_fields=("deploying",)).decode(
...     b'{"stream": "h1", "ts": 10, "cpu": 0.5, "mem": 0.25, "deploying": 1}', None, None)
('h1', 10.0, (0.5, 0.25), (1.0,))
>>> m.decode(b'{"stream": "a", "value": NaN}', key=None, record_ts=None)
Traceback (most recent call last):
...
streamwatch.errors.DecodeError: bad_json: non-finite constant NaN
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamwatch.errors import DecodeError

# Reasons are metric label values: keep this set small and fixed.
REASONS = (
    "too_large",
    "bad_utf8",
    "bad_json",
    "not_object",
    "missing_stream",
    "bad_stream",
    "missing_value",
    "bad_value",
    "non_finite",
    "bad_timestamp",
    "future_timestamp",
    "out_of_order",  # set by the engine's time policy, not by decoding
)


# An int timestamp the fast path takes as it is; larger ones go through decode's overflow check.
_BIG_INT = 2**62


def _reject_constant(name: str) -> Any:
    raise DecodeError("bad_json", f"non-finite constant {name}")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True)
class Decoded:
    """A decoded batch: parallel lists for the good records, and the rejected ones."""

    index: list[int]  # positions of the good records in the batch
    streams: list[str]
    timestamps: list[float]
    values: list[tuple[float, ...]]
    covariates: list[tuple[float, ...]]
    errors: list[tuple[int, DecodeError]]


@dataclass(frozen=True)
class MessageFormat:
    """Where the stream id, timestamp, values and covariates live in a message."""

    stream_field: str = "stream"
    timestamp_field: str = "ts"
    value_fields: tuple[str, ...] = ("value",)
    covariate_fields: tuple[str, ...] = ()
    stream_from_key: bool = False  # use the record key (UTF-8) as the stream id
    max_message_bytes: int = 65536
    max_stream_id_length: int = 256

    def decode(
        self,
        value: bytes | None,
        key: bytes | None,
        record_ts: float | None,
        not_after: float | None = None,
    ) -> tuple[str, float, tuple[float, ...], tuple[float, ...]]:
        """One message -> (stream id, timestamp in epoch seconds, values, covariates).
        ``not_after``: the latest timestamp accepted (epoch seconds), or None for any."""
        if value is None:
            raise DecodeError("not_object", "empty message (tombstone)")
        if len(value) > self.max_message_bytes:
            raise DecodeError("too_large", f"{len(value)} bytes > {self.max_message_bytes}")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("bad_utf8", str(exc)) from None
        try:
            obj = _decoder.decode(text)
        except json.JSONDecodeError as exc:
            raise DecodeError("bad_json", str(exc)) from None
        except ValueError as exc:  # an integer literal past Python's 4,300-digit limit
            raise DecodeError("bad_json", str(exc)[:200]) from None
        except RecursionError:
            raise DecodeError("bad_json", "nested too deeply") from None
        if not isinstance(obj, dict):
            raise DecodeError("not_object", f"top level is {type(obj).__name__}")
        return (
            self._stream(obj, key),
            self._timestamp(obj, record_ts, not_after),
            tuple(_number(obj, f) for f in self.value_fields),
            tuple(_number(obj, f) for f in self.covariate_fields),
        )

    def _stream(self, obj: dict[str, Any], key: bytes | None) -> str:
        if self.stream_from_key:
            if not key:
                raise DecodeError("missing_stream", "record has no key")
            try:
                stream = key.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("bad_stream", "record key is not UTF-8") from None
        else:
            if self.stream_field not in obj:
                raise DecodeError("missing_stream", f"no field {self.stream_field!r}")
            stream = obj[self.stream_field]
            if not isinstance(stream, str):
                raise DecodeError("bad_stream", f"{self.stream_field!r} is not a string")
        if not stream or len(stream) > self.max_stream_id_length:
            raise DecodeError(
                "bad_stream",
                f"stream id length {len(stream)} not in 1..{self.max_stream_id_length}",
            )
        if not _scalar_values(stream):
            raise DecodeError("bad_stream", "stream id holds a lone surrogate (not Unicode text)")
        return stream

    def _timestamp(
        self, obj: dict[str, Any], record_ts: float | None, not_after: float | None
    ) -> float:
        ts = obj.get(self.timestamp_field)
        if ts is None:
            if record_ts is None:
                raise DecodeError("bad_timestamp", f"no field {self.timestamp_field!r}")
            ts = record_ts
        elif isinstance(ts, bool) or not isinstance(ts, int | float):
            raise DecodeError("bad_timestamp", f"{self.timestamp_field!r} is not a finite number")
        try:
            ts = float(ts)
        except OverflowError:  # a huge integer literal
            ts = math.inf
        if not math.isfinite(ts):
            raise DecodeError("bad_timestamp", f"{self.timestamp_field!r} is not a finite number")
        if not_after is not None and ts > not_after:
            raise DecodeError("future_timestamp", f"ts {ts:.17g} is after {not_after:.17g}")
        return ts

    def decode_batch(self, records: Sequence[Any], not_after: float | None = None) -> Decoded:
        """Decode a poll batch (objects with ``value``, ``key`` and ``timestamp`` in ms);
        ``not_after`` as in ``decode``.

        The hot path: plain, valid messages are read inline; anything unusual goes through
        ``decode``, which is the single authority on what is valid and why not.
        """
        out = Decoded([], [], [], [], [], [])
        scan = _decoder.scan_once  # type: ignore[attr-defined]  # the C scanner, no wrapper
        sf, tf = self.stream_field, self.timestamp_field
        single = self.value_fields[0] if len(self.value_fields) == 1 else None
        plain = single is not None and not self.covariate_fields and not self.stream_from_key
        max_bytes, max_id = self.max_message_bytes, self.max_stream_id_length
        isfinite = math.isfinite
        latest = math.inf if not_after is None else not_after
        for i, rec in enumerate(records):
            value = rec.value
            if plain and value is not None and len(value) <= max_bytes:
                try:
                    text = value.decode("utf-8")
                    obj, end = scan(text, 0)
                # RecursionError: JSON nested deeper than the scanner's recursion limit
                except (UnicodeDecodeError, StopIteration, ValueError, RecursionError, DecodeError):
                    obj, end = None, -1
                if type(obj) is dict and end == len(text):
                    stream, ts, x = obj.get(sf), obj.get(tf), obj.get(single)
                    if ts is None:
                        ts = rec.timestamp / 1000.0
                    if (
                        type(stream) is str
                        and 0 < len(stream) <= max_id
                        and (stream.isascii() or _scalar_values(stream))
                        and type(x) is float
                        and isfinite(x)
                        and (
                            (type(ts) is float and isfinite(ts))
                            or (type(ts) is int and -_BIG_INT < ts < _BIG_INT)
                        )
                        and ts <= latest
                    ):
                        out.index.append(i)
                        out.streams.append(stream)
                        out.timestamps.append(float(ts))
                        out.values.append((x,))
                        out.covariates.append(())
                        continue
            try:
                stream, ts, vals, covs = self.decode(
                    value, rec.key, rec.timestamp / 1000.0, not_after
                )
            except DecodeError as err:
                out.errors.append((i, err))
                continue
            out.index.append(i)
            out.streams.append(stream)
            out.timestamps.append(ts)
            out.values.append(vals)
            out.covariates.append(covs)
        return out

    def encode(self, stream: str, ts: float, value: float) -> bytes:
        """A univariate message in this format (for producers and tests)."""
        return json.dumps(
            {self.stream_field: stream, self.timestamp_field: ts, self.value_fields[0]: value},
            separators=(",", ":"),
        ).encode()


def _scalar_values(text: str) -> bool:
    """Whether ``text`` is Unicode text that UTF-8 can carry (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(obj: dict[str, Any], name: str) -> float:
    if name not in obj:
        raise DecodeError("missing_value", f"no field {name!r}")
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise DecodeError("bad_value", f"{name!r} is {type(v).__name__}")
    try:
        x = float(v)
    except OverflowError:  # a huge integer literal
        raise DecodeError("non_finite", f"{name!r} overflows a double") from None
    if not math.isfinite(x):
        raise DecodeError("non_finite", f"{name!r} is {x}")
    return x

"""The changelog's record format: stream state as keyed records that a compacted topic keeps.

Local checkpoints (``checkpoint.py``) stay on the member that wrote them; the changelog topic
lets a partition's state follow the partition to another member.  Changelog partition p holds
the streams of input partition p (of every input topic, each under its own key prefix), written
in *rounds*, with the local checkpoints:

* one record per stream changed since the last round: key ``<topic> NUL r <stream key>``, value
  the round's input offset (8 bytes) and the stream's state row (a fixed layout, below);
* a tombstone (value None) per stream evicted since: compaction then forgets it;
* last, a *marker*: key ``<topic> NUL m``, value JSON with the input offset the round reflects,
  the offset of the last *full* round (which wrote every live stream), the number of live
  streams, the model and the row layout.

A round is only taken as written once its marker is: records after the last marker are a round
that a crash cut short, and are passed over (``fold``).  Rows older than the last full round
are left-overs (a stream dropped without a tombstone) and are passed over too.  The marker's
stream count catches what compaction may have removed under a round cut short: a restore that
does not find every stream the marker counts refuses the changelog rather than restore a
state that never was.  Compaction keeps the latest record of every key, so a restore reads
about one record per live stream, whatever the history.

Pure: bytes in, arrays out.  The Kafka side is ``changelog_kafka.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamwatch.errors import StreamwatchError

FORMAT = 1
_SEQ = np.dtype(">u8")  # each row's value starts with its round's input offset


class ChangelogError(StreamwatchError):
    """A changelog partition whose state cannot be used; the message says why."""

    reason = "damaged"


class ChangelogOtherModel(ChangelogError):
    reason = "other_model"


def layout(rows: dict[str, np.ndarray]) -> np.dtype:
    """The row layout of a partition's state: one packed record per stream, a field per
    state array (``StateStore.changes``' rows), in a fixed order."""
    return np.dtype(
        [("seq", _SEQ)]
        + [(name, arr.dtype.str, arr.shape[1:]) for name, arr in sorted(rows.items())]
    )


def describe(dtype: np.dtype) -> list[list[object]]:
    """The layout as JSON can hold it (the marker's ``layout``)."""
    assert dtype.names is not None
    return [[name, dtype[name].base.str, list(dtype[name].shape)] for name in dtype.names]


def _prefix(topic: str) -> bytes:
    return topic.encode() + b"\x00"


def row_key(topic: str, key: int) -> bytes:
    return _prefix(topic) + b"r" + int(key).to_bytes(8, "big")


def marker_key(topic: str) -> bytes:
    return _prefix(topic) + b"m"


def encode_rows(
    topic: str, offset: int, rows: dict[str, np.ndarray]
) -> tuple[list[bytes], list[bytes], np.dtype]:
    """Keys and values of a round's row records, and their layout."""
    dtype = layout(rows)
    n = len(rows["key"])
    packed = np.empty(n, dtype)
    packed["seq"] = offset
    for name, arr in rows.items():
        packed[name] = arr
    raw = packed.tobytes()
    size = dtype.itemsize
    values = [raw[i * size : (i + 1) * size] for i in range(n)]
    prefix = _prefix(topic) + b"r"
    keys = [prefix + k.to_bytes(8, "big") for k in rows["key"].tolist()]
    return keys, values, dtype


def tombstone_keys(topic: str, gone: np.ndarray) -> list[bytes]:
    prefix = _prefix(topic) + b"r"
    return [prefix + int(k).to_bytes(8, "big") for k in np.asarray(gone).tolist()]


def encode_marker(
    offset: int, base: int, streams: int, model: dict[str, object], dtype: np.dtype
) -> bytes:
    return json.dumps(
        {
            "format": FORMAT,
            "offset": offset,
            "base": base,
            "streams": streams,
            "model": model,
            "layout": describe(dtype),
        }
    ).encode()


@dataclass(frozen=True)
class Folded:
    """A changelog partition's state for one input topic, as of its last whole round."""

    rows: dict[str, np.ndarray]
    offset: int  # the next input offset: the state has seen every record before it
    base: int  # the input offset of the last full round
    records: int  # the records read


def fold(
    records: Iterable[tuple[bytes, bytes | None]], topic: str, model: dict[str, object]
) -> Folded | None:
    """The state that a changelog partition's records (key, value; in offset order) hold for
    ``topic``'s input partition, or None if no round was ever completed.  ``ChangelogError``
    says why the records cannot be used."""
    prefix = _prefix(topic)
    row_prefix, mark = prefix + b"r", prefix + b"m"
    done: dict[bytes, bytes] = {}  # rows of rounds whose marker was read
    pending: dict[bytes, bytes | None] = {}  # rows since the last marker
    marker: dict[str, Any] | None = None
    n = 0
    for key, value in records:
        n += 1
        if key.startswith(row_prefix):
            pending[key] = value
        elif key == mark:
            if value is None:  # a marker's tombstone: the partition's state was wiped
                done.clear()
                pending.clear()
                marker = None
                continue
            for k, v in pending.items():
                if v is None:
                    done.pop(k, None)
                else:
                    done[k] = v
            pending.clear()
            try:
                marker = json.loads(value)
            except ValueError as exc:
                raise ChangelogError(f"a marker that is not JSON: {exc}") from exc
    if marker is None:
        return None
    try:
        if marker["format"] != FORMAT:
            raise ChangelogError(f"changelog format {marker['format']!r}, not {FORMAT}")
        if marker["model"] != model:
            raise ChangelogOtherModel(
                f"written for model {marker['model'].get('name')} "
                f"{marker['model'].get('version')}, not the one served "
                f"({model['name']} {model['version']})"
            )
        dtype = np.dtype([(name, kind, tuple(shape)) for name, kind, shape in marker["layout"]])
        offset, base, streams = int(marker["offset"]), int(marker["base"]), int(marker["streams"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ChangelogError(f"a marker that does not say what it must: {exc!r}") from exc
    values = [v for v in done.values() if len(v) == dtype.itemsize]
    if len(values) != len(done):
        raise ChangelogError(f"rows of another size than the marker's layout ({dtype.itemsize} B)")
    packed = np.frombuffer(b"".join(values), dtype)
    packed = packed[(packed["seq"] >= base) & (packed["seq"] <= offset)]
    if len(packed) != streams:
        raise ChangelogError(
            f"{len(packed)} stream(s) found as of offset {offset}, where its marker counts "
            f"{streams}: rows of a round cut short were compacted away"
        )
    rows = {
        name: np.ascontiguousarray(packed[name])
        for name in packed.dtype.names or ()
        if name != "seq"
    }
    return Folded(rows, offset, base, n)

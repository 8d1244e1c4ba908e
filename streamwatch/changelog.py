"""The changelog's record format: the checkpoint segments themselves, in a compacted topic.

Local checkpoints (``checkpoint.py``) stay on the member that wrote them; the changelog topic
lets a partition's state follow the partition to another member.  Changelog partition p holds
input partition p's state (of every input topic, each under its own key prefix) as the same
chain of segments the local directory holds, a full one and the deltas after it, each segment
cut into chunks of at most ``CHUNK_BYTES``:

* a chunk: key ``<topic> NUL c NUL <segment id> NUL <index>``, value a slice of the segment's
  bytes (``checkpoint.encode_segment``: an ``.npz`` whose members are CRC-checked);
* a *marker*, last: key ``<topic> NUL m``, value JSON naming the chain (each segment's id,
  chunk count and size, the full one first), the input offset it reflects and the model;
* once a round has started a new chain, tombstones for every chunk of the chain before it.

A chain counts only once its marker is written: chunks of a round cut short are not named by
any marker and are passed over (and tombstoned by the next member that reads the partition).
Segment ids are random, so two members never write the same key.  A few hundred records carry
a million streams' state: kafka-python's cost per record does not bound how many streams a
round may hold.

Pure: bytes in, rows out.  The Kafka side is ``changelog_kafka.py``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamwatch import checkpoint
from streamwatch.errors import StreamwatchError

FORMAT = 1
CHUNK_BYTES = 512 * 1024  # under the broker's default max.message.bytes (1 MiB) with room


class ChangelogError(StreamwatchError):
    """A changelog partition whose state cannot be used; the message says why."""

    reason = "damaged"


class ChangelogOtherModel(ChangelogError):
    reason = "other_model"


@dataclass(frozen=True)
class Link:
    """One segment of a chain: its id, how many chunks, how many bytes."""

    sid: str
    chunks: int
    size: int


def new_id() -> str:
    return secrets.token_hex(8)


def _prefix(topic: str) -> bytes:
    return topic.encode() + b"\x00"


def marker_key(topic: str) -> bytes:
    return _prefix(topic) + b"m"


def chunk_key(topic: str, sid: str, index: int) -> bytes:
    return _prefix(topic) + b"c\x00" + sid.encode() + b"\x00" + b"%06d" % index


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]


def link_keys(topic: str, link: Link) -> list[bytes]:
    return [chunk_key(topic, link.sid, i) for i in range(link.chunks)]


def encode_marker(offset: int, chain: list[Link], model: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "format": FORMAT,
            "offset": offset,
            "model": model,
            "chain": [[link.sid, link.chunks, link.size] for link in chain],
        }
    ).encode()


@dataclass(frozen=True)
class Marker:
    offset: int  # the next input offset: the chain's state has seen every record before it
    chain: list[Link]  # the full segment first, then its deltas in order
    model: dict[str, object]


def decode_marker(value: bytes) -> Marker:
    try:
        raw: dict[str, Any] = json.loads(value)
        if raw["format"] != FORMAT:
            raise ChangelogError(f"changelog format {raw['format']!r}, not {FORMAT}")
        chain = [Link(str(sid), int(n), int(size)) for sid, n, size in raw["chain"]]
        if not chain:
            raise ChangelogError("a marker that names no segment")
        return Marker(int(raw["offset"]), chain, dict(raw["model"]))
    except ChangelogError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ChangelogError(f"a marker that does not say what it must: {exc!r}") from exc


@dataclass(frozen=True)
class Folded:
    """A changelog partition's state for one input topic, as of its last whole round."""

    rows: dict[str, np.ndarray]
    offset: int  # the next input offset: the state has seen every record before it
    marker: Marker
    records: int  # the records read
    strays: list[bytes]  # keys of chunks no marker names (rounds cut short, chains replaced)


def fold(
    records: Iterable[tuple[bytes, bytes | None]], topic: str, model: dict[str, object]
) -> Folded | None:
    """The state that a changelog partition's records (key, value; in offset order) hold for
    ``topic``'s input partition, or None if no round was ever completed.  ``ChangelogError``
    says why the records cannot be used."""
    prefix = _prefix(topic)
    chunk_prefix, mark = prefix + b"c\x00", prefix + b"m"
    found: dict[bytes, bytes] = {}
    last: bytes | None = None
    n = 0
    for key, value in records:
        n += 1
        if key.startswith(chunk_prefix):
            if value is None:
                found.pop(key, None)
            else:
                found[key] = value
        elif key == mark:
            last = value  # None: the partition's state was wiped
    if last is None:
        return None
    marker = decode_marker(last)
    if marker.model != model:
        raise ChangelogOtherModel(
            f"written for model {marker.model.get('name')} {marker.model.get('version')}, "
            f"not the one served ({model['name']} {model['version']})"
        )
    segments = []
    named: set[bytes] = set()
    for link in marker.chain:
        keys = link_keys(topic, link)
        named.update(keys)
        missing = [k for k in keys if k not in found]
        if missing:
            raise ChangelogError(
                f"segment {link.sid} lacks {len(missing)} of its {link.chunks} chunk(s)"
            )
        data = b"".join(found[k] for k in keys)
        if len(data) != link.size:
            raise ChangelogError(f"segment {link.sid}: {len(data)} bytes, not {link.size}")
        try:
            segments.append(checkpoint.decode_segment(data, f"changelog segment {link.sid}"))
        except checkpoint.CheckpointError as exc:
            raise ChangelogError(str(exc)) from exc
    base, deltas = segments[0], segments[1:]
    if not base.full or any(s.full for s in deltas):
        raise ChangelogError("a chain that is not one full segment and its deltas")
    rows = base.rows
    for delta in deltas:
        rows = checkpoint.apply_delta(rows, delta)
    if segments[-1].offset != marker.offset:
        raise ChangelogError(
            f"its last segment reflects offset {segments[-1].offset}, its marker {marker.offset}"
        )
    strays = [k for k in found if k not in named]
    return Folded(rows, marker.offset, marker, n, strays)

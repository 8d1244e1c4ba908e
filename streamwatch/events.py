"""What the daemon writes: verdict events and dead letters (pure; no I/O).

Both always fit what they are written to.  A verdict is strict JSON: a number that is not
finite (a stream's first reading has no forecast yet) is ``null``, never a bare ``NaN``.  A dead
letter carries the original key, value and headers plus ``streamwatch.*`` headers saying why;
one larger than ``max_bytes`` (a record near the broker's size limit, whose headers would push
it over) keeps its reason headers and as much of the original as fits, and says so with
``streamwatch.truncated``, the original value's size and its SHA-256.

>>> json.loads(verdict_event({"stream": "a", "prediction": float("nan"), "score": 0.0}))
{'stream': 'a', 'prediction': None, 'score': 0.0}
>>> from streamwatch.records import Record
>>> rec = Record("in", 0, 7, 0, b"k", b"x" * 5000)
>>> out = dead_letter(rec, "too_large", "5000 bytes > 64", "dead", max_bytes=1024)
>>> len(out.value) < 1024, dict(out.headers)["streamwatch.original_bytes"]
(True, b'5000')
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from streamwatch.records import Outgoing, Record

# What a dead letter's own headers may take, at most: the reason, a detail cut to DETAIL_CHARS,
# the origin, and the truncation marks.  max_bytes must leave room for them and a little more.
DETAIL_CHARS = 500
MIN_DEAD_LETTER_BYTES = 4096


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def verdict_event(fields: Mapping[str, Any]) -> bytes:
    """``fields`` as compact, strict JSON: non-finite floats (also inside lists and mappings
    one level down, as a multivariate verdict has them) become null."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if type(value) is float:
            value = finite_or_none(value)
        elif isinstance(value, dict):
            value = {k: finite_or_none(v) if type(v) is float else v for k, v in value.items()}
        out[key] = value
    # allow_nan=False: a NaN that slipped through is a bug to hear about, not output to send
    return json.dumps(out, separators=(",", ":"), allow_nan=False).encode()


def _text(s: str) -> bytes:
    """A header value from text that may hold anything (a lone surrogate cannot be UTF-8)."""
    return s.encode("utf-8", "backslashreplace")


def dead_letter(
    rec: Record, reason: str, detail: str, topic: str, max_bytes: int = 524288
) -> Outgoing:
    """The dead letter for ``rec``: its key, value and headers (a null header value is sent
    empty: kafka-python's producer sends bytes only) plus why and where it came from, in at
    most ``max_bytes`` of key, value and headers together."""
    value = rec.value or b""
    key = rec.key
    theirs = [(k, b"" if v is None else v) for k, v in rec.headers or ()]
    ours = [
        ("streamwatch.reason", _text(reason)),
        ("streamwatch.detail", _text(detail[:DETAIL_CHARS])),
        ("streamwatch.topic", _text(rec.topic)),
        ("streamwatch.partition", str(rec.partition).encode()),
        ("streamwatch.offset", str(rec.offset).encode()),
    ]

    def size(headers: list[tuple[str, bytes]]) -> int:
        return sum(len(_text(k)) + len(v) for k, v in headers)

    whole = len(key or b"") + len(value) + size(theirs) + size(ours)
    if whole <= max_bytes:
        return Outgoing(topic, key, value, [*theirs, *ours])
    ours += [
        ("streamwatch.truncated", b"true"),
        ("streamwatch.original_bytes", str(len(value)).encode()),
        ("streamwatch.original_sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    room = max_bytes - size(ours)
    if key is not None and len(key) > room // 4:  # a key may not eat the value's room
        key = key[: room // 4]
    room -= len(key or b"")
    kept: list[tuple[str, bytes]] = []
    taken = 0
    for k, v in theirs:  # the original headers, in order, while they fit in half of what is left
        taken += size([(k, v)])
        if taken > room // 2:
            break
        kept.append((k, v))
    room -= size(kept)
    return Outgoing(topic, key, value[: max(room, 0)], [*kept, *ours])

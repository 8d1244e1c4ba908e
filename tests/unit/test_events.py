"""Verdict events are strict JSON; dead letters always fit, and say what they left out."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from streamwatch.events import MIN_DEAD_LETTER_BYTES, dead_letter, verdict_event
from streamwatch.records import Record


def _strict(raw: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(raw, parse_constant=refuse)


def test_undefined_numbers_are_null() -> None:
    nan, inf = float("nan"), float("inf")
    event = _strict(
        verdict_event(
            {
                "stream": "a",
                "prediction": nan,
                "scale": inf,
                "score": 0.0,
                "value": {"cpu": nan, "mem": 1.5},
                "anomaly": False,
            }
        )
    )
    assert event == {
        "stream": "a",
        "prediction": None,
        "scale": None,
        "score": 0.0,
        "value": {"cpu": None, "mem": 1.5},
        "anomaly": False,
    }


def _size(out: Any) -> int:
    return len(out.key or b"") + len(out.value) + sum(len(k) + len(v) for k, v in out.headers)


def test_a_small_dead_letter_keeps_everything() -> None:
    rec = Record("in", 2, 41, 0, b"k", b"{oops", [("trace", b"1"), ("null", None)])
    out = dead_letter(rec, "bad_json", "Expecting value", "dead")
    headers = dict(out.headers)
    assert (out.topic, out.key, out.value) == ("dead", b"k", b"{oops")
    assert headers["trace"] == b"1" and headers["null"] == b""
    assert headers["streamwatch.reason"] == b"bad_json"
    assert headers["streamwatch.partition"] == b"2" and headers["streamwatch.offset"] == b"41"
    assert "streamwatch.truncated" not in headers


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (b"k", b"v" * 1_048_400, []),  # a record near the broker's default limit
        (b"k", b"v" * 2_000_000, [("h", b"x" * 10)]),  # 2 MB, from a topic that allows 5 MB
        (b"k" * 900_000, b"v" * 10, []),  # a huge key
        (None, b"v" * 100, [(f"h{i}", b"x" * 1000) for i in range(2000)]),  # huge headers
        (None, None, [("h", b"x" * 3_000_000)]),  # one header larger than everything
    ],
)
def test_an_oversized_dead_letter_is_cut_to_fit_and_says_so(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    limit = 524288
    rec = Record("in", 0, 9, 0, key, value, headers)
    out = dead_letter(rec, "too_large", "1048400 bytes > 65536", "dead", max_bytes=limit)
    assert _size(out) <= limit
    got = dict(out.headers)
    assert got["streamwatch.truncated"] == b"true"
    assert got["streamwatch.reason"] == b"too_large" and got["streamwatch.offset"] == b"9"
    original = value or b""
    assert got["streamwatch.original_bytes"] == str(len(original)).encode()
    assert got["streamwatch.original_sha256"] == hashlib.sha256(original).hexdigest().encode()
    assert original.startswith(out.value)  # a prefix of the original
    if len(original) > limit:
        assert len(out.value) > limit // 2  # most of the room goes to the value


def test_the_smallest_allowed_limit_still_fits() -> None:
    rec = Record("t" * 249, 0, 2**62, 0, b"k" * 5000, b"v" * 5000, [("h" * 300, b"x" * 300)])
    out = dead_letter(rec, "too_large", "d" * 10_000, "dead", max_bytes=MIN_DEAD_LETTER_BYTES)
    assert _size(out) <= MIN_DEAD_LETTER_BYTES


def test_text_that_utf8_cannot_carry_is_escaped_in_headers() -> None:
    rec = Record("in", 0, 1, 0, None, b"x")
    out = dead_letter(rec, "bad_stream", "stream '\ud800' refused", "dead")
    assert dict(out.headers)["streamwatch.detail"] == b"stream '\\ud800' refused"

"""Property-based fuzzing of what the daemon reads and writes: every input is a reading or a
DecodeError with a reason, never another exception; the batch decoder's fast path agrees with
the one-by-one decoder; verdicts are strict JSON; dead letters fit.  The example budget comes
from the profile in tests/fuzz/conftest.py (bounded in ``make test``)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streamwatch.codec import REASONS, MessageFormat
from streamwatch.errors import DecodeError
from streamwatch.events import MIN_DEAD_LETTER_BYTES, dead_letter, verdict_event
from streamwatch.records import Record

NOT_AFTER = 2e9
FORMATS = [
    MessageFormat(max_stream_id_length=16),
    MessageFormat(stream_from_key=True),
    MessageFormat(value_fields=("a", "b"), covariate_fields=("c",)),
]

# Text with what JSON can spell but UTF-8 cannot carry: lone surrogates.
text = st.text(st.characters(codec=None, categories=None), max_size=40) | st.sampled_from(
    ["", "\ud800", "a\udfff", "\ud83d\ude00", "é", "\x00", " ", "s" * 300]
)
numbers = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**1100, -(2**1100)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e300, 1.7e9, 3.25e10])
)
scalars = st.none() | st.booleans() | numbers | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> str:
    """JSON text nested past the scanner's recursion limit, in lists or objects (as text:
    Python's own encoder would hit its recursion limit first)."""
    n = draw(st.integers(0, 70_000))
    if draw(st.booleans()):
        return "[" * n + "1" + "]" * draw(st.sampled_from([n, 0, max(n - 1, 0)]))
    return '{"k":' * n + "1" + "}" * draw(st.sampled_from([n, 0]))


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """JSON objects shaped like readings, with every field drawn from good and bad values."""
    obj: dict[str, Any] = {}
    for name, good in (
        ("stream", st.sampled_from(["a", "h1", "s" * 16])),
        ("ts", st.floats(0, 2e9)),
        ("value", st.floats(-1e6, 1e6)),
        ("a", st.floats(-1e6, 1e6)),
        ("b", st.floats(-1e6, 1e6)),
        ("c", st.integers(0, 1)),
    ):
        choice = draw(st.integers(0, 4))
        if choice == 0:
            continue  # missing
        obj[name] = draw(good if choice < 3 else json_values)
    nested = None
    if draw(st.booleans()):
        obj[draw(text)] = draw(json_values)
    elif draw(st.booleans()):
        obj["x"], nested = "__deep__", draw(deep())
    # an integer literal past Python's 4,300-digit limit (no int object can stand for it here)
    big = draw(st.sampled_from([None, "value", "ts", "a"]))
    if big is not None:
        obj[big] = "__big__"
    raw = json.dumps(obj, ensure_ascii=draw(st.booleans()), allow_nan=True)
    raw = raw.replace('"__big__"', "9" * 5000)
    if nested is not None:
        raw = raw.replace('"__deep__"', nested)
    # surrogatepass: lone surrogates written raw make bytes that are not UTF-8
    data = raw.encode("utf-8", "surrogatepass")
    return data + draw(st.sampled_from([b"", b" ", b"x", b"{}"]))


def _check_reading(fmt: MessageFormat, out: tuple[str, float, tuple, tuple]) -> None:
    stream, ts, values, covariates = out
    assert isinstance(stream, str) and 0 < len(stream) <= fmt.max_stream_id_length
    stream.encode("utf-8")  # Unicode scalar values only
    assert type(ts) is float and math.isfinite(ts) and ts <= NOT_AFTER
    assert len(values) == len(fmt.value_fields)
    assert len(covariates) == len(fmt.covariate_fields)
    assert all(type(x) is float and math.isfinite(x) for x in (*values, *covariates))


def _decode_both(fmt: MessageFormat, value: bytes | None, key: bytes | None) -> None:
    """decode gives a valid reading or a DecodeError with a known reason, and decode_batch
    (whose fast path reads plain messages inline) says exactly the same."""
    try:
        one: Any = fmt.decode(value, key, 1.0, NOT_AFTER)
        _check_reading(fmt, one)
    except DecodeError as err:
        assert err.reason in REASONS
        one = err.reason
    batch = fmt.decode_batch(
        [SimpleNamespace(value=value, key=key, timestamp=1000)], not_after=NOT_AFTER
    )
    if batch.errors:
        assert batch.index == [] and [e.reason for _, e in batch.errors] == [one]
    else:
        got = (batch.streams[0], batch.timestamps[0], batch.values[0], batch.covariates[0])
        assert got == one


@given(st.binary(max_size=300), st.none() | st.binary(max_size=20))
def test_arbitrary_bytes(value: bytes, key: bytes | None) -> None:
    for fmt in FORMATS:
        _decode_both(fmt, value, key)


@given(messages(), st.none() | st.sampled_from([b"k1", b"\xff", b"", "é".encode()]))
def test_generated_messages(value: bytes, key: bytes | None) -> None:
    for fmt in FORMATS:
        _decode_both(fmt, value, key)


@given(json_values.map(lambda doc: json.dumps(doc, allow_nan=True)) | deep())
def test_any_json_document(doc: str) -> None:
    value = doc.encode("utf-8", "surrogatepass")
    for fmt in FORMATS:
        _decode_both(fmt, value, None)


@given(
    st.dictionaries(
        st.sampled_from(["stream", "prediction", "scale", "score", "ts", "value"]),
        numbers.filter(lambda x: not isinstance(x, int) or abs(x) < 2**53)
        | st.dictionaries(st.sampled_from(["cpu", "mem"]), st.floats()),
    )
)
def test_verdicts_are_strict_json(fields: dict[str, Any]) -> None:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a verdict")

    json.loads(verdict_event(fields), parse_constant=refuse)


@given(
    key=st.none() | st.binary(max_size=5000),
    size=st.integers(0, 200_000),
    headers=st.lists(st.tuples(text, st.none() | st.binary(max_size=3000)), max_size=20),
    detail=text,
    limit=st.integers(MIN_DEAD_LETTER_BYTES, 100_000),
)
def test_dead_letters_always_fit(
    key: bytes | None,
    size: int,
    headers: list[tuple[str, bytes | None]],
    detail: str,
    limit: int,
) -> None:
    rec = Record("in", 3, 77, 0, key, b"v" * size, headers)
    out = dead_letter(rec, "too_large", detail, "dead", max_bytes=limit)
    used = len(out.key or b"") + len(out.value)
    used += sum(len(k.encode("utf-8", "backslashreplace")) + len(v) for k, v in out.headers)
    assert used <= limit
    got = dict(out.headers)
    assert got["streamwatch.reason"] == b"too_large" and got["streamwatch.offset"] == b"77"
    for k, v in out.headers:
        assert isinstance(v, bytes)
        k.encode("utf-8", "backslashreplace")

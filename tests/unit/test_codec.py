from __future__ import annotations

import pytest

from streamwatch.codec import REASONS, MessageFormat
from streamwatch.errors import DecodeError

FMT = MessageFormat(max_message_bytes=200, max_stream_id_length=8)


def test_decodes_a_reading() -> None:
    assert FMT.decode(b'{"stream":"a","ts":1.5,"value":-3}', None, None) == ("a", 1.5, (-3.0,), ())


def test_timestamp_falls_back_to_record_time() -> None:
    assert FMT.decode(b'{"stream":"a","value":1}', None, 99.0) == ("a", 99.0, (1.0,), ())


def test_stream_from_key() -> None:
    fmt = MessageFormat(stream_from_key=True)
    assert fmt.decode(b'{"value":1,"ts":2}', b"k1", None) == ("k1", 2.0, (1.0,), ())
    with pytest.raises(DecodeError) as err:
        fmt.decode(b'{"value":1,"ts":2}', None, None)
    assert err.value.reason == "missing_stream"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "bad_utf8"),
        (b"{not json", "bad_json"),
        (b'{"stream":"a","value":NaN}', "bad_json"),
        (b'{"stream":"a","value":-Infinity}', "bad_json"),
        (b"[1,2]", "not_object"),
        (None, "not_object"),
        (b'{"value":1}', "missing_stream"),
        (b'{"stream":5,"value":1}', "bad_stream"),
        (b'{"stream":"","value":1}', "bad_stream"),
        (b'{"stream":"waytoolongid","value":1}', "bad_stream"),
        (b'{"stream":"a","ts":1}', "missing_value"),
        (b'{"stream":"a","ts":1,"value":"3"}', "bad_value"),
        (b'{"stream":"a","ts":1,"value":true}', "bad_value"),
        (b'{"stream":"a","ts":1,"value":1e400}', "non_finite"),
        (b'{"stream":"a","value":' + b"9" * 400 + b"}", "too_large"),
        (b'{"stream":"a","value":1,"ts":"yesterday"}', "bad_timestamp"),
        (b'{"stream":"a","value":1}', "bad_timestamp"),  # no ts and no record time
    ],
)
def test_rejects_with_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        FMT.decode(raw, None, None)
    assert err.value.reason == reason
    assert reason in REASONS


def test_huge_integer_is_non_finite() -> None:
    fmt = MessageFormat()
    with pytest.raises(DecodeError) as err:
        fmt.decode(b'{"stream":"a","ts":1,"value":' + b"9" * 400 + b"}", None, None)
    assert err.value.reason == "non_finite"


def test_encode_round_trips() -> None:
    fmt = MessageFormat()
    assert fmt.decode(fmt.encode("s1", 12.25, 0.1), None, None) == ("s1", 12.25, (0.1,), ())


def test_several_values_and_covariates() -> None:
    fmt = MessageFormat(value_fields=("a", "b"), covariate_fields=("c",))
    assert fmt.decode(b'{"stream":"s","ts":1,"a":1,"b":2,"c":0}', None, None) == (
        "s",
        1.0,
        (1.0, 2.0),
        (0.0,),
    )
    for raw, reason in [
        (b'{"stream":"s","ts":1,"a":1,"c":0}', "missing_value"),
        (b'{"stream":"s","ts":1,"a":1,"b":2}', "missing_value"),
        (b'{"stream":"s","ts":1,"a":1,"b":2,"c":"x"}', "bad_value"),
    ]:
        with pytest.raises(DecodeError) as err:
            fmt.decode(raw, None, None)
        assert err.value.reason == reason


@pytest.mark.parametrize(
    "fmt",
    [
        MessageFormat(),
        MessageFormat(stream_from_key=True, max_stream_id_length=8),
        MessageFormat(value_fields=("a", "b"), covariate_fields=("c",)),
    ],
)
def test_batch_decoding_agrees_with_one_by_one(fmt: MessageFormat) -> None:
    """decode_batch has an inline fast path; it must accept and refuse exactly as decode."""
    from types import SimpleNamespace

    corpus = [
        b'{"stream":"a","ts":1,"value":2.5}',
        b' {"stream":"a","ts":1,"value":2.5} ',
        b'{"stream":"a","value":2.5}',
        b'{"stream":"a","ts":1,"value":2}',
        b'{"stream":"a","ts":1,"value":1e400}',
        b'{"stream":"a","ts":1,"value":NaN}',
        b'{"stream":"a","ts":true,"value":1.5}',
        b'{"stream":"","ts":1,"value":1.5}',
        b'{"stream":"waytoolongid","ts":1,"value":1.5}',
        b'{"stream":"a","ts":1,"value":1.5}x',
        b'{"stream":"a","ts":1,"a":1.5,"b":2.5,"c":0.0}',
        b"\xff",
        b"[]",
        b"",
        None,
        b'{"stream":"a","ts":1e999,"value":1.5}',
        b'{"stream":7,"ts":1,"value":1.5}',
        # found by the hardening review: each crashed or slipped past the fast path
        b'{"stream":"a","ts":1,"value":1.5,"x":' + b"[" * 3000 + b"]" * 3000 + b"}",
        b"[" * 60000,
        b'{"stream":"\\ud800","ts":1,"value":1.5}',
        b'{"stream":"\\u00e9t\\u00e9","ts":1,"value":1.5}',
        b'{"stream":"a","ts":32503680000,"value":1.5}',
        b'{"stream":"a","ts":' + b"9" * 30 + b',"value":1.5}',
        b'{"stream":"a","ts":1,"value":' + b"1" * 5000 + b"}",
    ]
    records = [
        SimpleNamespace(value=v, key=k, timestamp=5000) for v in corpus for k in (None, b"key1")
    ]
    batch = fmt.decode_batch(records, not_after=2e9)
    expected_ok, expected_err = [], []
    for i, r in enumerate(records):
        try:
            expected_ok.append((i, fmt.decode(r.value, r.key, 5.0, not_after=2e9)))
        except DecodeError as err:
            expected_err.append((i, err.reason))
    got_ok = [
        (i, (s, t, v, c))
        for i, s, t, v, c in zip(
            batch.index,
            batch.streams,
            batch.timestamps,
            batch.values,
            batch.covariates,
            strict=True,
        )
    ]
    assert got_ok == expected_ok
    assert [(i, e.reason) for i, e in batch.errors] == expected_err


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # nested past the JSON scanner's recursion limit, in an extra field and bare
        (b'{"stream":"a","ts":1,"value":1,"x":' + b"[" * 1000 + b"]" * 1000 + b"}", "bad_json"),
        (b'{"a":' * 30000 + b"1" + b"}" * 30000, "bad_json"),
        (b"[" * 60000, "bad_json"),
        # a lone surrogate is valid JSON but no UTF-8 output (a key, a header) can carry it
        (b'{"stream":"\\ud800","ts":1,"value":1}', "bad_stream"),
        (b'{"stream":"x\\udfff","ts":1,"value":1}', "bad_stream"),
        # an integer literal past Python's 4,300-digit limit for int()
        (b'{"stream":"a","ts":1,"value":' + b"1" * 5000 + b"}", "bad_json"),
        (b'{"stream":"a","ts":' + b"9" * 400 + b',"value":1}', "bad_timestamp"),
        (b'{"stream":"a","ts":32503680000,"value":1}', "future_timestamp"),  # the year 3000
    ],
)
def test_hostile_messages_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    fmt = MessageFormat(max_message_bytes=1 << 20)
    with pytest.raises(DecodeError) as err:
        fmt.decode(raw, None, None, not_after=2e9)
    assert err.value.reason == reason
    assert reason in REASONS
    from types import SimpleNamespace

    batch = fmt.decode_batch([SimpleNamespace(value=raw, key=None, timestamp=0)], not_after=2e9)
    assert [(i, e.reason) for i, e in batch.errors] == [(0, reason)]  # the fast path too


def test_unicode_stream_ids_are_fine() -> None:
    fmt = MessageFormat()
    raw = rb'{"stream":"h\u00f4te-\ud83d\ude00","ts":1,"value":1}'  # a pair is fine
    assert fmt.decode(raw, None, None)[0] == "h\u00f4te-\U0001f600"


def test_future_readings_are_refused_only_past_the_limit() -> None:
    fmt = MessageFormat()
    raw = b'{"stream":"a","ts":1000.5,"value":1}'
    assert fmt.decode(raw, None, None, not_after=1000.5)[1] == 1000.5
    with pytest.raises(DecodeError) as err:
        fmt.decode(raw, None, None, not_after=1000.0)
    assert err.value.reason == "future_timestamp"
    assert fmt.decode(raw, None, None)[1] == 1000.5  # no limit given: any date
    # a record timestamp in the future is judged the same way when the message has none
    with pytest.raises(DecodeError):
        fmt.decode(b'{"stream":"a","value":1}', None, 5000.0, not_after=1000.0)

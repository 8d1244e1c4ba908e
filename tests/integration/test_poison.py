"""A corpus of poison messages, each between good readings, through the daemon on the real
broker: the daemon stays up, every poison is dead-lettered with its reason (or accepted, as
docs/concepts.md's Dead letters section documents), every good reading gets its verdict, and all
offsets are committed, so no restart replays a crash."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from support import Daemon, consume_all, free_port, scores_config, wait_committed, wait_metric

pytestmark = pytest.mark.kafka

T0 = 1_700_000_000.0
ACCEPTED = "accepted"


def _reading(stream: str, ts: float, value: float = 1.0) -> bytes:
    return json.dumps({"stream": stream, "ts": ts, "value": value}).encode()


# (what, value, headers, expected reason or ACCEPTED); ts 0 stands for "the next good ts"
POISON: list[tuple[str, bytes | None, list[tuple[str, bytes]], str]] = [
    (
        "nested list in an extra field",
        b'{"stream":"p","ts":0,"value":1.5,"x":' + b"[" * 1000 + b"]" * 1000 + b"}",
        [],
        "bad_json",
    ),
    ("10,000 nested objects", b'{"a":' * 10000 + b"1" + b"}" * 10000, [], "bad_json"),
    ("60,000 bare brackets", b"[" * 60000, [], "bad_json"),
    ("a lone surrogate stream id", b'{"stream":"\\ud800","ts":0,"value":1.5}', [], "bad_stream"),
    ("a record near the broker's limit", b"x" * 1_048_400, [], "too_large"),
    (
        "a 2 MB record",
        b'{"stream":"p","value":1,"pad":"' + b"y" * 2_000_000 + b'"}',
        [],
        "too_large",
    ),
    ("a reading from the year 3000", _reading("g0", 32503680000.0), [], "future_timestamp"),
    ("a tombstone", None, [], "not_object"),
    ("an empty message", b"", [], "bad_json"),
    ("binary", b"\xff\xfe\x00\x01", [], "bad_utf8"),
    ("UTF-16", '{"stream":"p","ts":1,"value":1}'.encode("utf-16"), [], "bad_utf8"),
    ("a byte-order mark", b'\xef\xbb\xbf{"stream":"p","ts":1,"value":1}', [], "bad_json"),
    ("an array", b"[1,2,3]", [], "not_object"),
    ("a number", b"42", [], "not_object"),
    ("a string", b'"hello"', [], "not_object"),
    ("no stream", b'{"ts":1,"value":1}', [], "missing_stream"),
    ("a numeric stream", b'{"stream":5,"ts":1,"value":1}', [], "bad_stream"),
    ("an empty stream", b'{"stream":"","ts":1,"value":1}', [], "bad_stream"),
    (
        "a 300-character stream",
        json.dumps({"stream": "s" * 300, "value": 1}).encode(),
        [],
        "bad_stream",
    ),
    ("no value", b'{"stream":"p","ts":1}', [], "missing_value"),
    ("a string value", b'{"stream":"p","ts":1,"value":"1.5"}', [], "bad_value"),
    ("a boolean value", b'{"stream":"p","ts":1,"value":true}', [], "bad_value"),
    ("a null value", b'{"stream":"p","ts":1,"value":null}', [], "bad_value"),
    ("1e400", b'{"stream":"p","ts":1,"value":1e400}', [], "non_finite"),
    ("NaN", b'{"stream":"p","ts":1,"value":NaN}', [], "bad_json"),
    ("-Infinity", b'{"stream":"p","ts":1,"value":-Infinity}', [], "bad_json"),
    ("a 400-digit integer", b'{"stream":"p","ts":1,"value":' + b"9" * 400 + b"}", [], "non_finite"),
    (
        "a 5,000-digit integer",
        b'{"stream":"p","ts":1,"value":' + b"9" * 5000 + b"}",
        [],
        "bad_json",
    ),
    ("a string ts", b'{"stream":"p","ts":"now","value":1}', [], "bad_timestamp"),
    ("a boolean ts", b'{"stream":"p","ts":false,"value":1}', [], "bad_timestamp"),
    ("ts 1e999", b'{"stream":"p","ts":1e999,"value":1}', [], "bad_timestamp"),
    ("trailing bytes", b'{"stream":"p","ts":1,"value":1}x', [], "bad_json"),
    ("two objects", b'{"stream":"p","ts":1,"value":1}{"stream":"p"}', [], "bad_json"),
    (
        "headers, one null, one 100 kB",
        b"{oops",
        [("trace", b"t-1"), ("big", b"h" * 100_000)],
        "bad_json",
    ),
    ("a reading older than its stream's last", _reading("g1", T0), [], "out_of_order"),
    # accepted, as documented
    ("an integer value", b'{"stream":"a1","ts":0,"value":3}', [], ACCEPTED),
    ("extra fields", b'{"stream":"a2","ts":0,"value":1.5,"unit":"ms","tags":[1,{}]}', [], ACCEPTED),
    (
        "a duplicate key (the last wins)",
        b'{"stream":"a3","ts":0,"value":"x","value":2.5}',
        [],
        ACCEPTED,
    ),
    ("no ts (the record's is used)", b'{"stream":"a4","value":1.5}', [], ACCEPTED),
    (
        "a Unicode stream id",
        '{"stream":"h\u00f4te-\U0001f600","ts":0,"value":1.5}'.encode(),
        [],
        ACCEPTED,
    ),
    ("an escaped surrogate pair", b'{"stream":"\\ud83d\\ude00","ts":0,"value":1.5}', [], ACCEPTED),
    ("whitespace around", b'  {"stream":"a5","ts":0,"value":1.5}\n', [], ACCEPTED),
]


def test_poison_messages_are_dead_lettered_and_good_readings_all_get_verdicts(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = {n: f"{n}-{tag}" for n in ("readings", "anomalies", "dead", "scores")}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics(
        # the input allows 5 MB records; the dead-letter topic keeps the broker's 1 MB default
        [NewTopic(topics["readings"], 1, 1, topic_configs={"max.message.bytes": "5242880"})]
        + [NewTopic(topics[n], 1, 1) for n in ("anomalies", "dead", "scores")]
    )
    admin.close()

    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=6_000_000
    )
    expected: dict[int, tuple[str, str]] = {}  # offset -> (what, reason or ACCEPTED)
    good: list[int] = []
    step = 0

    def send(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> int:
        # a key on every record: kafka-python sends a null value (a tombstone) only with one
        future = producer.send(topics["readings"], key=b"k", value=value, headers=headers or [])
        return int(future.get(timeout=30).offset)

    for what, value, headers, outcome in POISON:
        for _ in range(2):  # good readings of two streams before each poison
            step += 1
            for stream in ("g0", "g1"):
                good.append(send(_reading(stream, T0 + 60.0 * step, float(step % 7))))
        if value is not None and b'"ts":0' in value:
            value = value.replace(b'"ts":0', f'"ts":{T0 + 60.0 * step + 1}'.encode())
        expected[send(value, headers)] = (what, outcome)
    for _ in range(3):  # and after the last, so g0 shows it was not locked out
        step += 1
        for stream in ("g0", "g1"):
            good.append(send(_reading(stream, T0 + 60.0 * step)))
    producer.close()
    total = len(good) + len(expected)

    port = free_port()
    config = scores_config(
        tmp_path / "streamwatch.yaml", kafka_bootstrap, topics, f"poison-{tag}", model_dir, port
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        wait_metric(port, "streamwatch_records_consumed_total", total, timeout=120)
        # all of it committed: no replay after any restart
        ends = wait_committed(kafka_bootstrap, f"poison-{tag}", topics["readings"], 1)
        assert list(ends.values()) == [total]
        assert daemon.proc.poll() is None, daemon.output()
    finally:
        code = daemon.terminate()
    output = daemon.output()
    assert code == 0, output
    assert "Traceback" not in output, output

    dead_wanted = {o: r for o, (_, r) in expected.items() if r != ACCEPTED}
    dead = consume_all(kafka_bootstrap, topics["dead"], want=len(dead_wanted), timeout=60)
    got = {int(dict(r.headers)["streamwatch.offset"]): r for r in dead}
    reasons = {o: dict(r.headers)["streamwatch.reason"].decode() for o, r in got.items()}
    assert reasons == dead_wanted, {
        expected[o][0]: (reasons.get(o), r) for o, r in dead_wanted.items() if reasons.get(o) != r
    }
    for offset, record in got.items():
        headers = dict(record.headers)
        size = len(record.value or b"") + sum(len(k) + len(v) for k, v in record.headers)
        assert size <= 524288  # outputs.dead_letter_max_bytes: it fitted the 1 MB topic
        if b"streamwatch.truncated" in {k.encode() for k in headers}:
            what = expected[offset][0]
            original = next(v for w, v, _, _ in POISON if w == what) or b""
            assert headers["streamwatch.original_bytes"] == str(len(original)).encode()
            assert (
                headers["streamwatch.original_sha256"]
                == hashlib.sha256(original).hexdigest().encode()
            )
    with_headers = got[next(o for o, (w, _) in expected.items() if w.startswith("headers"))]
    assert dict(with_headers.headers)["trace"] == b"t-1" and with_headers.value == b"{oops"

    scores = consume_all(kafka_bootstrap, topics["scores"], want=len(good), timeout=60)
    verdicts = {json.loads(r.value)["offset"] for r in scores}
    accepted = {o for o, (_, r) in expected.items() if r == ACCEPTED}
    assert verdicts == set(good) | accepted  # every good reading, nothing else
    for r in scores:  # strict JSON: the first verdicts have null, not NaN, forecasts
        json.loads(r.value, parse_constant=lambda name: pytest.fail(f"{name} in a verdict"))

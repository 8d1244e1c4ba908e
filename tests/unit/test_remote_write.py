"""The remote-write output: the protobuf bytes and snappy blocks it sends, which readings it
picks (streams, every n-th, the cap), and how it behaves towards a receiver that fails,
refuses, or is not there, against a small HTTP server in the test; a real Prometheus takes
them in tests/integration/test_remote_write.py."""

from __future__ import annotations

import json
import os
import random
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support import free_port, memory_daemon, sine_records, wait_for

from streamwatch import promwire, snappy
from streamwatch.config import RemoteWriteConfig, parse
from streamwatch.engine import Verdicts
from streamwatch.errors import ConfigError
from streamwatch.metrics import Metrics
from streamwatch.sinks.remote_write import RemoteWrite

# -- the wire format ---------------------------------------------------------------------------


def test_a_write_request_is_the_protobuf_bytes_worked_out_by_hand() -> None:
    body = promwire.write_request(
        [
            promwire.timeseries(
                promwire.labels({"stream": "a", "__name__": "m"}),
                [promwire.sample(0.5, 1700000000000), promwire.sample(-2.0, 1)],
            )
        ]
    )
    double = struct.Struct("<d").pack
    ms = bytes([0x80, 0xD0, 0x95, 0xFF, 0xBC, 0x31])  # 1700000000000 as a varint, 7 bits a byte
    assert sum((b & 0x7F) << (7 * i) for i, b in enumerate(ms)) == 1700000000000
    label_name = b"\x0a\x08__name__\x12\x01m"  # Label{name=1: "__name__", value=2: "m"}
    label_stream = b"\x0a\x06stream\x12\x01a"
    sample_1 = b"\x09" + double(0.5) + b"\x10" + ms  # Sample{value=1 (64-bit), timestamp=2}
    sample_2 = b"\x09" + double(-2.0) + b"\x10\x01"
    series = (
        b"\x0a" + bytes([len(label_name)]) + label_name  # labels = 1, sorted: __name__ first
        + b"\x0a" + bytes([len(label_stream)]) + label_stream
        + b"\x12" + bytes([len(sample_1)]) + sample_1  # samples = 2
        + b"\x12" + bytes([len(sample_2)]) + sample_2
    )  # fmt: skip
    assert body == b"\x0a" + bytes([len(series)]) + series  # WriteRequest.timeseries = 1
    assert len(series) == 15 + 13 + 18 + 13 and body[:2] == b"\x0a\x3b"
    assert promwire.parse_write_request(body) == [
        ({"__name__": "m", "stream": "a"}, [(0.5, 1700000000000), (-2.0, 1)])
    ]


def test_varints_and_negative_timestamps() -> None:
    assert promwire.varint(0) == b"\x00"
    assert promwire.varint(127) == b"\x7f"
    assert promwire.varint(300) == b"\xac\x02"
    assert promwire.varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1: ten bytes
    body = promwire.timeseries(promwire.labels({"__name__": "x"}), [promwire.sample(1.0, -5)])
    assert promwire.parse_write_request(body) == [({"__name__": "x"}, [(1.0, -5)])]


def test_snappy_writes_the_block_format() -> None:
    # the length preamble (20), a literal of one byte (tag 0: length - 1 = 0), then a copy
    # of 19 bytes from 1 back (tag 2: two-byte offset; (19 - 1) << 2 | 2 = 0x4a)
    assert snappy.compress(b"a" * 20) == b"\x14\x00a\x4a\x01\x00"
    # a copy of 4 to 11 bytes from under 2048 back takes the one-byte-offset form (tag 1)
    assert snappy.compress(b"abcdefgh" * 2) == b"\x10\x1cabcdefgh\x11\x08"
    assert snappy.compress(b"") == b"\x00"
    assert snappy.compress(b"xyz") == b"\x03\x08xyz"
    # literals of 61 and 300 bytes: the length less one in one and in two more bytes
    rnd = random.Random(3)
    noise = bytes(rnd.randrange(256) for _ in range(300))
    assert snappy.compress(noise[:61])[:3] == b"\x3d\xf0\x3c"
    assert snappy.compress(noise)[:5] == b"\xac\x02\xf4\x2b\x01"


def test_snappy_reads_every_element_kind() -> None:
    # literal "ab", then copy-1 (len 4, offset 2), copy-2 (len 3, offset 1), copy-4 (len 2,
    # offset 9): a copy may overlap what it writes
    block = (
        b"\x0b" + b"\x04ab" + bytes([1 | (0 << 2), 2]) + bytes([2 | (2 << 2), 1, 0])
        + bytes([3 | (1 << 2), 9, 0, 0, 0])
    )  # fmt: skip
    assert snappy.decompress(block) == b"ababab" + b"bbb" + b"ab"
    for bad in (
        b"",  # no preamble
        b"\x05\x10abc",  # a literal cut short
        b"\x04\x00a\x05\x05",  # a copy from before the start
        b"\x03\x00a",  # fewer bytes than the preamble says
        b"\x80\x80\x80\x80\x80\x80",  # an endless varint
    ):
        with pytest.raises(snappy.SnappyError):
            snappy.decompress(bad)


def test_snappy_round_trips_and_compresses_repetition() -> None:
    rnd = random.Random(7)
    cases = [b"", b"a", os.urandom(70_000), b"x" * 200_000, bytes(range(256)) * 600]
    cases += [
        bytes(rnd.randrange(1 + k % 4) for _ in range(rnd.randrange(3000))) for k in range(200)
    ]
    cases += [b"q" * n for n in (59, 60, 61, 64, 65, 67, 68, 69, 255, 256, 257, 65535, 65536)]
    for data in cases:
        assert snappy.decompress(snappy.compress(data)) == data, len(data)
    series = b"".join(
        promwire.timeseries(
            promwire.labels({"__name__": "streamwatch_stream_score", "stream": f"host-{i % 40}"}),
            [promwire.sample(0.01 * i, 1_700_000_000_000 + 15_000 * i)],
        )
        for i in range(2000)
    )
    packed = snappy.compress(series)
    assert len(packed) < len(series) / 3
    assert len(snappy.compress(b"x" * 100_000)) < 5_000
    assert len(snappy.compress(os.urandom(10_000))) <= 10_000 + 10_000 // 60 + 10


# -- a receiver to send to ---------------------------------------------------------------------


class Receiver:
    """A remote-write endpoint on loopback that records each request and answers the
    statuses queued in ``answers`` (then 204)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = owner.answers.pop(0) if owner.answers else 204
                self.send_response(status)
                text = b"" if status < 300 else b"out of order sample"
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/write"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def series(self) -> dict[tuple[str, ...], list[tuple[float, int]]]:
        """(name, stream[, field]) -> its samples, over every request received."""
        out: dict[tuple[str, ...], list[tuple[float, int]]] = {}
        for _, body in self.requests:
            for names, samples in promwire.parse_write_request(snappy.decompress(body)):
                field = [names["field"]] if "field" in names else []
                key = (names["__name__"], names["stream"], *field)
                out.setdefault(key, []).extend(samples)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _sink(url: str, **settings: Any) -> tuple[RemoteWrite, CollectorRegistry]:
    registry = CollectorRegistry()
    cfg = RemoteWriteConfig(url=url, **settings)
    cfg.check("outputs.remote_write")
    return RemoteWrite(cfg, ["value"], Metrics(registry), backoff=(0.01, 0.05)), registry


def _verdicts(n: int, prediction: float = 10.0, scale: float = 1.0) -> Verdicts:
    return Verdicts(
        prediction=np.full((n, 1), prediction),
        scale=np.full((n, 1), scale),
        score=np.linspace(0.0, 0.9, n),
        anomaly=np.arange(n) % 3 == 0,
        skipped=np.zeros(n, bool),
    )


def _offer(sink: RemoteWrite, streams: list[str], stamps: list[float], **kw: Any) -> Verdicts:
    n = len(streams)
    verdicts = _verdicts(n, **kw)
    sink.offer(streams, stamps, [(float(i),) for i in range(n)], verdicts, np.ones(n, bool))
    return verdicts


def _dropped(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value(
        "streamwatch_remote_write_dropped_samples_total", {"reason": reason}
    )


# -- what is picked ----------------------------------------------------------------------------


def test_the_streams_configured_every_nth_reading_up_to_the_cap(receiver: Receiver) -> None:
    sink, registry = _sink(
        receiver.url, streams=("a", "pump-*"), every=2, max_streams=2, labels={"job": "sw"}
    )
    names = ["a", "b", "pump-1", "pump-2"]
    for batch in range(2):  # the count goes on from batch to batch
        streams = [s for _ in range(3) for s in names]
        stamps = [1000.0 + 10 * (batch * 3 + i // 4) for i in range(12)]
        _offer(sink, streams, stamps)
    sink.close()
    got = receiver.series()
    assert {k[1] for k in got} == {"a", "pump-1"}  # b not chosen; pump-2 past the cap
    # readings 0, 2 and 4 of each (of six): at 1000, 1020 and 1040 s; and every flagged one
    # (_verdicts flags every third of a batch: a's first of the second batch, pump-1's second)
    sent = {
        s: [t // 1000 for _, t in got[("streamwatch_stream_reading", s, "value")]]
        for s in ("a", "pump-1")
    }
    assert sent == {"a": [1000, 1020, 1030, 1040], "pump-1": [1000, 1010, 1020, 1040]}
    assert [v for v, _ in got[("streamwatch_stream_anomaly", "a")]] == [1.0, 0.0, 1.0, 0.0]
    assert len(got) == 2 * 6  # reading, forecast, lower, upper, score, anomaly
    per_reading = 6
    assert _dropped(registry, "max_streams") == 6 * per_reading  # pump-2's six readings
    assert registry.get_sample_value("streamwatch_remote_write_samples_total") == 8 * per_reading
    assert registry.get_sample_value("streamwatch_remote_write_streams") == 2
    headers, _ = receiver.requests[0]
    assert headers["content-encoding"] == "snappy"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["x-prometheus-remote-write-version"] == "0.1.0"
    assert headers["user-agent"].startswith("streamwatch/")
    body = snappy.decompress(receiver.requests[0][1])
    assert all(n["job"] == "sw" for n, _ in promwire.parse_write_request(body))


def test_values_band_and_flags(receiver: Receiver) -> None:
    sink, _ = _sink(receiver.url, band=0.99)
    n = 4
    verdicts = _verdicts(n, prediction=10.0, scale=2.0)
    verdicts.prediction[0] = np.nan  # a stream's first reading has no forecast yet
    verdicts.scale[0] = np.nan
    sink.offer(
        ["s"] * n,
        [1.0, 2.0, 3.0, 4.0],
        [(5.0,), (6.0,), (7.0,), (8.0,)],
        verdicts,
        np.ones(n, bool),
    )
    sink.close()
    got = receiver.series()
    assert got[("streamwatch_stream_reading", "s", "value")] == [
        (5.0, 1000),
        (6.0, 2000),
        (7.0, 3000),
        (8.0, 4000),
    ]
    assert [t for _, t in got[("streamwatch_stream_forecast", "s", "value")]] == [2000, 3000, 4000]
    lower = got[("streamwatch_stream_forecast_lower", "s", "value")]
    upper = got[("streamwatch_stream_forecast_upper", "s", "value")]
    assert lower[0][0] == pytest.approx(10.0 - 2.5758293 * 2.0)
    assert upper[0][0] == pytest.approx(10.0 + 2.5758293 * 2.0)
    assert [v for v, _ in got[("streamwatch_stream_anomaly", "s")]] == [1.0, 0.0, 0.0, 1.0]
    assert [v for v, _ in got[("streamwatch_stream_score", "s")]] == pytest.approx(
        [0.0, 0.3, 0.6, 0.9]
    )


def test_readings_not_after_the_last_sent_are_dropped(receiver: Receiver) -> None:
    sink, registry = _sink(receiver.url)
    _offer(sink, ["s", "s", "t"], [5.0, 5.0, 1.0])  # the second: same millisecond
    _offer(sink, ["s", "t"], [4.0, 2.0])  # s goes back in time
    scored = np.array([False, True])  # skipped or rebuilding: not offered at all
    sink.offer(["s", "t"], [9.0, 9.0], [(1.0,), (1.0,)], _verdicts(2), scored)
    sink.close()
    got = receiver.series()
    assert [t for _, t in got[("streamwatch_stream_score", "s")]] == [5000]
    assert [t for _, t in got[("streamwatch_stream_score", "t")]] == [1000, 2000, 9000]
    assert _dropped(registry, "out_of_order") == 2 * 6


def test_a_place_left_idle_for_an_hour_goes_to_a_new_stream(receiver: Receiver) -> None:
    now = [0.0]
    registry = CollectorRegistry()
    cfg = RemoteWriteConfig(url=receiver.url, max_streams=1)
    sink = RemoteWrite(cfg, ["value"], Metrics(registry), clock=lambda: now[0])
    _offer(sink, ["a", "b"], [1.0, 1.0])
    assert _dropped(registry, "max_streams") == 6
    now[0] = 3000.0
    _offer(sink, ["b"], [2.0])  # a was seen 3000 s ago: it keeps its place
    now[0] = 3700.0
    _offer(sink, ["b"], [3.0])
    assert _dropped(registry, "max_streams") == 12
    now[0] = 3800.0  # the thread's flush clock is stuck too: close sends what is queued
    sink.close()
    got = receiver.series()
    assert [t for _, t in got[("streamwatch_stream_score", "a")]] == [1000]
    assert [t for _, t in got[("streamwatch_stream_score", "b")]] == [3000]


def test_requests_hold_at_most_max_samples_per_send(receiver: Receiver) -> None:
    sink, registry = _sink(receiver.url, max_samples_per_send=15, flush_seconds=0.05)
    _offer(sink, [f"s{i}" for i in range(10)], [1.0] * 10)
    wait_for(
        "all sent",
        lambda: registry.get_sample_value("streamwatch_remote_write_samples_total") == 60,
        10,
    )
    sink.close()
    sizes = [
        sum(len(s) for _, s in promwire.parse_write_request(snappy.decompress(b)))
        for _, b in receiver.requests
    ]
    assert sum(sizes) == 60 and max(sizes) <= 15 and len(sizes) == 5, sizes


# -- the receiver failing ----------------------------------------------------------------------


def test_5xx_and_429_are_retried_with_backoff(receiver: Receiver) -> None:
    receiver.answers = [503, 429, 500]
    sink, registry = _sink(receiver.url)
    _offer(sink, ["s"], [1.0])
    sink.close()
    assert len(receiver.requests) == 4
    assert registry.get_sample_value("streamwatch_remote_write_failures_total") == 3
    assert registry.get_sample_value("streamwatch_remote_write_samples_total") == 6
    assert receiver.requests[0][1] == receiver.requests[3][1]  # the same request again


def test_a_4xx_is_dropped_at_once(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.answers = [400]
    sink, registry = _sink(receiver.url)
    _offer(sink, ["s"], [1.0])
    sink.close()
    assert len(receiver.requests) == 1
    assert _dropped(registry, "rejected") == 6
    assert registry.get_sample_value("streamwatch_remote_write_samples_total") == 0
    assert "HTTP 400: out of order sample" in caplog.text


def test_failures_past_retry_seconds_are_dropped(receiver: Receiver) -> None:
    receiver.answers = [500] * 1000
    sink, registry = _sink(receiver.url, retry_seconds=0.2)
    _offer(sink, ["s"], [1.0])
    started = time.monotonic()
    sink.close(5.0)
    assert time.monotonic() - started < 4.0
    assert _dropped(registry, "failed") == 6
    assert 2 <= len(receiver.requests) < 40


def test_no_receiver_never_blocks_or_raises() -> None:
    sink, registry = _sink(
        f"http://127.0.0.1:{free_port()}/api/v1/write", retry_seconds=60.0, flush_seconds=0.05
    )
    started = time.monotonic()
    for i in range(50):
        _offer(sink, [f"s{i % 7}"] * 3, [float(i), i + 0.1, i + 0.2])
    assert time.monotonic() - started < 1.0  # queued only
    wait_for(
        "a failure",
        lambda: registry.get_sample_value("streamwatch_remote_write_failures_total"),
        10,
    )
    sink.close(0.5)  # retries cut short: what is left is counted
    assert time.monotonic() - started < 5.0
    dropped = _dropped(registry, "shutdown")
    assert dropped == 50 * 3 * 6
    assert registry.get_sample_value("streamwatch_remote_write_queue_samples") == 0


def test_a_full_queue_drops_what_does_not_fit(receiver: Receiver) -> None:
    sink, registry = _sink(receiver.url, queue_samples=30, flush_seconds=60.0)
    for i in range(4):
        _offer(sink, ["a", "b"], [float(i), float(i)])  # 12 samples each
    assert registry.get_sample_value("streamwatch_remote_write_queue_samples") == 24
    assert _dropped(registry, "queue_full") == 24
    sink.close()
    assert registry.get_sample_value("streamwatch_remote_write_samples_total") == 24


def test_a_bug_in_offer_is_counted_not_raised(receiver: Receiver) -> None:
    sink, registry = _sink(receiver.url)
    bad = _verdicts(1)  # for one reading, offered as two
    sink.offer(["s", "t"], [1.0, 2.0], [(1.0,), (2.0,)], bad, np.ones(2, bool))
    assert _dropped(registry, "error") == 12
    sink.close()


def test_headers_and_the_bearer_token_file(receiver: Receiver, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    sink, _ = _sink(
        receiver.url, headers={"X-Scope-OrgID": "tenant-1"}, bearer_token_file=str(token)
    )
    _offer(sink, ["s"], [1.0])
    sink.close()
    headers, _ = receiver.requests[0]
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-scope-orgid"] == "tenant-1"


# -- config ------------------------------------------------------------------------------------


def _rw(**settings: Any) -> Any:
    return parse(
        {
            "input": {"source": "file"},
            "outputs": {"remote_write": {"url": "http://p:9090/api/v1/write", **settings}},
        }
    ).outputs.remote_write


@pytest.mark.parametrize(
    ("settings", "path", "says"),
    [
        ({"url": "prometheus:9090"}, "outputs.remote_write.url", "http:// or https:// URL"),
        ({"every": 0}, "outputs.remote_write.every", "must be > 0"),
        ({"max_streams": -1}, "outputs.remote_write.max_streams", "must be > 0"),
        ({"band": 1.0}, "outputs.remote_write.band", "between 0 and 1"),
        ({"streams": ["a", ""]}, "outputs.remote_write.streams[1]", "must not be empty"),
        ({"labels": {"stream": "x"}}, "outputs.remote_write.labels.stream", "set by streamwatch"),
        ({"labels": {"__name__": "x"}}, "outputs.remote_write.labels.__name__", "label name"),
        ({"labels": {"job": 3}}, "outputs.remote_write.labels.job", "non-empty string"),
        (
            {"headers": {"Authorization": "Bearer x"}},
            "outputs.remote_write.headers.Authorization",
            "bearer_token_file",
        ),
        (
            {"headers": {"content-type": "x"}},
            "outputs.remote_write.headers.content-type",
            "set by streamwatch",
        ),
        ({"headers": {"X-A": "a\nb"}}, "outputs.remote_write.headers.X-A", "one line"),
        ({"retry_seconds": -1}, "outputs.remote_write.retry_seconds", ">= 0"),
        ({"urls": "x"}, "outputs.remote_write.urls", "unknown key"),
    ],
)
def test_config_errors_name_the_key(settings: dict[str, Any], path: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        _rw(**settings)
    assert err.value.path == path
    assert says in str(err.value)


def test_config_defaults_and_the_token_file_checked_at_start(tmp_path: Path) -> None:
    rw = _rw(streams="pump-1")
    assert rw.streams == ("pump-1",) and rw.every == 1 and rw.max_streams == 1000
    with pytest.raises(ConfigError) as err:
        parse(
            {
                "kafka": {"bootstrap_servers": "k:9092", "input_topics": ["in"]},
                "outputs": {"remote_write": {}},
            }
        )
    assert err.value.path == "outputs.remote_write.url"
    cfg = parse(
        {
            "input": {"source": "file"},
            "outputs": {
                "remote_write": {"url": "http://p/w", "bearer_token_file": str(tmp_path / "no")}
            },
        }
    )
    with pytest.raises(ConfigError) as err:
        cfg.outputs.check_paths()
    assert err.value.path == "outputs.remote_write.bearer_token_file"
    assert parse({"input": {"source": "file"}}).outputs.remote_write is None


# -- in the run loop ---------------------------------------------------------------------------


def test_the_daemon_sends_every_verdict_and_its_flags_match_the_anomalies(
    model_dir: Path, receiver: Receiver
) -> None:
    records = sine_records(n_streams=3, length=320)
    daemon, _, sink, registry = memory_daemon(
        model_dir,
        records,
        outputs={"remote_write": {"url": receiver.url, "labels": {"job": "sw"}}},
    )
    daemon.run(max_polls=20)  # all the records; it then closes the remote write, which sends
    got = receiver.series()
    assert {k[1] for k in got} == {"s0", "s1", "s2"}
    for s in ("s0", "s1", "s2"):
        assert len(got[("streamwatch_stream_score", s)]) == 320
        assert len(got[("streamwatch_stream_forecast", s, "value")]) == 319  # none at the first
    flagged = {
        (s, t) for (name, s, *_), samples in got.items() if name == "streamwatch_stream_anomaly"
        for v, t in samples if v == 1.0
    }  # fmt: skip
    events = [json.loads(m.value) for m in sink.topic("anomalies")]
    assert flagged == {(e["stream"], round(e["ts"] * 1000)) for e in events}
    assert ("s0", round((1.7e9 + 300 * 300.0) * 1000)) in flagged  # the spike
    assert registry.get_sample_value("streamwatch_remote_write_samples_total") == sum(
        len(v) for v in got.values()
    )
    assert daemon.remote_write is not None


def test_without_remote_write_the_daemon_has_none(model_dir: Path) -> None:
    daemon, _, _, registry = memory_daemon(model_dir, [])
    assert daemon.remote_write is None
    assert registry.get_sample_value("streamwatch_remote_write_samples_total") == 0
    assert _dropped(registry, "queue_full") == 0


def test_a_ca_file_that_is_no_certificate_is_named_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    rw = _rw(url="https://p:9090/api/v1/write", ca_file=str(bad))
    with pytest.raises(ConfigError) as err:
        rw.check_paths("outputs.remote_write")
    assert err.value.path == "outputs.remote_write.ca_file"

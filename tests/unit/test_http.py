from __future__ import annotations

import json
import logging
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from streamwatch.http import Health, serve


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def server() -> Iterator[tuple[str, Health, FakeClock]]:
    registry = CollectorRegistry()
    Counter("demo_things", "Things.", registry=registry).inc(3)
    clock = FakeClock()
    health = Health(stale_after=30.0, clock=clock)
    srv = serve("127.0.0.1", 0, registry, health)
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", health, clock
    finally:
        srv.shutdown()
        srv.server_close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()


def test_metrics(server: tuple[str, Health, FakeClock]) -> None:
    code, body = _get(server[0] + "/metrics")
    assert code == 200 and "demo_things_total 3.0" in body


def test_liveness_follows_the_loop(server: tuple[str, Health, FakeClock]) -> None:
    url, health, clock = server
    assert _get(url + "/healthz")[0] == 200  # starting
    health.beat()
    clock.t += 29
    assert _get(url + "/healthz")[0] == 200
    clock.t += 2
    code, body = _get(url + "/healthz")
    assert code == 503 and "loop ran 31.0s ago" in json.loads(body)["status"]


def test_readiness_names_what_is_missing(server: tuple[str, Health, FakeClock]) -> None:
    url, health, _ = server
    health.model_loaded = True
    code, body = _get(url + "/readyz")
    assert code == 503 and json.loads(body)["status"] == "waiting for partitions, state"
    health.partitions_assigned = health.state_ready = True
    assert _get(url + "/readyz") == (200, json.dumps({"ok": True, "status": "ready"}))
    assert _get(url + "/nope")[0] == 404


def test_readiness_names_the_broker(server: tuple[str, Health, FakeClock]) -> None:
    url, health, _ = server
    health.model_loaded = health.partitions_assigned = health.state_ready = True
    health.broker_reachable = False
    code, body = _get(url + "/readyz")
    assert code == 503 and json.loads(body)["status"] == "waiting for broker"
    health.state_ready = False
    assert json.loads(_get(url + "/readyz")[1])["status"] == "waiting for state, broker"
    health.state_ready = health.broker_reachable = True
    assert _get(url + "/readyz")[0] == 200


def test_head_sends_the_headers_of_get(server: tuple[str, Health, FakeClock]) -> None:
    url = server[0] + "/metrics?name[]=ignored"
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as r:
        assert r.status == 200 and r.read() == b""
        length = int(r.headers["Content-Length"])
    assert length == len(_get(url)[1].encode())


def test_other_methods_get_405(server: tuple[str, Health, FakeClock]) -> None:
    request = urllib.request.Request(server[0] + "/metrics", data=b"x" * 10_000, method="POST")
    with (
        pytest.raises(urllib.error.HTTPError) as caught,
        urllib.request.urlopen(request, timeout=5),
    ):
        pass
    with caught.value as e:
        assert e.code == 405 and e.headers["Allow"] == "GET, HEAD"


def _exchange(url: str, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes: the whole response."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_and_oversized_heads(server: tuple[str, Health, FakeClock]) -> None:
    url = server[0]
    assert _exchange(url, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _exchange(url, b"GET /healthz HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # No end of head within 8 KiB: 431, and the connection closes (the read above ends).
    big = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000
    assert _exchange(url, big).startswith(b"HTTP/1.1 431 ")
    ok = _exchange(url, b"GET /healthz HTTP/1.0\n\n")  # bare newlines, as from `nc`
    assert ok.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in ok


def test_a_failing_collector_is_logged_once_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()

    class Broken:
        def collect(self) -> Iterator[object]:
            raise RuntimeError("collector broke")

    registry.register(Broken())  # type: ignore[arg-type]
    srv = serve("127.0.0.1", 0, registry, Health())
    try:
        with caplog.at_level(logging.DEBUG, logger="streamwatch"):
            assert _get(f"http://127.0.0.1:{srv.server_address[1]}/metrics")[0] == 500
            assert _get(f"http://127.0.0.1:{srv.server_address[1]}/healthz")[0] == 200
    finally:
        srv.shutdown()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].exc_info and "collector broke" in caplog.text


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_shutdown_closes_everything_and_is_idempotent() -> None:
    before = _fds()
    srv = serve("127.0.0.1", 0, CollectorRegistry(), Health())
    port = srv.server_address[1]
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
    try:
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        srv.shutdown()
        srv.shutdown()
        srv.server_close()
        assert not [t for t in threading.enumerate() if t.name == "streamwatch-http"]
        for s in held:
            assert s.recv(1) == b""  # closed by the server, not left hanging
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        for s in held:
            s.close()
    assert _fds() <= before


def test_a_taken_port_raises_in_the_caller() -> None:
    srv = serve("127.0.0.1", 0, CollectorRegistry(), Health())
    try:
        with pytest.raises(OSError):
            serve("127.0.0.1", srv.server_address[1], CollectorRegistry(), Health())
    finally:
        srv.shutdown()

from __future__ import annotations

import json
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

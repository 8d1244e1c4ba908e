"""outputs.remote_write against a real Prometheus (Debian's package, installed by `make test`)
started with its remote-write receiver on loopback: the daemon, run as a process on a file of
readings, sends each stream's reading, forecast, band, score and flags; PromQL reads them back
as the daemon's own outputs say; and every expression of the per-stream dashboard
(deploy/grafana/streamwatch-stream.json) runs there and returns data."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support import free_port, wait_for

from streamwatch.codec import MessageFormat
from streamwatch.config import RemoteWriteConfig
from streamwatch.engine import Verdicts
from streamwatch.metrics import Metrics
from streamwatch.sinks.remote_write import RemoteWrite

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/streamwatch-stream.json"
EXAMPLE = ROOT / "models/example"
STREAMS, READINGS, STEP = ("pump-1", "pump-2", "fan-1"), 200, 15.0
SPIKE = 170  # pump-1's reading that jumps


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: `make test` installs Debian's prometheus package"
    return path


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


class Prometheus:
    """A Prometheus server on a free loopback port, its storage in a temporary directory,
    taking remote write and scraping nothing."""

    def __init__(self, tmp: Path) -> None:
        port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text("global: {scrape_interval: 15s}\n")
        self.log = tmp / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    _tool("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / 'db'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--web.enable-remote-write-receiver",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{port}"
        self.write_url = f"{self.base}/api/v1/write"

        def ready() -> bool:
            try:
                return _get(f"{self.base}/-/ready").startswith(b"Prometheus Server is Ready")
            except OSError:
                return self.proc.poll() is not None  # exited: said below

        wait_for("Prometheus ready", ready, 60, every=0.2)
        assert self.proc.poll() is None, self.log.read_text()

    def query(self, expr: str, at: float | None = None) -> dict:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        return json.loads(_get(f"{self.base}/api/v1/query?" + urllib.parse.urlencode(params)))

    def vector(self, expr: str) -> dict[str, float]:
        """stream (or the whole label set) -> value, for an instant query now."""
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return {
            r["metric"].get("stream", json.dumps(r["metric"])): float(r["value"][1])
            for r in answer["data"]["result"]
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path_factory.mktemp("prometheus"))
    try:
        yield server
    finally:
        server.stop()


def _readings(end: float) -> tuple[bytes, dict[str, list[tuple[float, float]]]]:
    """JSON lines of READINGS readings of each stream, STEP seconds apart and the last at
    ``end``, in time order; and stream -> [(ts, value)]."""
    fmt = MessageFormat()
    lines, sent = [], {s: [] for s in STREAMS}
    for i in range(READINGS):
        ts = end - (READINGS - 1 - i) * STEP
        for k, stream in enumerate(STREAMS):
            x = 50.0 * (k + 1) + 10.0 * math.sin(2 * math.pi * i / 60 + k) + 0.1 * math.cos(1.7 * i)
            if stream == "pump-1" and i == SPIKE:
                x += 500.0
            x = round(x, 6)
            lines.append(fmt.encode(stream, ts, x) + b"\n")
            sent[stream].append((ts, x))
    return b"".join(lines), sent


@pytest.fixture(scope="module")
def daemon_run(
    prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """The daemon on a file of readings ending now, sending to ``prometheus``: it stops by
    itself at the end of the file, sending what is queued first."""
    tmp = tmp_path_factory.mktemp("daemon")
    end = math.floor(time.time())
    data, sent = _readings(end)
    (tmp / "readings.jsonl").write_bytes(data)
    cfg = tmp / "c.yaml"
    cfg.write_text(
        f"""
input: {{source: file, path: "{tmp / "readings.jsonl"}", batch_size: 250}}
model: {{path: "{EXAMPLE}"}}
scoring: {{warmup: 50}}
outputs:
  path: "{tmp / "anomalies.jsonl"}"
  dead_letter_path: "{tmp / "dead.jsonl"}"
  scores_topic: scores
  remote_write:
    url: "{prometheus.write_url}"
    streams: ["pump-*", fan-1]
    labels: {{job: streamwatch-test}}
    flush_seconds: 0.2
    max_samples_per_send: 500
metrics: {{host: 127.0.0.1, port: 0}}
"""
    )
    log = tmp / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "streamwatch", "run", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            cwd=ROOT,
        )
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "remote write:" not in text, text  # no failure, nothing left unsent
    # every verdict (scores_topic), the anomalies a second time (anomalies_topic): one file
    lines = (tmp / "anomalies.jsonl").read_text().splitlines()
    verdicts = {(v["stream"], v["ts"]): v for v in map(json.loads, lines)}
    assert len(lines) == len(verdicts) + sum(v["anomaly"] for v in verdicts.values())
    return {"sent": sent, "verdicts": list(verdicts.values()), "end": end}


def test_the_series_arrive_and_promql_reads_them_back(
    prometheus: Prometheus, daemon_run: dict
) -> None:
    sent, verdicts, end = daemon_run["sent"], daemon_run["verdicts"], daemon_run["end"]
    assert len(verdicts) == len(STREAMS) * READINGS
    # the last reading of each stream, at the reading's own timestamp
    last = prometheus.vector('streamwatch_stream_reading{job="streamwatch-test", field="value"}')
    assert last == {s: sent[s][-1][1] for s in STREAMS}
    window = f"[{int(READINGS * STEP) + 600}s]"  # the whole run, and no more: none before
    counts = prometheus.vector(f"count_over_time(streamwatch_stream_score{window})")
    assert counts == dict.fromkeys(STREAMS, float(READINGS))
    forecasts = prometheus.vector(f"count_over_time(streamwatch_stream_forecast{window})")
    assert forecasts == dict.fromkeys(STREAMS, float(READINGS - 1))  # none for the first
    # the flags are the verdicts': one sample per flagged reading, at its timestamp
    flagged: dict[str, float] = {}
    for v in verdicts:
        flagged[v["stream"]] = flagged.get(v["stream"], 0.0) + v["anomaly"]
    assert prometheus.vector(f"sum_over_time(streamwatch_stream_anomaly{window})") == flagged
    spike_ts = sent["pump-1"][SPIKE][0]
    verdict = next(v for v in verdicts if v["stream"] == "pump-1" and v["ts"] == spike_ts)
    assert verdict["anomaly"], verdict
    at = prometheus.query('streamwatch_stream_score{stream="pump-1"}', at=spike_ts)
    assert float(at["data"]["result"][0]["value"][1]) == pytest.approx(verdict["score"])
    band = prometheus.query(
        'streamwatch_stream_forecast_upper{stream="pump-1"} - '
        'streamwatch_stream_forecast_lower{stream="pump-1"}',
        at=spike_ts,
    )
    width = float(band["data"]["result"][0]["value"][1])
    assert width == pytest.approx(2 * 2.5758293 * verdict["scale"], rel=1e-6)  # band 0.99
    labels = json.loads(
        _get(
            f"{prometheus.base}/api/v1/label/stream/values?"
            + urllib.parse.urlencode({"match[]": "streamwatch_stream_score"})
        )
    )
    assert sorted(labels["data"]) == sorted(STREAMS)  # what the dashboard's $stream lists
    assert end - spike_ts == (READINGS - 1 - SPIKE) * STEP


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    return [
        e.replace("$stream", "pump-1").replace("$field", "value").replace("$__range", "1h")
        for e in exprs
    ]


def test_every_dashboard_expression_runs_and_returns_data(
    prometheus: Prometheus, daemon_run: dict
) -> None:
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    field_query = next(v["query"] for v in variables if v["name"] == "field")
    match = field_query.removeprefix("label_values(").rsplit(",", 1)[0].replace("$stream", "pump-1")
    fields = json.loads(
        _get(
            f"{prometheus.base}/api/v1/label/field/values?"
            + urllib.parse.urlencode({"match[]": match})
        )
    )
    assert fields["data"] == ["value"]
    # as Grafana asks: over the time range shown (here the run's, up to now), a step apart
    start, end = daemon_run["sent"]["pump-1"][0][0], time.time()
    for expr in _dashboard_exprs():
        params = {"query": expr, "start": start, "end": f"{end:.3f}", "step": STEP}
        url = f"{prometheus.base}/api/v1/query_range?" + urllib.parse.urlencode(params)
        answer = json.loads(_get(url))
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["result"], f"no data: {expr}"
        if "== 1" in expr:  # the flagged readings drawn on the reading: the spike among them
            points = answer["data"]["result"][0]["values"]
            spike_ts, spike_value = daemon_run["sent"]["pump-1"][SPIKE]
            assert [spike_ts, str(spike_value)] in [[t, v] for t, v in points], points


def test_what_prometheus_refuses_is_dropped_and_counted(
    prometheus: Prometheus, daemon_run: dict
) -> None:
    """Prometheus answers 400 for a sample more than an hour older than its newest (and the
    whole request goes with it): dropped at once, counted, and the next request goes on."""

    def send(stream: str, ts: float) -> CollectorRegistry:
        registry = CollectorRegistry()
        cfg = RemoteWriteConfig(url=prometheus.write_url)
        sink = RemoteWrite(cfg, ["value"], Metrics(registry), backoff=(0.01, 0.05))
        verdicts = Verdicts(
            np.array([[1.0]]),
            np.array([[0.5]]),
            np.array([0.2]),
            np.array([False]),
            np.zeros(1, bool),
        )
        sink.offer([stream], [ts], [(1.5,)], verdicts, np.ones(1, bool))
        sink.close()
        return registry

    late = send("late", daemon_run["end"] - 7200.0)
    dropped = {"reason": "rejected"}
    assert late.get_sample_value("streamwatch_remote_write_dropped_samples_total", dropped) == 6
    assert late.get_sample_value("streamwatch_remote_write_failures_total") == 1
    fresh = send("fresh", time.time())
    assert fresh.get_sample_value("streamwatch_remote_write_samples_total") == 6
    assert prometheus.vector('streamwatch_stream_reading{stream=~"late|fresh"}') == {"fresh": 1.5}

"""The alert rules and the Grafana dashboard against a real Prometheus (Debian's package,
installed by `make test`): the rules load and pass their unit tests, the daemon's /metrics
passes promtool's lint, a Prometheus server scrapes a running daemon, and every expression of
the rules and the dashboard runs there and names only metrics the daemon exports; every
dashboard expression returns data, unless it names a metric the daemon exports no sample of
here (a file source has no consumer lag; a machine without a cgroup limit, no memory limit)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streamwatch.codec import MessageFormat

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"
DASHBOARD = ROOT / "deploy/grafana/streamwatch.json"
EXAMPLE = ROOT / "models/example"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: `make test` installs Debian's prometheus package"
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def _rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for g in groups for rule in g["rules"]]


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"].replace("$instance", ".*") for p in panels for t in p["targets"]]


def test_rules_load_and_pass_their_unit_tests() -> None:
    promtool = _tool("promtool")
    for args in (["check", "rules", str(RULES)], ["test", "rules", "alerts_test.yml"]):
        r = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent
        )
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def daemon_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A daemon (file source on a pipe that stays open) serving /metrics."""
    tmp = tmp_path_factory.mktemp("prom")
    port = _free_port()
    cfg = tmp / "c.yaml"
    cfg.write_text(
        f'input: {{source: file}}\nmodel: {{path: "{EXAMPLE}"}}\n'
        f"metrics: {{host: 127.0.0.1, port: {port}}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamwatch", "run", "--config", str(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    fmt = MessageFormat()
    lines = b"".join(
        fmt.encode(f"s{i % 5}", 1.7e9 + 60 * i, float(i % 7)) + b"\n" for i in range(500)
    )
    proc.stdin.write(lines + b"{bad\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if b"streamwatch_records_consumed_total 501.0" in _get(
                f"http://127.0.0.1:{port}/metrics"
            ):
                break
        except OSError:
            pass
        time.sleep(0.2)
    try:
        yield port
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_metrics_pass_promtool_lint(daemon_metrics: int) -> None:
    text = _get(f"http://127.0.0.1:{daemon_metrics}/metrics")
    r = subprocess.run(
        [_tool("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


def test_rules_and_dashboard_run_on_prometheus_scraping_the_daemon(
    daemon_metrics: int, tmp_path: Path
) -> None:
    text = _get(f"http://127.0.0.1:{daemon_metrics}/metrics").decode()
    families = set(re.findall(r"^# TYPE ((?:streamwatch|process)_\w+) ", text, re.M))
    assert {"process_start_time_seconds", "process_resident_memory_bytes"} <= families
    sampled = set(
        re.findall(r"^((?:streamwatch|process)_\w+?)(?:_bucket|_count|_sum)?[{ ]", text, re.M)
    )
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    shutil.copy(RULES, tmp_path / "alerts.yml")
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [alerts.yml]\n"
        "scrape_configs:\n  - job_name: streamwatch\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{daemon_metrics}']\n"
    )
    proc = subprocess.Popen(
        [
            _tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'db'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> dict:
        return json.loads(_get(f"{api}/query?" + urllib.parse.urlencode({"query": expr})))

    try:
        deadline, value = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                result = query("streamwatch_records_consumed_total")["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert value == 501.0  # scraped from the running daemon
        while time.monotonic() < deadline:  # rate() needs two samples in its window
            if query("count_over_time(up[5m]) >= 3")["data"]["result"]:
                break
            time.sleep(0.5)
        dead = query('streamwatch_dead_letters_total{reason="bad_json"}')["data"]["result"]
        assert float(dead[0]["value"][1]) == 1.0
        dashboard = _dashboard_exprs()
        for expr in _rule_exprs() + dashboard:
            answer = query(expr)
            assert answer["status"] == "success", (expr, answer)
            names = re.findall(r"\b((?:streamwatch|process)_\w+)", expr)
            for name in names:
                family = re.sub(r"_(bucket|count|sum)$", "", name)
                assert name in families or family in families, (name, expr)
            if expr in dashboard and all(
                re.sub(r"_(bucket|count|sum)$", "", n) in sampled for n in names
            ):
                assert answer["data"]["result"], f"no data: {expr}"
        rules = json.loads(_get(f"{api}/rules"))["data"]["groups"][0]["rules"]
        assert {r["name"] for r in rules} >= {"StreamwatchDown", "StreamwatchStalled"}
        assert all(r["health"] == "ok" for r in rules), rules
    finally:
        proc.terminate()
        proc.wait(timeout=30)

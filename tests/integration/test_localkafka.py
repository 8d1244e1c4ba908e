"""The user-facing broker script: start, status, stop on a real Kafka."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy/kafka/localkafka.py"

pytestmark = pytest.mark.kafka


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180
    )


def test_start_status_stop(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "broker")
    overrides = ["--override", "log.retention.hours=2", "--override", "message.max.bytes=2000000"]
    started = _run("start", "--dir", run_dir, *overrides)
    assert started.returncode == 0, started.stderr
    props = (tmp_path / "broker/server.properties").read_text().splitlines()
    assert "log.retention.hours=2" in props and "log.retention.hours=24" not in props  # in place
    assert props[-1] == "message.max.bytes=2000000"  # a key not there by default: appended
    bootstrap = started.stdout.strip()
    assert bootstrap.startswith("127.0.0.1:")
    try:
        again = _run("start", "--dir", run_dir)  # idempotent: reports the running broker
        assert again.stdout.strip() == bootstrap
        status = _run("status", "--dir", run_dir)
        assert f"bootstrap={bootstrap} (ready)" in status.stdout
    finally:
        stopped = _run("stop", "--dir", run_dir)
    assert stopped.returncode == 0
    assert "stopped" in stopped.stderr
    assert _run("status", "--dir", run_dir).stdout.strip() == "stopped"


def test_override_needs_key_and_value() -> None:
    refused = _run("start", "--override", "auto.create.topics.enable")
    assert refused.returncode == 2
    assert "'auto.create.topics.enable': expected KEY=VALUE" in refused.stderr


def test_session_broker_answers(kafka_bootstrap: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert admin.describe_cluster()["brokers"]
    finally:
        admin.close()

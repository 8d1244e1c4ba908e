"""The user-facing broker script: start, status, stop on a real Kafka, and bouncing a broker
(stop or kill, then start on the same data, ports and TLS material)."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

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


def _localkafka() -> ModuleType:  # a script, not part of the package
    spec = importlib.util.spec_from_file_location("localkafka_bounce", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOPIC, GROUP, RECORDS, COMMITTED = "bounce", "bounce-group", 20, 7
SCRAM = {
    "sasl_mechanism": "SCRAM-SHA-256",
    "sasl_plain_username": "streamwatch",
    "sasl_plain_password": "streamwatch-secret",
}


def _addresses(broker: Any) -> dict[str, str]:  # a localkafka.LocalKafka
    files = [broker.bootstrap_file, *broker.listener_files.values()]
    return {f.name: f.read_text().strip() for f in files}


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@contextlib.contextmanager
def _squatter(port: int) -> Iterator[None]:
    """Another process's listener on ``port`` (a socket of ours stands in for it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1)
        yield


def _fill(bootstrap: str) -> None:
    """A topic with RECORDS records, and GROUP's offset COMMITTED committed on it."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.structs import OffsetAndMetadata

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i in range(RECORDS):
            producer.send(TOPIC, f"record-{i}".encode())
        producer.flush(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        consumer.commit({TopicPartition(TOPIC, 0): OffsetAndMetadata(COMMITTED, "", -1)})
    finally:
        consumer.close()


def _kept(bootstrap: str, deadline_s: float = 30.0) -> tuple[list[bytes], int | None]:
    """The topic's records and GROUP's committed offset, waited for until both are in (the
    group coordinator loads its offsets after a restart) or the deadline passes."""
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(TOPIC, 0)
    deadline = time.monotonic() + deadline_s
    values: list[bytes] = []
    committed = None
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    group = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        reader.assign([tp])
        reader.seek_to_beginning(tp)
        while time.monotonic() < deadline and (len(values) < RECORDS or committed is None):
            for records in reader.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
            if committed is None:
                committed = group.committed(tp, timeout_ms=2000)
    finally:
        reader.close()
        group.close()
    return values, committed


def _topics(bootstrap: str, **security: str) -> set[str]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **security)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_bounce_keeps_ports_data_and_tls(tmp_path: Path) -> None:
    """stop, start, kill, start: the same broker each time; then start --fresh wipes it."""
    localkafka = _localkafka()
    run_dir = tmp_path / "broker"
    broker = localkafka.LocalKafka(run_dir)
    expected = ([f"record-{i}".encode() for i in range(RECORDS)], COMMITTED)
    try:
        bootstrap = broker.start()
        addresses = _addresses(broker)
        ca = broker.ca_file.read_bytes()
        _fill(bootstrap)

        assert broker.stop()
        assert _closed(_port(bootstrap))
        assert not broker.bootstrap_file.exists() and broker.pid() is None
        assert (run_dir / "data/meta.properties").exists()  # stop keeps the data

        sasl_port = _port(addresses["bootstrap-sasl"])
        with _squatter(sasl_port), pytest.raises(RuntimeError) as taken:
            broker.start()
        assert f"port {sasl_port} (SASL_PLAINTEXT listener" in str(taken.value)
        assert broker.pid() is None  # refused before a JVM started

        assert broker.start(overrides={"log.retention.hours": "2"}) == bootstrap
        assert _addresses(broker) == addresses  # every listener where it was
        assert broker.ca_file.read_bytes() == ca  # the same TLS material
        props = broker.props_file.read_text().splitlines()
        assert "log.retention.hours=2" in props and "log.retention.hours=24" not in props
        assert _kept(bootstrap) == expected
        # clients that trusted ca.pem still do; the SCRAM user is still there
        tls = {"security_protocol": "SSL", "ssl_cafile": str(broker.ca_file)}
        assert TOPIC in _topics(addresses["bootstrap-ssl"], **tls)
        sasl = {"security_protocol": "SASL_PLAINTEXT", **SCRAM}
        assert TOPIC in _topics(addresses["bootstrap-sasl"], **sasl)

        assert broker.kill()  # no controlled shutdown: the restart recovers the log
        assert _closed(_port(bootstrap))
        assert broker.start() == bootstrap
        assert _addresses(broker) == addresses
        assert _kept(bootstrap) == expected

        with pytest.raises(RuntimeError, match="stop it before a fresh start"):
            broker.start(fresh=True)
        broker.stop()
        fresh = _run("start", "--fresh", "--dir", str(run_dir))
        assert fresh.returncode == 0, fresh.stderr
        assert TOPIC not in _topics(fresh.stdout.strip())
        assert broker.ca_file.read_bytes() != ca
    finally:
        broker.stop()

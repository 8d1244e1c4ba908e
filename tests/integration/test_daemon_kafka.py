"""End to end on the real broker: readings with spikes in, anomalies and dead letters out,
metrics served, SIGTERM drains, and a restart resumes from the committed offsets."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    NewTopic,
    ResourcePattern,
    ResourceType,
)
from kafka.structs import TopicPartition
from support import Daemon as _Daemon
from support import (
    consume_all,
    free_port,
    group_offsets,
    metric,
    produce,
    wait_committed,
    wait_for,
    wait_metric,
    wait_ready,
)

from streamwatch.codec import MessageFormat

_free_port, _produce, _consume_all = free_port, produce, consume_all
_metric, _wait_metric, _wait_ready = metric, wait_metric, wait_ready

pytestmark = pytest.mark.kafka

N_STREAMS, LENGTH, SPIKE_AT = 12, 450, 380
SPIKED = ("s00", "s03", "s06", "s09")
T0 = 1_700_006_400.0


SPIKES = {(name, T0 + 300.0 * SPIKE_AT) for name in SPIKED}


def _flagged(records: list) -> set[tuple[str, float]]:
    return {(e["stream"], e["ts"]) for e in (json.loads(r.value) for r in records)}


def _spike_events(bootstrap: str, topic: str) -> list:
    """The anomaly events, read until every injected spike is among them (or 30 s): not
    merely as many events as spikes, since the reading after a spike may be flagged too and
    partitions interleave differently from run to run."""
    return _consume_all(bootstrap, topic, 0, timeout=30, until=lambda got: _flagged(got) >= SPIKES)


def _readings(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    fmt = MessageFormat()
    out = []
    for i in range(start, stop):
        for s in range(N_STREAMS):
            level = 10.0 ** (s % 4)  # four orders of magnitude, one model
            x = level * (5.0 + np.sin(2 * np.pi * i / 288 + s) + 0.01 * np.cos(i * 1.3 + s))
            name = f"s{s:02d}"
            if i == SPIKE_AT and name in SPIKED:
                x += level * 3.0
            out.append((name.encode(), fmt.encode(name, T0 + 300.0 * i, float(x))))
    return out


BAD = [
    (b"bad1", b"{not json"),
    (b"bad2", b'{"stream":"s00","ts":1,"value":NaN}'),
    (b"bad3", b"\xff\xfe"),
    (b"bad4", b'{"stream":"s00","ts":1,"value":"12"}'),
]


@pytest.fixture
def topics(kafka_bootstrap: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    names = {"input": f"readings-{tag}", "anomalies": f"anomalies-{tag}", "dead": f"dead-{tag}"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics(
        [
            NewTopic(names["input"], 3, 1),
            NewTopic(names["anomalies"], 1, 1),
            NewTopic(names["dead"], 1, 1),
        ]
    )
    admin.close()
    names["group"] = f"streamwatch-{tag}"
    return names


def _basic_config(
    tmp_path: Path,
    bootstrap: str,
    model_dir: Path,
    topics: dict[str, str],
    port: int,
    extra: str = "",
) -> Path:
    """The config of the plain daemon tests (warm-up 100), plus ``extra`` YAML sections."""
    config = tmp_path / "streamwatch.yaml"
    config.write_text(
        f"""
kafka:
  bootstrap_servers: "{bootstrap}"
  input_topics: [{topics["input"]}]
  group_id: {topics["group"]}
  poll_timeout_ms: 200
model:
  path: "{model_dir}"
scoring:
  threshold: 0.5
  warmup: 100
{extra}outputs:
  anomalies_topic: {topics["anomalies"]}
  dead_letter_topic: {topics["dead"]}
metrics:
  host: 127.0.0.1
  port: {port}
"""
    )
    return config


def test_readings_in_anomalies_out_and_restart(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    config = _basic_config(tmp_path, kafka_bootstrap, model_dir, topics, port)
    first = _readings(0, LENGTH)
    _produce(kafka_bootstrap, topics["input"], first + BAD)
    total = len(first) + len(BAD)

    daemon = _Daemon(config, tmp_path / "daemon.log")
    try:
        _wait_metric(port, "streamwatch_records_consumed_total", total, timeout=90)
        anomalies = _spike_events(kafka_bootstrap, topics["anomalies"])
        assert _metric(port, "streamwatch_anomalies_total") >= len(SPIKED)
        assert _metric(port, "streamwatch_dead_letters_total", 'reason="bad_json"') == 2
        assert _metric(port, "streamwatch_dead_letters_total", 'reason="bad_utf8"') == 1
        assert _metric(port, "streamwatch_dead_letters_total", 'reason="bad_value"') == 1
        assert _metric(port, "streamwatch_active_streams") == N_STREAMS
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                assert r.status == 200 and json.loads(r.read())["ok"] is True
        # while it runs (idle now), every processed offset gets committed, not only at exit
        ends = wait_committed(kafka_bootstrap, topics["group"], topics["input"], 3)
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.output()
    assert "SIGTERM: draining" in daemon.output()

    events = [json.loads(r.value) for r in anomalies]
    flagged = {(e["stream"], e["ts"]) for e in events}
    for name in SPIKED:
        assert (name, T0 + 300.0 * SPIKE_AT) in flagged, (name, sorted(flagged))
    # few flags beyond the injected spikes (the readings after a spike may be flagged too)
    readings_scored = N_STREAMS * (LENGTH - 100)
    assert len(events) - len(SPIKED) <= 0.01 * readings_scored
    spike = next(e for e in events if e["stream"] == SPIKED[0] and e["ts"] == T0 + 300 * SPIKE_AT)
    assert spike["topic"] == topics["input"] and spike["score"] >= 0.5
    assert {r.key for r in anomalies} <= {n.encode() for n in SPIKED} | {
        f"s{s:02d}".encode() for s in range(N_STREAMS)
    }

    dead = _consume_all(kafka_bootstrap, topics["dead"], want=len(BAD), timeout=30)
    assert sorted(r.key for r in dead) == [k for k, _ in BAD]
    reasons = {r.key: dict(r.headers)["streamwatch.reason"] for r in dead}
    assert reasons == {
        b"bad1": b"bad_json",
        b"bad2": b"bad_json",
        b"bad3": b"bad_utf8",
        b"bad4": b"bad_value",
    }
    assert all(r.value == dict(BAD)[r.key] for r in dead)  # original bytes kept

    # Everything consumed is committed ...
    assert group_offsets(kafka_bootstrap, topics["group"], topics["input"], 3) == ends

    # ... so a restart consumes only what arrived since, and nothing is lost: once its group
    # has committed up to the new ends, it has consumed exactly the new records (one that
    # started from the beginning, or lost the committed offsets, would count more).
    more = _readings(LENGTH, LENGTH + 20)
    _produce(kafka_bootstrap, topics["input"], more)
    daemon = _Daemon(config, tmp_path / "daemon2.log")
    try:
        _wait_metric(port, "streamwatch_records_consumed_total", len(more), timeout=90)
        wait_committed(kafka_bootstrap, topics["group"], topics["input"], 3)
        assert _metric(port, "streamwatch_records_consumed_total") == len(more)
    finally:
        assert daemon.terminate() == 0, daemon.output()


def test_two_replicas_share_the_partitions_and_lose_nothing(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    """A second replica joins the group mid-stream: the partitions are split between the
    two (a rebalance), and every record is processed and committed exactly by the group."""
    tag = uuid.uuid4().hex[:8]
    topic, group = f"replicas-{tag}", f"streamwatch-{tag}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 4, 1)])
    admin.close()
    ports = [_free_port(), _free_port()]
    configs = []
    for k, port in enumerate(ports):
        cfg = tmp_path / f"r{k}.yaml"
        cfg.write_text(
            f'kafka:\n  bootstrap_servers: "{kafka_bootstrap}"\n  input_topics: [{topic}]\n'
            f"  group_id: {group}\n  poll_timeout_ms: 200\n"
            f"  consumer: {{session_timeout_ms: 10000, heartbeat_interval_ms: 1000}}\n"
            f'model:\n  path: "{model_dir}"\noutputs:\n  anomalies_topic: an-{tag}\n'
            f"  dead_letter_topic: dl-{tag}\nmetrics:\n  host: 127.0.0.1\n  port: {port}\n"
        )
        configs.append(cfg)
    first = _readings(0, 200)
    _produce(kafka_bootstrap, topic, first)
    a = _Daemon(configs[0], tmp_path / "a.log")
    b = None
    try:
        _wait_metric(ports[0], "streamwatch_records_consumed_total", len(first), timeout=90)
        b = _Daemon(configs[1], tmp_path / "b.log")
        _wait_metric(ports[1], "streamwatch_last_poll_timestamp_seconds", 1, timeout=90)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "partitions revoked" not in a.output():
            time.sleep(0.3)
        assert "partitions revoked" in a.output(), a.output()
        # the group settled on its new assignment: the four partitions split between the two
        wait_for(
            "the partitions split between the replicas",
            lambda: (
                [_metric(p, "streamwatch_assigned_partitions") for p in ports]
                in ([1, 3], [2, 2], [3, 1])
            ),
            timeout=60,
            every=0.3,
        )
        more = _readings(200, 300)
        _produce(kafka_bootstrap, topic, more)
        total = len(first) + len(more)
        # Done means committed, not consumed: a batch replayed after the rebalance (at least
        # once) can push the consumed count to the total while newer records still wait.
        watcher = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        parts = [TopicPartition(topic, p) for p in range(4)]
        ends = watcher.end_offsets(parts)
        assert sum(ends.values()) == total
        committed: dict[TopicPartition, int | None] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            committed = {tp: watcher.committed(tp) for tp in parts}
            if committed == ends:
                break
            time.sleep(0.3)
        assert committed == ends
        consumed = sum(_metric(p, "streamwatch_records_consumed_total") for p in ports)
        # nothing lost; at least once allows a replayed batch around the rebalance
        assert total <= consumed <= total + 2 * 2000
        assert _metric(ports[1], "streamwatch_records_consumed_total") > 0  # b took a share
    finally:
        codes = [a.terminate()] + ([b.terminate()] if b else [])
    assert codes == [0] * len(codes), a.output()
    # The drain's final commits leave the group's offsets at the ends.
    assert {tp: watcher.committed(tp) for tp in parts} == ends
    watcher.close()


def test_sigterm_under_load_drains_and_loses_nothing(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM while records are still arriving: the daemon finishes its batch, commits and
    exits 0 promptly; a restart picks up exactly where the committed offsets say."""
    port = _free_port()
    config = tmp_path / "load.yaml"
    config.write_text(
        f'kafka:\n  bootstrap_servers: "{kafka_bootstrap}"\n  input_topics: '
        f"[{topics['input']}]\n  group_id: {topics['group']}\n  max_poll_records: 500\n"
        f'model:\n  path: "{model_dir}"\noutputs:\n  anomalies_topic: {topics["anomalies"]}\n'
        f"  dead_letter_topic: {topics['dead']}\nmetrics:\n  host: 127.0.0.1\n  port: {port}\n"
    )
    n_streams = 200
    fmt = MessageFormat()
    messages = [
        (
            f"s{i % n_streams}".encode(),
            fmt.encode(f"s{i % n_streams}", T0 + 60.0 * (i // n_streams), float(i % 17)),
        )
        for i in range(150_000)
    ]
    _produce(kafka_bootstrap, topics["input"], messages)
    daemon = _Daemon(config, tmp_path / "load.log")
    consumed_first = _wait_metric(port, "streamwatch_records_consumed_total", 2000, timeout=90)
    started = time.monotonic()
    code = daemon.terminate(timeout=30)
    assert code == 0, daemon.output()
    assert time.monotonic() - started < 15  # bounded drain
    assert consumed_first < len(messages)  # it really was stopped mid-stream

    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=topics["group"], enable_auto_commit=False
    )
    parts = [TopicPartition(topics["input"], p) for p in range(3)]
    committed = sum(consumer.committed(tp) or 0 for tp in parts)
    consumer.close()
    assert 2000 <= committed < len(messages)

    restart = _Daemon(config, tmp_path / "load2.log")
    try:
        rest = _wait_metric(
            port, "streamwatch_records_consumed_total", len(messages) - committed, timeout=120
        )
    finally:
        assert restart.terminate() == 0, restart.output()
    assert rest == len(messages) - committed  # resumed exactly at the committed offsets


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_sasl_listener_with_the_password_from_the_environment(
    kafka_bootstrap: str,
    kafka_sasl_bootstrap: str,
    model_dir: Path,
    topics: dict[str, str],
    tmp_path: Path,
    mechanism: str,
) -> None:
    """The daemon authenticates on a SASL_PLAINTEXT listener, reading the password from the
    environment variable the config names; the password never appears in its log.  With a
    wrong password the broker refuses it: it says so, exits 1 once its bootstrap timeout is
    out, and its group's offsets do not move though records wait."""
    port, group = _free_port(), f"{topics['group']}-{mechanism}"
    config = tmp_path / "sasl.yaml"
    config.write_text(
        f'kafka:\n  bootstrap_servers: "{kafka_sasl_bootstrap}"\n  input_topics: '
        f"[{topics['input']}]\n  group_id: {group}\n"
        f"  security_protocol: SASL_PLAINTEXT\n  sasl_mechanism: {mechanism}\n"
        f"  sasl_username: streamwatch\n  sasl_password_env: SW_TEST_KAFKA_PASSWORD\n"
        "  consumer: {bootstrap_timeout_ms: 10000}\n"
        f'model:\n  path: "{model_dir}"\noutputs:\n  anomalies_topic: {topics["anomalies"]}\n'
        f"  dead_letter_topic: {topics['dead']}\nmetrics:\n  host: 127.0.0.1\n  port: {port}\n"
        "logging:\n  level: DEBUG\n"
    )
    readings = _readings(0, 100)
    _produce(kafka_bootstrap, topics["input"], readings)
    daemon = _Daemon(
        config, tmp_path / "sasl.log", env={"SW_TEST_KAFKA_PASSWORD": "streamwatch-secret"}
    )
    try:
        _wait_metric(port, "streamwatch_records_consumed_total", len(readings), timeout=90)
        before = wait_committed(kafka_bootstrap, group, topics["input"], 3)
    finally:
        assert daemon.terminate() == 0, daemon.output()
    assert "streamwatch-secret" not in daemon.output()

    _produce(kafka_bootstrap, topics["input"], _readings(100, 120))  # for a daemon let in
    wrong = _Daemon(config, tmp_path / "wrong.log", env={"SW_TEST_KAFKA_PASSWORD": "nope"})
    code = wrong.exit_code(timeout=60)
    output = wrong.output()
    assert code == 1, output
    # Refused for the password, the one difference from the run above: it reached the broker
    # and sent its credentials ("... in the clear": no TLS here), the broker dropped each
    # attempt, and it gave up.  (The broker's SaslAuthenticationFailedError reaches the log
    # on some runs only: most dropped attempts read as "socket disconnected".)
    assert "in the clear" in output and "Connection refused" not in output, output
    assert f"ERROR cannot connect to Kafka at {kafka_sasl_bootstrap}: KafkaTimeoutError" in (
        output
    ), output
    assert "Traceback" not in output, output
    assert group_offsets(kafka_bootstrap, group, topics["input"], 3) == before  # nothing consumed
    missing = subprocess.run(
        [sys.executable, "-m", "streamwatch", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "SW_TEST_KAFKA_PASSWORD"},
    )
    assert missing.returncode == 78
    assert "kafka.sasl_password_env: environment variable 'SW_TEST_KAFKA_PASSWORD' is not set" in (
        missing.stderr
    )


def _allow(resource: ResourceType, name: str, *ops: ACLOperation) -> list[ACL]:
    """ACLs that let user streamwatch (the ACL broker's SASL user) do ``ops`` on a resource."""
    pattern = ResourcePattern(resource, name, ACLResourcePatternType.LITERAL)
    return [ACL("User:streamwatch", "*", op, ACLPermissionType.ALLOW, pattern) for op in ops]


def _acl_setup(plain: str, topics: dict[str, str], acls: list[ACL]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=plain)
    try:
        if topics:
            admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()])
            admin.wait_for_topics(list(topics.values()))
        granted = admin.create_acls(acls)
        assert not granted["failed"], granted
    finally:
        admin.close()


def _acl_config(
    path: Path, sasl: str, topics: dict[str, str], group: str, model_dir: Path, port: int
) -> Path:
    path.write_text(
        f'kafka:\n  bootstrap_servers: "{sasl}"\n  input_topics: [{topics["input"]}]\n'
        f"  group_id: {group}\n  poll_timeout_ms: 200\n  security_protocol: SASL_PLAINTEXT\n"
        "  sasl_mechanism: PLAIN\n  sasl_username: streamwatch\n"
        "  sasl_password_env: SW_TEST_KAFKA_PASSWORD\n"
        f'model:\n  path: "{model_dir}"\nscoring:\n  threshold: 0.5\n  warmup: 100\n'
        f"outputs:\n  anomalies_topic: {topics['anomalies']}\n"
        f"  dead_letter_topic: {topics['dead']}\nmetrics:\n  host: 127.0.0.1\n  port: {port}\n"
    )
    return path


def _acl_daemon(
    broker: dict[str, str],
    model_dir: Path,
    tmp_path: Path,
    acls: Callable[[dict[str, str], str], list[ACL]],
) -> tuple[dict[str, str], str, int, Path, dict[str, str], list[tuple[bytes, bytes]]]:
    """New topics and group on the ACL broker with ``acls(topics, group)`` granted, a daemon
    config for user streamwatch, its environment, and readings produced to the input topic."""
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"readings-{tag}", "anomalies": f"anomalies-{tag}", "dead": f"dead-{tag}"}
    group, port = f"streamwatch-{tag}", _free_port()
    _acl_setup(broker["plain"], topics, acls(topics, group))
    config = _acl_config(tmp_path / "acl.yaml", broker["sasl"], topics, group, model_dir, port)
    env = {"SW_TEST_KAFKA_PASSWORD": "streamwatch-secret"}
    readings = _readings(0, LENGTH)
    _produce(broker["plain"], topics["input"], readings)
    return topics, group, port, config, env, readings


def _exits_with(
    config: Path, log: Path, env: dict[str, str], text: str, alone: bool = False
) -> None:
    """Run a daemon expected to exit 1 by itself; its last error line must hold ``text``
    (and be its only one, with ``alone``: kafka-python logs some refusals itself)."""
    daemon = _Daemon(config, log, env=env)
    code = daemon.exit_code(timeout=45)
    output = daemon.output()
    assert code == 1, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert errors and text in errors[-1], output
    assert len(errors) == 1 or not alone, output
    assert "Traceback" not in output, output


def test_an_input_topic_or_group_the_acls_deny_stops_the_daemon_with_one_line(
    kafka_acl_broker: dict[str, str], model_dir: Path, tmp_path: Path
) -> None:
    """Without Read on its input topic the daemon exits 1 at start naming kafka.input_topics
    (kafka-python alone would log the refusal once and wait for partitions forever); without
    Read on its group it exits 1 naming kafka.group_id.  With both, it runs."""
    plain = kafka_acl_broker["plain"]
    topics, group, port, config, env, readings = _acl_daemon(
        kafka_acl_broker,
        model_dir,
        tmp_path,
        lambda topics, group: (
            _allow(ResourceType.TOPIC, topics["anomalies"], ACLOperation.WRITE)
            + _allow(ResourceType.TOPIC, topics["dead"], ACLOperation.WRITE)
        ),
    )

    _exits_with(
        config,
        tmp_path / "no-read.log",
        env,
        f"kafka.input_topics: topic '{topics['input']}' is not readable by this client: the "
        "broker's ACLs do not allow Read on it",
        alone=True,
    )

    _acl_setup(plain, {}, _allow(ResourceType.TOPIC, topics["input"], ACLOperation.READ))
    _exits_with(
        config,
        tmp_path / "no-group.log",
        env,
        f"kafka.group_id: group '{group}' is not usable by this client: the broker's ACLs do "
        "not allow Read on it",
    )

    _acl_setup(plain, {}, _allow(ResourceType.GROUP, group, ACLOperation.READ))
    daemon = _run_until_flagged(
        config, tmp_path / "granted.log", port, plain, topics["anomalies"], len(readings), env
    )
    assert " ERROR " not in daemon.output(), daemon.output()


def test_an_output_topic_the_acls_do_not_let_us_write_fails_at_start_naming_its_key(
    kafka_acl_broker: dict[str, str], model_dir: Path, tmp_path: Path
) -> None:
    """On a broker that enforces ACLs, a daemon whose principal may describe but not write
    its anomalies topic, and may not even describe its dead-letter topic, exits 1 at start
    with one line naming both config keys, the topics and the ACL, before consuming anything:
    not by failing the first batch's send with a traceback.  Once Write is granted, the same
    config runs."""
    plain = kafka_acl_broker["plain"]
    topics, group, port, config, env, readings = _acl_daemon(
        kafka_acl_broker,
        model_dir,
        tmp_path,
        lambda topics, group: (
            _allow(ResourceType.TOPIC, topics["input"], ACLOperation.READ)
            + _allow(ResourceType.GROUP, group, ACLOperation.READ)
            + _allow(ResourceType.TOPIC, topics["anomalies"], ACLOperation.DESCRIBE)
        ),
    )

    _exits_with(
        config,
        tmp_path / "denied.log",
        env,
        f"outputs.anomalies_topic: topic '{topics['anomalies']}', outputs.dead_letter_topic: "
        f"topic '{topics['dead']}' are not writable by this client: the broker's ACLs do not "
        "allow Write on them",
        alone=True,
    )
    watcher = KafkaConsumer(bootstrap_servers=plain, group_id=group, enable_auto_commit=False)
    try:  # nothing consumed, nothing committed
        assert watcher.committed(TopicPartition(topics["input"], 0)) is None
    finally:
        watcher.close()

    _acl_setup(
        plain,
        {},
        _allow(ResourceType.TOPIC, topics["anomalies"], ACLOperation.WRITE)
        + _allow(ResourceType.TOPIC, topics["dead"], ACLOperation.WRITE),
    )
    daemon = _run_until_flagged(
        config, tmp_path / "granted.log", port, plain, topics["anomalies"], len(readings), env
    )
    assert " ERROR " not in daemon.output(), daemon.output()

    # Write revoked while it runs: the batch whose dead letters are refused is not committed,
    # and the daemon exits 1 with one line, for its supervisor to restart it.
    daemon = _Daemon(config, tmp_path / "revoked.log", env=env)
    try:
        _wait_ready(port, timeout=60)  # past the start check, partitions assigned
        admin = KafkaAdminClient(bootstrap_servers=plain)
        try:
            admin.delete_acls(_allow(ResourceType.TOPIC, topics["dead"], ACLOperation.WRITE))
        finally:
            admin.close()
        _produce(plain, topics["input"], BAD)
        code = daemon.exit_code(timeout=60)
    finally:
        if daemon.proc.poll() is None:
            daemon.terminate()
    output = daemon.output()
    assert code == 1, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert errors and f"{topics['dead']}" in errors[-1], output
    assert "TopicAuthorizationFailedError" in errors[-1], output
    assert "Traceback" not in output, output
    watcher = KafkaConsumer(bootstrap_servers=plain, group_id=group, enable_auto_commit=False)
    try:  # the readings committed, the refused bad messages not
        assert watcher.committed(TopicPartition(topics["input"], 0)) == len(readings)
    finally:
        watcher.close()


def _run_until_flagged(
    config: Path,
    log: Path,
    port: int,
    bootstrap: str,
    anomalies_topic: str,
    n_readings: int,
    env: dict[str, str] | None = None,
) -> _Daemon:
    """Run a daemon over readings already produced until it has consumed them and the injected
    spikes are on the anomalies topic; stop it (exit 0) and return it, for its log."""
    daemon = _Daemon(config, log, env=env)
    try:
        _wait_metric(port, "streamwatch_records_consumed_total", n_readings, timeout=90)
        anomalies = _spike_events(bootstrap, anomalies_topic)
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.output()
    assert _flagged(anomalies) >= SPIKES, sorted(_flagged(anomalies))
    return daemon


def _tls_config(
    path: Path,
    bootstrap: str,
    topics: dict[str, str],
    model_dir: Path,
    port: int,
    security: str,
    consumer: str = "{}",
) -> Path:
    """A daemon config on a TLS listener; ``security``: the kafka keys that say how (YAML)."""
    path.write_text(
        f'kafka:\n  bootstrap_servers: "{bootstrap}"\n  input_topics: [{topics["input"]}]\n'
        f"  group_id: {topics['group']}\n  poll_timeout_ms: 200\n  consumer: {consumer}\n"
        + "".join(f"  {line}\n" for line in security.strip().splitlines())
        + f'model:\n  path: "{model_dir}"\nscoring:\n  threshold: 0.5\n  warmup: 100\n'
        f"outputs:\n  anomalies_topic: {topics['anomalies']}\n"
        f"  dead_letter_topic: {topics['dead']}\nmetrics:\n  host: 127.0.0.1\n  port: {port}\n"
    )
    return path


@pytest.mark.parametrize("case", ["SSL", "SASL_SSL", "mTLS", "mTLS, encrypted key"])
def test_tls_listeners_readings_in_anomalies_out(
    kafka_bootstrap: str,
    kafka_ssl_bootstrap: str,
    kafka_sasl_ssl_bootstrap: str,
    kafka_mtls_bootstrap: str,
    kafka_ssl_cafile: str,
    model_dir: Path,
    topics: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    case: str,
) -> None:
    """The daemon consumes and produces over TLS, verifying the broker's certificate against
    the CA file and its name (127.0.0.1, in the certificate's SAN): server authentication
    alone, with SCRAM on top, and with a client certificate whose key may be encrypted (its
    password from the environment).  No secret appears in its log."""
    protocol, bootstrap, extra, env = "SSL", kafka_ssl_bootstrap, "", {}
    if case == "SASL_SSL":
        protocol, bootstrap = "SASL_SSL", kafka_sasl_ssl_bootstrap
        extra = (
            "sasl_mechanism: SCRAM-SHA-256\nsasl_username: streamwatch\n"
            "sasl_password_env: SW_TEST_KAFKA_PASSWORD"
        )
        env = {"SW_TEST_KAFKA_PASSWORD": "streamwatch-secret"}
    elif case.startswith("mTLS"):
        cert = request.getfixturevalue("kafka_client_cert")  # only these cases need openssl
        bootstrap = kafka_mtls_bootstrap
        encrypted = case.endswith("encrypted key")
        key = cert["encrypted_keyfile" if encrypted else "keyfile"]
        extra = f'ssl_certfile: "{cert["certfile"]}"\nssl_keyfile: "{key}"'
        if encrypted:
            extra += "\nssl_key_password_env: SW_TEST_KEY_PASSWORD"
            env = {"SW_TEST_KEY_PASSWORD": "streamwatch-key-secret"}
    security = (
        f'security_protocol: {protocol}\nssl_cafile: "{kafka_ssl_cafile}"\n'
        f"ssl_check_hostname: true\n{extra}"
    )
    port = _free_port()
    config = _tls_config(tmp_path / "tls.yaml", bootstrap, topics, model_dir, port, security)
    readings = _readings(0, LENGTH)
    _produce(kafka_bootstrap, topics["input"], readings)
    daemon = _run_until_flagged(
        config, tmp_path / "tls.log", port, kafka_bootstrap, topics["anomalies"], len(readings), env
    )
    assert "streamwatch-secret" not in daemon.output()
    assert "streamwatch-key-secret" not in daemon.output()


@pytest.mark.parametrize("case", ["broker not trusted", "no client certificate"])
def test_tls_refused_consumes_nothing_and_exits(
    kafka_bootstrap: str,
    kafka_ssl_bootstrap: str,
    kafka_mtls_bootstrap: str,
    kafka_ssl_cafile: str,
    stranger_ca: str,
    model_dir: Path,
    topics: dict[str, str],
    tmp_path: Path,
    case: str,
) -> None:
    """A daemon that trusts another CA than the broker's, or that has no certificate for the
    mTLS listener, consumes nothing: kafka-python retries the handshake until its bootstrap
    timeout, then the daemon logs that it cannot connect and exits 1 (for its supervisor to
    restart it), rather than hang or retry silently.  The handshake's own error is in the log
    too (kafka-python's warnings go to the daemon's log handler)."""
    bootstrap, cafile, reason = {
        "broker not trusted": (kafka_ssl_bootstrap, stranger_ca, "CERTIFICATE_VERIFY_FAILED"),
        "no client certificate": (kafka_mtls_bootstrap, kafka_ssl_cafile, "BAD_CERTIFICATE"),
    }[case]
    host, tls_port = bootstrap.rsplit(":", 1)
    context = ssl.create_default_context(cafile=cafile)
    with (
        pytest.raises(ssl.SSLError, match=reason),  # refused for this reason, not another
        socket.create_connection((host, int(tls_port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.recv(1)  # TLS 1.3: the broker refuses a missing client certificate after the handshake
    port = _free_port()
    config = _tls_config(
        tmp_path / "refused.yaml",
        bootstrap,
        topics,
        model_dir,
        port,
        f'security_protocol: SSL\nssl_cafile: "{cafile}"',
        consumer="{bootstrap_timeout_ms: 3000}",
    )
    _produce(kafka_bootstrap, topics["input"], _readings(0, 10))
    started = time.monotonic()
    daemon = _Daemon(config, tmp_path / "refused.log")
    code = daemon.exit_code(timeout=60)
    output = daemon.output()
    assert code == 1, output
    assert time.monotonic() - started < 30  # the 3 s bootstrap timeout, plus the model's load
    assert f"ERROR cannot connect to Kafka at {bootstrap}: KafkaTimeoutError" in output, output
    assert output.count("cannot connect") == 1  # one attempt, one line: no loop inside
    assert reason in output, output  # why, not only that it failed
    assert "Traceback" not in output, output  # one line per failed attempt
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=topics["group"], enable_auto_commit=False
    )
    try:
        assert all(consumer.committed(TopicPartition(topics["input"], p)) is None for p in range(3))
    finally:
        consumer.close()


def test_missing_output_topic_fails_at_start_on_a_broker_without_auto_creation(
    kafka_strict_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    """On a broker that does not create topics on first use, a daemon whose output topics do
    not exist exits 1 at start, before consuming anything, with one line naming the config
    keys and the topics: not after the producer's 60 s max_block_ms with a bare timeout.
    Once the topics exist, the same config runs."""
    bootstrap = kafka_strict_bootstrap
    tag = uuid.uuid4().hex[:8]
    topics = {"input": f"readings-{tag}", "anomalies": f"anomalies-{tag}", "dead": f"dead-{tag}"}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topics["input"], 1, 1)])
        admin.wait_for_topics([topics["input"]])
    finally:
        admin.close()
    port, group = _free_port(), f"streamwatch-{tag}"
    config = tmp_path / "strict.yaml"
    config.write_text(
        f'kafka:\n  bootstrap_servers: "{bootstrap}"\n  input_topics: [{topics["input"]}]\n'
        f"  group_id: {group}\n  poll_timeout_ms: 200\n"
        f'model:\n  path: "{model_dir}"\nscoring:\n  threshold: 0.5\n  warmup: 100\n'
        f"outputs:\n  anomalies_topic: {topics['anomalies']}\n"
        f"  dead_letter_topic: {topics['dead']}\nmetrics:\n  host: 127.0.0.1\n  port: {port}\n"
    )
    readings = _readings(0, LENGTH)
    _produce(bootstrap, topics["input"], readings)

    started = time.monotonic()
    daemon = _Daemon(config, tmp_path / "missing.log")
    code = daemon.exit_code(timeout=45)
    took = time.monotonic() - started
    output = daemon.output()
    assert code == 1, output
    assert took < 20, (took, output)  # a 5 s wait for the topics, plus the model's load
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    assert f"outputs.anomalies_topic: topic '{topics['anomalies']}'" in errors[0]
    assert f"outputs.dead_letter_topic: topic '{topics['dead']}'" in errors[0]
    assert "do not exist on the broker" in errors[0]
    assert "auto.create.topics.enable=false" in errors[0]
    assert "Traceback" not in output, output
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:  # nothing consumed, nothing committed
        assert watcher.committed(TopicPartition(topics["input"], 0)) is None
    finally:
        watcher.close()

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topics["anomalies"], 1, 1), NewTopic(topics["dead"], 1, 1)])
        admin.wait_for_topics([topics["anomalies"], topics["dead"]])
    finally:
        admin.close()
    daemon = _run_until_flagged(
        config, tmp_path / "present.log", port, bootstrap, topics["anomalies"], len(readings)
    )
    assert " ERROR " not in daemon.output(), daemon.output()


def test_a_restart_with_a_state_snapshot_needs_no_new_warm_up(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM checkpoints the streams' state; the restarted daemon restores each partition
    as it is assigned, at the committed offsets, and flags a spike that comes sooner after the
    restart than the warm-up: without the checkpoint it could not."""
    port, state = _free_port(), tmp_path / "state"
    config = _basic_config(
        tmp_path,
        kafka_bootstrap,
        model_dir,
        topics,
        port,
        f'state:\n  checkpoint_dir: "{state}"\n',
    )
    before = _readings(0, SPIKE_AT - 60)
    _produce(kafka_bootstrap, topics["input"], before)
    daemon = _Daemon(config, tmp_path / "daemon.log")
    try:
        _wait_metric(port, "streamwatch_records_consumed_total", len(before), timeout=90)
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.output()
    assert len(list(state.rglob("*.full.npz"))) == 3, daemon.output()  # one per partition
    assert _consume_all(kafka_bootstrap, topics["anomalies"], want=1, timeout=3) == []

    after = _readings(SPIKE_AT - 60, SPIKE_AT + 20)  # the spike: 60 readings in, warm-up 100
    _produce(kafka_bootstrap, topics["input"], after)
    daemon = _Daemon(config, tmp_path / "daemon2.log")
    try:
        _wait_metric(port, "streamwatch_records_consumed_total", len(after), timeout=90)
        anomalies = _spike_events(kafka_bootstrap, topics["anomalies"])
        restored = _metric(port, "streamwatch_state_restored_streams_total")
        cold = _metric(port, "streamwatch_state_cold_starts_total", 'reason="none"')
    finally:
        code = daemon.terminate()
    out = daemon.output()
    assert code == 0, out
    assert out.count("stream(s) as of offset") == 3, out
    assert restored == N_STREAMS and cold == 0, out
    flagged = {(e["stream"], e["ts"]) for e in (json.loads(r.value) for r in anomalies)}
    for name in SPIKED:
        assert (name, T0 + 300.0 * SPIKE_AT) in flagged, (name, sorted(flagged))


@pytest.mark.parametrize("problem", ["not compacted", "too few partitions"])
def test_a_changelog_topic_that_cannot_hold_the_state_stops_the_daemon_with_one_line(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path, problem: str
) -> None:
    """An existing changelog topic that is not compacted, or has fewer partitions than the
    input, would lose state: the daemon exits 1 at start with one line naming the key."""
    bootstrap, tag = kafka_bootstrap, uuid.uuid4().hex[:8]
    topics = {"input": f"readings-{tag}", "changelog": f"changelog-{tag}"}
    compacted = {"cleanup.policy": "compact"} if problem == "too few partitions" else {}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics(
            [
                NewTopic(topics["input"], 2, 1),
                NewTopic(topics["changelog"], 1 if compacted else 2, 1, topic_configs=compacted),
            ]
        )
        admin.wait_for_topics(list(topics.values()))
    finally:
        admin.close()
    port, state = _free_port(), tmp_path / "state"
    config = tmp_path / "changelog.yaml"
    config.write_text(
        f'kafka:\n  bootstrap_servers: "{bootstrap}"\n  input_topics: [{topics["input"]}]\n'
        f"  group_id: streamwatch-{tag}\n"
        f'model:\n  path: "{model_dir}"\n'
        f'state:\n  checkpoint_dir: "{state}"\n  changelog_topic: {topics["changelog"]}\n'
        f"outputs:\n  anomalies_topic: anomalies-{tag}\n  dead_letter_topic: dead-{tag}\n"
        f"metrics:\n  host: 127.0.0.1\n  port: {port}\n"
    )
    daemon = _Daemon(config, tmp_path / "changelog.log")
    code = daemon.exit_code(timeout=45)
    output = daemon.output()
    assert code == 1, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    assert f"state.changelog_topic: topic '{topics['changelog']}'" in errors[0]
    said = "not compact" if problem == "not compacted" else "fewer than the input's 2"
    assert said in errors[0], errors[0]
    assert "Traceback" not in output, output

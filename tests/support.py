"""What the tests that run the daemon as a process share: a runner without torch, a metrics
reader, waits on facts with deadlines, and small producer/consumer helpers for the real broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

# The daemon runs where torch cannot be imported, as in production images without the extra.
RUNNER = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
from streamwatch.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def consume_all(
    bootstrap: str,
    topic: str,
    want: int,
    timeout: float,
    until: Callable[[list], bool] | None = None,
) -> list:
    """Read ``topic`` from the start until ``want`` records (or, given ``until``, until it
    says the records read so far are enough) or ``timeout`` seconds."""
    done = until or (lambda got: len(got) >= want)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(got):
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
    finally:
        consumer.close()
    return got


def metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in /metrics")


def wait_metric(port: int, name: str, at_least: float, timeout: float) -> float:
    deadline, value = time.monotonic() + timeout, -1.0
    while time.monotonic() < deadline:
        try:
            value = metric(port, name)
            if value >= at_least:
                return value
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{name} stayed at {value}, wanted >= {at_least}")


def wait_ready(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:  # not serving yet, or 503 while it waits
            pass
        time.sleep(0.3)
    raise AssertionError(f"/readyz on port {port} not ready in {timeout} s")


class Daemon:
    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", RUNNER, str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def exit_code(self, timeout: float) -> int:
        """Wait for a daemon expected to stop by itself; fail, with its log, if it does not."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.terminate()
            raise AssertionError("the daemon kept running: " + self.output()) from None


def scores_config(
    path: Path,
    bootstrap: str,
    topics: dict[str, str],
    group: str,
    model_dir: Path,
    port: int,
    extra: str = "",
) -> Path:
    """A daemon config reading ``topics["readings"]`` and writing every verdict to
    ``topics["scores"]`` (anomalies and dead letters to their own), for tests that account
    for each input; ``extra``: more YAML under ``kafka:`` (two-space indented)."""
    path.write_text(
        f"""
kafka:
  bootstrap_servers: "{bootstrap}"
  input_topics: [{topics["readings"]}]
  group_id: {group}
  poll_timeout_ms: 200
{extra}model:
  path: "{model_dir}"
outputs:
  anomalies_topic: {topics["anomalies"]}
  dead_letter_topic: {topics["dead"]}
  scores_topic: {topics["scores"]}
metrics:
  host: 127.0.0.1
  port: {port}
"""
    )
    return path


def wait_committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict:
    """Wait (30 s at most) until ``group`` has committed every partition of ``topic`` up to
    its end; return the end offsets (TopicPartition -> offset), having asserted it."""
    from kafka.structs import TopicPartition

    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        ends = watcher.end_offsets(parts)
        deadline = time.monotonic() + 30
        while {tp: watcher.committed(tp) for tp in parts} != ends and time.monotonic() < deadline:
            time.sleep(0.3)
        assert {tp: watcher.committed(tp) for tp in parts} == ends
        return dict(ends)
    finally:
        watcher.close()

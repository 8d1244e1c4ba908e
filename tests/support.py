"""What the tests share: for the daemon run as a process, a runner without torch, a metrics
reader, waits on facts (log lines, metrics, offsets) with deadlines, and small
producer/consumer helpers for the real broker; for the run loop in process, a daemon on the
in-memory twins of the Kafka edges and the readings it is fed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry

from streamwatch.codec import MessageFormat
from streamwatch.config import parse
from streamwatch.daemon import Daemon as LoopDaemon
from streamwatch.engine import Engine
from streamwatch.metrics import Metrics
from streamwatch.model import load_model
from streamwatch.records import Record
from streamwatch.sdnotify import Notifier
from streamwatch.sinks.memory import MemorySink
from streamwatch.sources.memory import MemorySource
from streamwatch.state import StateStore

T = TypeVar("T")

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


def wait_for(what: str, fact: Callable[[], T], timeout: float, every: float = 0.05) -> T:
    """Ask ``fact`` every ``every`` seconds until it answers something true, and return that
    answer; fail, naming ``what``, if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        answer = fact()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(every)


def wait_log(log: Path, text: str, timeout: float, proc: subprocess.Popen | None = None) -> str:
    """Wait until ``text`` is in the log file ``log`` and return the log; fail, with the log,
    if ``timeout`` seconds pass first or ``proc`` (the process writing it) exits first."""
    deadline = time.monotonic() + timeout
    while True:
        exited = proc is not None and proc.poll() is not None  # before reading: its last words
        out = log.read_text(errors="replace") if log.exists() else ""
        if text in out:
            return out
        if exited:
            assert proc is not None
            raise AssertionError(f"exited {proc.returncode} without logging {text!r}:\n{out}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{text!r} not logged within {timeout:g} s:\n{out}")
        time.sleep(0.05)


_SERVING = re.compile(r"metrics on http://[^:/]+:(\d+)/metrics")


def served_port(log: Path, timeout: float, proc: subprocess.Popen | None = None) -> int:
    """The port the daemon's metrics server took (metrics.port 0: any free one), read from the
    line it logs once it serves."""
    match = _SERVING.search(wait_log(log, "/metrics (and /healthz, /readyz)", timeout, proc))
    assert match, log.read_text(errors="replace")
    return int(match.group(1))


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
    """``streamwatch run`` as a process, its standard output and error in the file ``log``;
    ``stdin``: subprocess.PIPE to feed a file source on standard input."""

    def __init__(
        self, config: Path, log: Path, env: dict[str, str] | None = None, stdin: Any = None
    ) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", RUNNER, str(config)],
                stdin=stdin,
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

    def wait_output(self, text: str, timeout: float) -> str:
        """Wait until the daemon has logged ``text``; fail, with its log, if it exits first."""
        return wait_log(self.log, text, timeout, self.proc)

    def port(self, timeout: float = 60.0) -> int:
        """The port its metrics server took."""
        return served_port(self.log, timeout, self.proc)

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

        def committed() -> dict:  # an empty partition has nothing to commit: 0
            return {tp: watcher.committed(tp) or 0 for tp in parts}

        while committed() != ends and time.monotonic() < deadline:
            time.sleep(0.3)
        assert committed() == ends, (committed(), ends)
        return dict(ends)
    finally:
        watcher.close()


def group_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict:
    """What ``group`` has committed on each partition of ``topic`` (None: nothing)."""
    from kafka.structs import TopicPartition

    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {
            TopicPartition(topic, p): watcher.committed(TopicPartition(topic, p))
            for p in range(partitions)
        }
    finally:
        watcher.close()


# -- the run loop in process, on the in-memory twins ---------------------------------------------


def sine_records(n_streams: int = 5, length: int = 400, spike_at: int = 300) -> list[Record]:
    """``length`` readings of ``n_streams`` daily sines (levels 100, 200, ...) on topic "in",
    even streams on partition 0 and odd ones on 1, each reading a record in time order; the
    even streams jump at reading ``spike_at``."""
    fmt = MessageFormat()
    out = []
    offset = {0: 0, 1: 0}
    for i in range(length):
        for s in range(n_streams):
            x = 100.0 * (s + 1) + 20.0 * np.sin(2 * np.pi * i / 288 + s) + 0.1 * np.cos(i * 1.7)
            if i == spike_at and s % 2 == 0:
                x += 200.0 * (s + 1)
            part = s % 2
            out.append(
                Record(
                    "in",
                    part,
                    offset[part],
                    1_700_000_000_000 + i * 300_000,
                    f"s{s}".encode(),
                    fmt.encode(f"s{s}", 1.7e9 + i * 300.0, float(x)),
                )
            )
            offset[part] += 1
    return out


def memory_daemon(
    model_dir: Path,
    records: list[Record],
    batch_size: int = 97,
    sink: MemorySink | None = None,
    notifier: Notifier | None = None,
    **sections: Any,
) -> tuple[LoopDaemon, MemorySource, MemorySink, CollectorRegistry]:
    """A daemon serving ``model_dir`` from a MemorySource of ``records`` (``batch_size`` a
    poll) to a MemorySink, with its metrics in a registry of its own and the clock at 2e9 s
    (every reading 300 s old and more).  Its config: Kafka input topic "in", warm-up 50, and
    ``sections`` (top-level config sections, each replacing the default one)."""
    cfg = parse(
        {
            "kafka": {"bootstrap_servers": "unused:9092", "input_topics": ["in"]},
            "model": {"path": str(model_dir)},
            "scoring": {"warmup": 50},
            **sections,
        }
    )
    model = load_model(model_dir)
    engine = Engine(model, StateStore(model.spec.state_size), cfg.scoring)
    source, registry = MemorySource(records, batch_size), CollectorRegistry()
    sink = sink if sink is not None else MemorySink()
    daemon = LoopDaemon(
        cfg,
        source,
        sink,
        engine,
        model.spec,
        Metrics(registry),
        clock=lambda: 2e9,
        notifier=notifier,
    )
    return daemon, source, sink, registry

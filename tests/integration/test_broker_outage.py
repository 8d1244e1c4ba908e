"""A broker that goes away for longer than the producer's and consumer's own retries does not
end the daemon: it stays live, says it is not ready, and once the broker is back on the same
port it carries on from where it was, losing nothing.  The broker is killed (-9) in the
middle of a backlog, so that batches whose outputs were not yet acknowledged are in hand."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from support import (
    Daemon,
    consume_all,
    free_port,
    metric,
    produce,
    scores_config,
    wait_committed,
    wait_metric,
    wait_ready,
)

from streamwatch.codec import MessageFormat

pytestmark = pytest.mark.kafka

OUTAGE_SECONDS = 35.0  # past the 30 s after which the daemon used to exit
N_STREAMS = 8


def _readings(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    fmt = MessageFormat()
    return [
        (f"s{s}".encode(), fmt.encode(f"s{s}", 1_700_000_000.0 + 60.0 * i, float(i % 17 + s)))
        for i in range(start, stop)
        for s in range(N_STREAMS)
    ]


def _probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())["status"]
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())["status"]


@pytest.mark.parametrize("state", ["memory", "changelog"])
def test_the_daemon_rides_out_a_broker_outage_and_loses_nothing(
    own_kafka: Any, model_dir: Path, tmp_path: Path, state: str
) -> None:
    """The broker killed in the middle of a backlog, for 35 s, then started again on the same
    port: the daemon stays alive and live, resumes, and loses nothing.  With checkpoints and a
    changelog (rounds every 2 s), the changelog holds, once the daemon stops, the state as of
    the end of every partition."""
    broker = own_kafka
    bootstrap = broker.bootstrap()
    tag = uuid.uuid4().hex[:8]
    topics = {n: f"{n}-{tag}" for n in ("readings", "anomalies", "dead", "scores")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [NewTopic(topics["readings"], 2, 1)]
        + [NewTopic(topics[n], 1, 1) for n in ("anomalies", "dead", "scores")]
    )
    admin.close()
    port = free_port()
    extra = "  max_poll_records: 100\n"  # a backlog is many batches: the kill cuts one
    config = scores_config(
        tmp_path / "streamwatch.yaml", bootstrap, topics, f"outage-{tag}", model_dir, port, extra
    )
    if state == "changelog":
        with config.open("a") as f:
            f.write(
                f'state:\n  checkpoint_dir: "{tmp_path / "state"}"\n'
                f"  checkpoint_interval_seconds: 2\n  changelog_topic: changelog-{tag}\n"
            )
    before, backlog, after = _readings(0, 50), _readings(50, 3050), _readings(3050, 3100)
    produce(bootstrap, topics["readings"], before)
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        wait_metric(port, "streamwatch_records_consumed_total", len(before), timeout=90)
        wait_ready(port, timeout=30)
        produce(bootstrap, topics["readings"], backlog)
        wait_metric(port, "streamwatch_records_consumed_total", len(before) + 2000, timeout=60)
        broker.kill()  # in the middle of the backlog (100 records a batch)
        down_at = time.monotonic()
        consumed = metric(port, "streamwatch_records_consumed_total")
        assert consumed < len(before) + len(backlog), "the backlog was done before the kill"
        not_ready = None
        while time.monotonic() - down_at < OUTAGE_SECONDS:
            assert daemon.proc.poll() is None, daemon.output()
            assert _probe(port, "/healthz")[0] == 200  # live throughout
            code, status = _probe(port, "/readyz")
            if code == 503 and "broker" in status:
                not_ready = not_ready or time.monotonic() - down_at
            time.sleep(1.0)
        assert not_ready is not None, "/readyz never said it was waiting for the broker"

        assert broker.start() == bootstrap  # same port, same data
        produce(bootstrap, topics["readings"], after)
        total = len(before) + len(backlog) + len(after)
        wait_metric(port, "streamwatch_records_consumed_total", total, timeout=120)
        wait_ready(port, timeout=60)
        assert daemon.proc.poll() is None, daemon.output()
        # every reading has its verdict, and the group's offsets reach the end
        scores = consume_all(bootstrap, topics["scores"], want=total, timeout=60)
        ends = wait_committed(bootstrap, f"outage-{tag}", topics["readings"], 2)
    finally:
        code = daemon.terminate()
    output = daemon.output()
    assert code == 0, output
    assert "Traceback" not in output, output
    verdicts = {(e["partition"], e["offset"]) for e in (json.loads(r.value) for r in scores)}
    inputs = {(tp.partition, o) for tp, end in ends.items() for o in range(end)}
    assert verdicts == inputs  # nothing lost (duplicates from replays are allowed)
    # a batch was in hand when the broker went: waited out, not a reason to exit
    assert "broker unavailable, retrying until it is back" in output, output
    assert "broker back after" in output, output
    print(f"not ready {not_ready:.1f} s after the broker stopped")  # shown with -s
    if state == "changelog":
        from streamwatch.changelog_kafka import Changelog

        log = Changelog(f"changelog-{tag}", {"bootstrap_servers": bootstrap}, {})
        try:
            for tp, end in ends.items():
                part = (topics["readings"], tp.partition)
                last = log.last_marker(part)
                assert last is not None and last.offset == end, (last, end)
                got = log.restore(part, last.model)
                assert got is not None and got.offset == end and len(got.rows["key"]) > 0
        finally:
            log.close()

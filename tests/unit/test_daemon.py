"""The run loop against in-memory twins of the Kafka edges (the real broker: integration/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from support import memory_daemon, sine_records

from streamwatch.codec import MessageFormat
from streamwatch.config import parse
from streamwatch.daemon import Daemon
from streamwatch.engine import Engine
from streamwatch.errors import SourceError
from streamwatch.metrics import Metrics
from streamwatch.model import load_model
from streamwatch.records import Record
from streamwatch.sinks.memory import MemorySink
from streamwatch.sources.memory import MemorySource
from streamwatch.state import StateStore


def test_spikes_become_anomaly_events(model_dir: Path) -> None:
    records = sine_records()
    daemon, source, sink, registry = memory_daemon(model_dir, records)
    while daemon.run_once():
        pass
    events = [json.loads(m.value) for m in sink.topic("anomalies")]
    flagged = {(e["stream"], e["ts"]) for e in events}
    spike_ts = 1.7e9 + 300 * 300.0
    assert {("s0", spike_ts), ("s2", spike_ts), ("s4", spike_ts)} <= flagged
    assert len(events) <= 30  # few flags beyond the spikes on a clean sine
    event = next(e for e in events if e["stream"] == "s0" and e["ts"] == spike_ts)
    assert event["score"] >= event["threshold"] == 0.5
    assert event["model"] == "lstm" and event["topic"] == "in" and event["partition"] == 0
    assert sink.topic("anomalies")[0].key == events[0]["stream"].encode()
    assert source.committed == {("in", 0): 1200, ("in", 1): 800}
    assert registry.get_sample_value("streamwatch_records_consumed_total") == len(records)
    assert registry.get_sample_value("streamwatch_anomalies_total") == len(events)
    assert registry.get_sample_value("streamwatch_active_streams") == 5
    # every record's latency is observed (the clock is 2e9 s: all are 300 s and more old)
    assert registry.get_sample_value("streamwatch_end_to_end_seconds_count") == len(records)
    assert registry.get_sample_value("streamwatch_end_to_end_seconds_bucket", {"le": "60.0"}) == 0


def test_bad_messages_go_to_dead_letters_with_reason(model_dir: Path) -> None:
    good = sine_records(n_streams=1, length=3)
    bad = [
        Record("in", 0, 10, 0, b"k", b"{oops", [("trace", b"1"), ("null", None)]),
        Record("in", 0, 11, 0, None, b'{"stream":"a","ts":1,"value":NaN}'),
        Record("in", 1, 12, 0, None, b'{"stream":"a","ts":1}'),
    ]
    daemon, source, sink, registry = memory_daemon(model_dir, good + bad)
    daemon.run_once()
    dead = sink.topic("streamwatch-dead-letters")
    assert [dict(m.headers)["streamwatch.reason"] for m in dead] == [
        b"bad_json",
        b"bad_json",
        b"missing_value",
    ]
    first = dict(dead[0].headers)
    assert dead[0].key == b"k" and dead[0].value == b"{oops"
    assert first["trace"] == b"1" and first["streamwatch.offset"] == b"10"
    assert first["null"] == b""  # null header values cannot be produced: sent empty
    assert first["streamwatch.partition"] == b"0" and first["streamwatch.topic"] == b"in"
    assert registry.get_sample_value("streamwatch_dead_letters_total", {"reason": "bad_json"}) == 2
    assert source.committed[("in", 0)] == 12  # dead letters are consumed, not lost
    assert source.committed[("in", 1)] == 13


def test_commit_happens_after_flush(model_dir: Path) -> None:
    records = sine_records(n_streams=2, length=200, spike_at=150)

    class CheckingSource(MemorySource):
        def commit(self, offsets):  # type: ignore[no-untyped-def]
            assert not sink.pending, "offsets committed before outputs were acknowledged"
            super().commit(offsets)

    daemon, _, sink, _ = memory_daemon(model_dir, [])
    daemon.source = CheckingSource(records, batch_size=50)
    while daemon.run_once():
        pass
    assert sink.flushes >= 8
    assert daemon.source.committed[("in", 0)] == 200


def test_missing_output_topics_are_named_by_their_config_keys(model_dir: Path) -> None:
    daemon, source, _, _ = memory_daemon(model_dir, sine_records(n_streams=1, length=10))
    daemon.sink = MemorySink(existing={"in", "anomalies", "streamwatch-dead-letters"})
    daemon.check_topics()
    daemon.sink = MemorySink()  # a broker that creates topics on first use
    daemon.check_topics()
    daemon.sink = MemorySink(existing={"in", "streamwatch-dead-letters"})
    with pytest.raises(SourceError) as caught:
        daemon.check_topics()
    assert str(caught.value).startswith(
        "outputs.anomalies_topic: topic 'anomalies' does not exist on the broker, which did not "
        "create it on request (auto.create.topics.enable=false"
    )
    assert "dead_letter" not in str(caught.value)
    assert caught.value.retriable  # the topic may be created: a restart may succeed
    assert len(source.pending) == 10  # checked before anything is consumed

    scores = parse(
        {
            "kafka": {"bootstrap_servers": "x", "input_topics": ["in"]},
            "outputs": {"scores_topic": "scores"},
        }
    )
    daemon.cfg, daemon.sink = scores, MemorySink(existing={"anomalies"})
    with pytest.raises(SourceError) as caught:
        daemon.check_topics()
    assert str(caught.value).startswith(
        "outputs.scores_topic: topic 'scores', "
        "outputs.dead_letter_topic: topic 'streamwatch-dead-letters' do not exist"
    )


def test_output_topics_the_acls_deny_are_named_apart_from_missing_ones(model_dir: Path) -> None:
    daemon, source, _, _ = memory_daemon(model_dir, sine_records(n_streams=1, length=10))
    daemon.sink = MemorySink(existing={"streamwatch-dead-letters"}, denied={"anomalies"})
    with pytest.raises(SourceError) as caught:
        daemon.check_topics()
    assert str(caught.value) == (
        "outputs.anomalies_topic: topic 'anomalies' is not writable by this client: the "
        "broker's ACLs do not allow Write on it to the daemon's principal: grant it or name "
        "another topic"
    )
    daemon.sink = MemorySink(existing={"anomalies"}, denied={"anomalies"})
    with pytest.raises(SourceError) as caught:
        daemon.check_topics()
    message = str(caught.value)
    assert message.startswith("outputs.dead_letter_topic: topic 'streamwatch-dead-letters' does")
    assert "; outputs.anomalies_topic: topic 'anomalies' is not writable" in message
    assert "\n" not in message and caught.value.retriable
    assert len(source.pending) == 10


def test_input_topics_the_acls_deny_come_first_in_the_one_line(model_dir: Path) -> None:
    daemon, source, _, _ = memory_daemon(model_dir, sine_records(n_streams=1, length=10))
    daemon.source = MemorySource(source.pending, denied={"in"})
    daemon.sink = MemorySink(existing={"streamwatch-dead-letters"})
    with pytest.raises(SourceError) as caught:
        daemon.check_topics()
    assert str(caught.value).startswith(
        "kafka.input_topics: topic 'in' is not readable by this client: the broker's ACLs do "
        "not allow Read on it to the daemon's principal: grant it or name another topic; "
        "outputs.anomalies_topic: topic 'anomalies' does not exist"
    )
    assert len(daemon.source.pending) == 10


class _ClosingSink(MemorySink):
    """A MemorySink that says whether it was closed, and how many outputs it still held then
    (its close flushes them: they would not have gone out with their batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.held_at_close: int | None = None

    def close(self) -> None:
        self.held_at_close = len(self.pending)
        super().close()
        self.closed = True


def test_run_stops_and_closes(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop while a poll waits (what SIGTERM does) ends the run after that batch: its
    outputs are delivered, its offsets committed (the final commit: every record consumed,
    none beyond), and the source and the sink are closed."""
    records = sine_records(n_streams=2, length=300)  # 600 records: seven polls of 97
    sink = _ClosingSink()
    daemon, source, _, registry = memory_daemon(
        model_dir, records, sink=sink, outputs={"scores_topic": "scores"}
    )
    polls = 0
    poll = source.poll

    def poll_then_stop(timeout_ms: int) -> list[Record]:
        nonlocal polls
        polls += 1
        if polls == 3:
            daemon.stop()
        return poll(timeout_ms)

    monkeypatch.setattr(source, "poll", poll_then_stop)
    daemon.run(max_polls=50)  # the limit only keeps a run that ignores the stop from hanging
    assert polls == 3  # stopped by the stop, after the batch in hand
    consumed = records[: 3 * 97]
    assert registry.get_sample_value("streamwatch_records_consumed_total") == len(consumed)
    ends: dict[tuple[str, int], int] = {}
    for r in consumed:
        ends[(r.topic, r.partition)] = r.offset + 1
    assert ends == {("in", 0): 146, ("in", 1): 145}
    assert source.committed == ends  # the last batch's offsets committed, nothing beyond
    verdicts = [json.loads(m.value) for m in sink.topic("scores")]
    assert sorted((v["partition"], v["offset"]) for v in verdicts) == sorted(
        (r.partition, r.offset) for r in consumed
    )  # every record consumed has its verdict delivered ...
    assert sink.held_at_close == 0  # ... with its batch, not by the close
    assert sink.closed and source.closed


def test_multivariate_messages_with_covariates(tmp_path: Path) -> None:
    """Several value fields and a covariate field feed a two-target model with a covariate."""
    import torch

    from streamwatch.model.artifact import ModelSpec, sha256_bytes, write_artifact
    from streamwatch.normalize import Normalizer
    from streamwatch.train.export import export_onnx
    from streamwatch.train.module import Forecaster

    torch.manual_seed(0)
    data = export_onnx(Forecaster(3, 2, 8, 1).eval())
    spec = ModelSpec(
        "mv",
        "1",
        ("cpu", "mem", "deploying"),
        ("cpu", "mem"),
        1,
        8,
        Normalizer(),
        sha256_bytes(data),
    )
    write_artifact(tmp_path / "mv", spec, data)
    model = load_model(tmp_path / "mv")
    cfg = parse(
        {
            "kafka": {"bootstrap_servers": "x", "input_topics": ["in"]},
            "input": {"value_fields": ["cpu", "mem"], "covariate_fields": ["deploying"]},
            "outputs": {"scores_topic": "scores"},
        }
    )
    records = [
        Record(
            "in",
            0,
            i,
            0,
            b"h1",
            json.dumps(
                {"stream": "h1", "ts": i, "cpu": 0.5 + 0.01 * (i % 7), "mem": 0.3, "deploying": 0}
            ).encode(),
        )
        for i in range(30)
    ]
    records.append(Record("in", 0, 30, 0, b"h1", b'{"stream":"h1","ts":30,"cpu":0.5}'))
    sink = MemorySink()
    daemon = Daemon(
        cfg,
        MemorySource(records),
        sink,
        Engine(model, StateStore.for_model(model.spec), cfg.scoring),
        model.spec,
        Metrics(CollectorRegistry()),
    )
    daemon.run_once()
    scores = [json.loads(m.value) for m in sink.topic("scores")]
    assert len(scores) == 30
    assert set(scores[-1]["value"]) == {"cpu", "mem"} and set(scores[-1]["prediction"]) == {
        "cpu",
        "mem",
    }
    assert dict(sink.topic("streamwatch-dead-letters")[0].headers)["streamwatch.reason"] == (
        b"missing_value"
    )


def test_revoked_partitions_drop_their_streams_state(model_dir: Path) -> None:
    records = sine_records(n_streams=4, length=30)  # s0, s2 on partition 0; s1, s3 on 1
    daemon, source, _, registry = memory_daemon(model_dir, records)
    while daemon.run_once():
        pass
    store = daemon.engine.store
    assert all(s in store for s in ("s0", "s1", "s2", "s3"))
    source.revoke({("in", 1)})
    assert all(s in store for s in ("s0", "s1", "s2", "s3"))  # acted on by the loop ...
    daemon.run_once()  # ... after its next poll
    assert [s in store for s in ("s0", "s1", "s2", "s3")] == [True, False, True, False]
    assert len(store) == 2
    assert (
        registry.get_sample_value("streamwatch_stream_evictions_total", {"reason": "revoked"}) == 2
    )


def test_lag_is_reported_per_partition(model_dir: Path) -> None:
    daemon, _, _, registry = memory_daemon(model_dir, sine_records(n_streams=2, length=100))
    daemon.run_once()  # 97 of 200 records
    lags = {
        p: registry.get_sample_value(
            "streamwatch_consumer_lag_records", {"topic": "in", "partition": p}
        )
        for p in ("0", "1")
    }
    assert lags["0"] + lags["1"] == 200 - 97


def test_lag_is_reported_on_empty_polls_too(model_dir: Path) -> None:
    """A member that fetches nothing still shows its partitions' lag (what the input-stopped
    alert watches), not the value of its last non-empty batch."""
    daemon, source, _, registry = memory_daemon(model_dir, sine_records(n_streams=2, length=10))
    source.batch_size = 0  # every poll comes back empty
    assert daemon.run_once() == 0
    lags = [
        registry.get_sample_value(
            "streamwatch_consumer_lag_records", {"topic": "in", "partition": p}
        )
        for p in ("0", "1")
    ]
    assert lags == [10.0, 10.0]


def test_partitions_and_readiness_are_exported_as_readyz_says(model_dir: Path) -> None:
    daemon, source, _, registry = memory_daemon(model_dir, sine_records(n_streams=2, length=10))
    assert registry.get_sample_value("streamwatch_assigned_partitions") == 0.0
    assert registry.get_sample_value("streamwatch_ready") == 0.0  # no partitions yet
    daemon.run_once()
    assert registry.get_sample_value("streamwatch_assigned_partitions") == 2.0
    assert daemon.health.ready()[0]
    assert registry.get_sample_value("streamwatch_ready") == 1.0
    source.broker_up = False
    daemon.run_once()
    assert daemon.health.ready() == (False, "waiting for broker")
    assert registry.get_sample_value("streamwatch_ready") == 0.0
    assert registry.get_sample_value("streamwatch_state_pending_partitions") == 0.0


def test_out_of_order_reading_goes_to_dead_letters(model_dir: Path) -> None:
    fmt = MessageFormat()
    records = [Record("in", 0, i, 0, None, fmt.encode("a", 100.0 + i, 1.0)) for i in range(10)]
    records.append(Record("in", 0, 10, 0, None, fmt.encode("a", 50.0, 1.0)))
    daemon, source, sink, registry = memory_daemon(model_dir, records)
    daemon.run_once()
    dead = sink.topic("streamwatch-dead-letters")
    assert [dict(m.headers)["streamwatch.offset"] for m in dead] == [b"10"]
    assert dict(dead[0].headers)["streamwatch.reason"] == b"out_of_order"
    assert (
        registry.get_sample_value("streamwatch_dead_letters_total", {"reason": "out_of_order"}) == 1
    )
    assert source.committed[("in", 0)] == 11


class _FlakySink(MemorySink):
    """A broker that fails the first ``failures`` flushes (retriable, as a broker away does),
    keeping what was sent, as KafkaSink keeps what is not acknowledged."""

    def __init__(self, failures: int, retriable: bool = True) -> None:
        super().__init__()
        self.failures, self.retriable, self.failed = failures, retriable, 0
        self.on_failure: list = []

    def flush(self, timeout_s: float) -> None:
        if self.pending and self.failed < self.failures:
            self.failed += 1
            for hook in self.on_failure:
                hook()
            raise SourceError(
                "1 of 1 messages not acknowledged: timed out", retriable=self.retriable
            )
        super().flush(timeout_s)

    def close(self) -> None:  # what is not acknowledged by now is dropped, as a producer does
        self.pending.clear()


def _flaky_daemon(
    model_dir: Path, records: list[Record], sink: _FlakySink, monkeypatch: pytest.MonkeyPatch
) -> tuple[Daemon, MemorySource, CollectorRegistry]:
    import streamwatch.daemon as daemon_module

    monkeypatch.setattr(daemon_module, "BACKOFF_SECONDS", (0.001, 0.004))
    daemon, source, _, registry = memory_daemon(
        model_dir, records, sink=sink, outputs={"scores_topic": "scores"}
    )
    return daemon, source, registry


def test_a_broker_away_is_waited_out_and_nothing_is_lost_or_doubled(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = sine_records(n_streams=3, length=100)
    sink = _FlakySink(failures=5)
    daemon, source, registry = _flaky_daemon(model_dir, records, sink, monkeypatch)
    seen: list[tuple[bool, dict]] = []
    sink.on_failure.append(
        lambda: seen.append((daemon.health.broker_reachable, dict(source.committed)))
    )
    daemon.run(max_polls=20)
    # each failure happened with nothing of the batch in hand committed; the first batch
    # (97 records) failed five times before it went through
    assert [committed for _, committed in seen] == [{}] * 5
    assert daemon.health.broker_reachable and all(not ok for ok, _ in seen[1:])
    assert registry.get_sample_value("streamwatch_broker_retries_total") == 5
    assert source.committed == {("in", 0): 200, ("in", 1): 100}
    # every reading got exactly one verdict, and the state stepped once per reading
    scores = [json.loads(m.value) for m in sink.topic("scores")]
    assert sorted((e["stream"], e["offset"]) for e in scores) == sorted(
        (json.loads(r.value)["stream"], r.offset) for r in records
    )
    from streamwatch.normalize import COUNT

    store = daemon.engine.store
    slots = store.assign(["s0", "s1", "s2"], 2e9)
    assert store.norm[slots, 0, COUNT].tolist() == [100.0, 100.0, 100.0]


def test_a_stop_while_the_broker_is_away_commits_nothing_of_the_batch_in_hand(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sink = _FlakySink(failures=10**9)
    daemon, source, _ = _flaky_daemon(
        model_dir, sine_records(n_streams=2, length=20), sink, monkeypatch
    )
    sink.on_failure.append(lambda: sink.failed == 3 and daemon.stop())
    daemon.run()  # returns: a stop is not held up by the broker
    assert source.committed == {} and source.closed
    assert "stopping without the last batch's outputs acknowledged" in caplog.text


def test_an_error_that_needs_an_operator_ends_the_run(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = _FlakySink(failures=2, retriable=False)  # and the last try at the stop
    daemon, source, _ = _flaky_daemon(
        model_dir, sine_records(n_streams=2, length=20), sink, monkeypatch
    )
    with pytest.raises(SourceError):
        daemon.run()
    assert source.committed == {} and source.closed


def test_verdicts_are_strict_json_and_future_readings_are_dead_lettered(model_dir: Path) -> None:
    """A stream's first verdict has no forecast (null, not NaN); a reading dated past the
    clock's tolerance is dead-lettered and does not lock its stream out."""
    fmt = MessageFormat()
    values = [fmt.encode("a", 1.7e9 + i, 1.0) for i in range(3)]
    values.insert(1, fmt.encode("a", 32503680000.0, 1.0))  # the year 3000
    records = [Record("in", 0, i, 0, None, v) for i, v in enumerate(values)]
    daemon, source, sink, registry = memory_daemon(model_dir, records)
    daemon.cfg = parse(
        {
            "kafka": {"bootstrap_servers": "unused:9092", "input_topics": ["in"]},
            "outputs": {"scores_topic": "scores"},
        }
    )

    def strict(name: str) -> float:
        raise AssertionError(f"{name} in a verdict")

    scores = [json.loads(m.value, parse_constant=strict) for m in _run_all(daemon, sink)]
    assert [e["offset"] for e in scores] == [0, 2, 3]  # stepped on after the future one
    assert scores[0]["prediction"] is None and scores[0]["scale"] is None
    assert isinstance(scores[1]["prediction"], float)
    dead = sink.topic("streamwatch-dead-letters")
    assert [dict(m.headers)["streamwatch.reason"] for m in dead] == [b"future_timestamp"]
    reason = {"reason": "future_timestamp"}
    assert registry.get_sample_value("streamwatch_dead_letters_total", reason) == 1
    assert source.committed == {("in", 0): 4}


def _run_all(daemon: Daemon, sink: MemorySink) -> list:
    while daemon.run_once():
        pass
    return sink.topic("scores")


def test_a_stream_read_on_a_second_partition_is_counted_and_its_state_moves(
    model_dir: Path,
) -> None:
    """The invariant: a stream's readings arrive on one partition.  A producer that breaks it
    is visible in a metric, and the stream's state follows its latest partition."""
    records = sine_records(n_streams=2, length=60)  # s0 on partition 0, s1 on 1; batches of 97
    fmt = MessageFormat()
    stray = Record("in", 1, 60, 0, b"s0", fmt.encode("s0", 1.7e9 + 60 * 300.0, 100.0))
    daemon, _, _, registry = memory_daemon(model_dir, [*records, stray])
    while daemon.run_once():
        pass
    assert registry.get_sample_value("streamwatch_stream_partition_conflicts_total") == 1
    store = daemon.engine.store
    assert store.owner[store.slot("s0")] == store.owner[store.slot("s1")]

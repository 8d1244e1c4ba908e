"""The fault suite: stream state on the real broker through kill -9 (once between
checkpoints, and ten times at random moments), a member joining a cooperative group, a static
member's restart, a rolling restart of three replicas, a member paused past its session, and,
with a changelog topic, a partition moved to a member that joins and from a member killed (of
two and of three).

Each scenario ends with a ledger (``Ledger``): the input topic's offsets read against every
verdict on the scores topic, which carries each verdict's input partition and offset: inputs
lost (no verdict), verdicts duplicated, and the time the daemon took to recover.  The ledger
line is printed (``pytest -s tests/faults`` shows the table)."""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from support import (
    Daemon,
    consume_all,
    free_port,
    metric,
    produce,
    wait_committed,
    wait_metric,
    wait_ready,
)

from streamwatch import checkpoint
from streamwatch.codec import MessageFormat

pytestmark = pytest.mark.kafka

N_STREAMS = 12
T0 = 1_700_006_400.0


def _readings(start: int, stop: int, spike_at: int | None = None) -> list[tuple[bytes, bytes]]:
    fmt = MessageFormat()
    out = []
    for i in range(start, stop):
        for s in range(N_STREAMS):
            x = 10.0 + np.sin(2 * np.pi * i / 288 + s) + 0.01 * np.cos(i * 1.3 + s)
            if i == spike_at and s % 3 == 0:
                x += 5.0
            name = f"s{s:02d}"
            out.append((name.encode(), fmt.encode(name, T0 + 300.0 * i, float(x))))
    return out


@pytest.fixture
def topics(kafka_bootstrap: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    names = {k: f"{k}-{tag}" for k in ("readings", "anomalies", "dead", "scores", "reference")}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics(
        [NewTopic(names["readings"], 3, 1)]
        + [NewTopic(names[k], 1, 1) for k in ("anomalies", "dead", "scores", "reference")]
    )
    admin.close()
    names["group"] = f"streamwatch-{tag}"
    return names


def _config(
    path: Path,
    bootstrap: str,
    topics: dict[str, str],
    model_dir: Path,
    port: int,
    state: Path | None,
    scores: str = "scores",
    group: str | None = None,
    kafka_extra: str = "",
    changelog: str | None = None,
) -> Path:
    state_yaml = (
        f'state:\n  checkpoint_dir: "{state}"\n  checkpoint_interval_seconds: 8\n'
        if state is not None
        else ""
    )
    if changelog is not None:
        state_yaml += f"  changelog_topic: {changelog}\n"
    path.write_text(
        f"""
kafka:
  bootstrap_servers: "{bootstrap}"
  input_topics: [{topics["readings"]}]
  group_id: {group or topics["group"]}
  poll_timeout_ms: 200
  consumer:
    session_timeout_ms: 10000  # a killed member leaves the group this soon
{kafka_extra}model:
  path: "{model_dir}"
scoring:
  threshold: 0.5
  warmup: 100
{state_yaml}outputs:
  anomalies_topic: {topics["anomalies"]}
  dead_letter_topic: {topics["dead"]}
  scores_topic: {topics[scores]}
metrics:
  host: 127.0.0.1
  port: {port}
"""
    )
    return path


def _verdicts(bootstrap: str, topic: str, want: int) -> list[dict[str, object]]:
    got = consume_all(bootstrap, topic, want, timeout=60)
    return [json.loads(r.value) for r in got]


@dataclass(frozen=True)
class Ledger:
    inputs: int
    lost: int  # inputs without a verdict
    duplicated: int  # verdicts beyond the first for an input

    def report(self, scenario: str, recover: float) -> None:
        print(
            f"\n[ledger] {scenario}: inputs {self.inputs}, lost {self.lost}, duplicated "
            f"{self.duplicated}, recovered within {recover:.1f} s"
        )


def ledger(bootstrap: str, topic: str, verdicts: str, partitions: int) -> Ledger:
    """Every input record of ``topic`` (its end offsets) against the verdicts on ``verdicts``
    (read until each input has one, or 60 s)."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    watcher = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = watcher.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        watcher.close()
    inputs = {(tp.partition, o) for tp, end in ends.items() for o in range(end)}

    def keys(got: list) -> list[tuple[int, int]]:
        return [(e["partition"], e["offset"]) for e in map(json.loads, (r.value for r in got))]

    got = keys(consume_all(bootstrap, verdicts, 0, 60, until=lambda g: set(keys(g)) >= inputs))
    return Ledger(len(inputs), len(inputs - set(got)), len(got) - len(set(got)))


def _reference(
    bootstrap: str, topics: dict[str, str], model_dir: Path, tmp_path: Path, n: int
) -> dict[tuple[int, int], dict[str, object]]:
    """The uninterrupted reference: the same input read by another group, without
    checkpoints, once through; its ``n`` verdicts by (partition, offset)."""
    port = free_port()
    config = _config(
        tmp_path / "ref.yaml",
        bootstrap,
        topics,
        model_dir,
        port,
        None,
        scores="reference",
        group=topics["group"] + "-ref",
    )
    reference = Daemon(config, tmp_path / "reference.log")
    try:
        wait_metric(port, "streamwatch_records_consumed_total", n, timeout=90)
    finally:
        assert reference.terminate() == 0, reference.output()
    return {(e["partition"], e["offset"]): e for e in _verdicts(bootstrap, topics["reference"], n)}


def _as_reference(
    got: list[dict[str, object]], expected: dict[tuple[int, int], dict[str, object]], why=None
) -> None:
    """Each verdict in ``got`` equals the reference's for its record (scores within 1e-6)."""
    for e in got:
        ref = expected[(e["partition"], e["offset"])]  # type: ignore[index]
        assert e["stream"] == ref["stream"], (why, e)
        assert e["score"] == pytest.approx(ref["score"], abs=1e-6), (why, e)
        if ref["prediction"] is None:  # a stream's first reading has no forecast
            assert e["prediction"] is None, (why, e)
        else:
            assert e["prediction"] == pytest.approx(ref["prediction"], rel=1e-6, abs=1e-9), e
        assert e["anomaly"] == ref["anomaly"], (why, e)


def _wait_for(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout} s for {what}")


def test_a_kill_between_checkpoints_loses_nothing_and_resumes_every_streams_state(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """Checkpointed after 250 readings a stream, committed after 300, then kill -9.  The
    restart restores the checkpoint, reads offsets 250 to 300 again without output, and goes
    on: every input has a verdict, only the uncommitted tail (none here: it was committed) is
    sent twice, every verdict equals an uninterrupted run's, and a spike 40 readings after
    the restart, inside a fresh stream's warm-up of 100, is flagged."""
    bootstrap, state = kafka_bootstrap, tmp_path / "state"
    first_part, second_part = _readings(0, 250), _readings(250, 300)
    third_part = _readings(300, 360, spike_at=340)
    everything = first_part + second_part + third_part
    port = free_port()
    config = _config(tmp_path / "a.yaml", bootstrap, topics, model_dir, port, state)

    produce(bootstrap, topics["readings"], first_part)
    daemon = Daemon(config, tmp_path / "first.log")
    try:
        wait_metric(port, "streamwatch_records_consumed_total", len(first_part), timeout=90)
        # the first periodic checkpoint (8 s after the start) covers the first part
        _wait_for(
            "a checkpoint of every partition",
            lambda: all(checkpoint.segments(state / topics["readings"] / str(p)) for p in range(3)),
        )
        saved = {
            p: checkpoint.read_segment(
                checkpoint.segments(state / topics["readings"] / str(p))[-1][2]
            ).offset
            for p in range(3)
        }
        assert sum(saved.values()) == len(first_part)
        produce(bootstrap, topics["readings"], second_part)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        daemon.proc.send_signal(signal.SIGKILL)
        assert daemon.proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    # no checkpoint after the first: the kill came before the next one was due
    assert sum(
        checkpoint.read_segment(
            checkpoint.segments(state / topics["readings"] / str(p))[-1][2]
        ).offset
        for p in range(3)
    ) == len(first_part)

    produce(bootstrap, topics["readings"], third_part)
    daemon, started = Daemon(config, tmp_path / "second.log"), time.monotonic()
    try:
        wait_ready(port, 90)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        recover = time.monotonic() - started
        rebuilt = metric(port, "streamwatch_state_rebuilt_records_total")
        restored = metric(port, "streamwatch_state_restored_streams_total")
    finally:
        code = daemon.terminate()
    out = daemon.output()
    assert code == 0, out
    assert rebuilt == len(second_part), out
    assert restored == N_STREAMS, out
    assert out.count("are read again without output") == 3, out
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("kill -9 between checkpoints", recover)
    assert (book.lost, book.duplicated) == (0, 0)

    # the uninterrupted reference: another group, no checkpoints, the same input
    expected = _reference(bootstrap, topics, model_dir, tmp_path, len(everything))
    got = _verdicts(bootstrap, topics["scores"], len(everything))
    keys = [(e["partition"], e["offset"]) for e in got]
    assert set(keys) == set(expected)  # lost: none
    assert len(keys) == len(set(keys))  # sent twice: none (the tail was committed)
    _as_reference(got, expected)
    spiked = {f"s{s:02d}" for s in range(0, N_STREAMS, 3)}
    flagged = {e["stream"] for e in got if e["anomaly"] and e["ts"] == T0 + 300.0 * 340}
    assert flagged == spiked


def test_a_joining_member_takes_only_its_share_and_a_static_member_restarts_unnoticed(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """Cooperative sticky assignment: when B joins, A gives up one partition of three and
    keeps the state of the other two (evictions: only the moved partition's streams).  B is
    a static member: restarted within the session timeout it gets its partition back with no
    rebalance (A logs no revocation or assignment), restored from its own checkpoint."""
    bootstrap = kafka_bootstrap
    produce(bootstrap, topics["readings"], _readings(0, 150))
    ports = {"a": free_port(), "b": free_port()}
    configs = {
        name: _config(
            tmp_path / f"{name}.yaml",
            bootstrap,
            topics,
            model_dir,
            ports[name],
            tmp_path / f"state-{name}",
            kafka_extra=f"  group_instance_id: member-{name}\n",
        )
        for name in ("a", "b")
    }
    a = Daemon(configs["a"], tmp_path / "a.log")
    b: Daemon | None = None
    try:
        wait_metric(ports["a"], "streamwatch_active_streams", N_STREAMS, 90)
        b, joined = Daemon(configs["b"], tmp_path / "b.log"), time.monotonic()
        _wait_for("B's partition", lambda: "partitions assigned: " in b.output(), 90)
        joining = time.monotonic() - joined
        _wait_for("A's revocation", lambda: "partitions revoked: " in a.output(), 30)
        revoked_line = next(x for x in a.output().splitlines() if "partitions revoked: " in x)
        assert revoked_line.count("[") == 1, revoked_line  # one partition moved, not three
        produce(bootstrap, topics["readings"], _readings(150, 160))
        wait_metric(ports["b"], "streamwatch_records_consumed_total", 1, 60)
        evicted = metric(ports["a"], "streamwatch_stream_evictions_total", '{reason="revoked"}')
        kept = metric(ports["a"], "streamwatch_active_streams")
        assert 0 < evicted < N_STREAMS and kept == N_STREAMS - evicted

        # B restarts (a rollout): SIGTERM checkpoints its partition, the new process rejoins
        # under the same instance id within the session timeout (10 s here)
        a_lines = len(a.output().splitlines())
        assert b.terminate() == 0, b.output()
        b = Daemon(configs["b"], tmp_path / "b2.log")
        _wait_for("B's restore", lambda: "restored " in b.output(), 60)  # type: ignore[union-attr]
        produce(bootstrap, topics["readings"], _readings(160, 170))
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        after = a.output().splitlines()[a_lines:]
        assert not [x for x in after if "partitions revoked" in x or "assigned" in x], after
        assert f"restored {int(evicted)} stream(s)" in b.output(), b.output()
        book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
        book.report("a member added, then restarted (static)", joining)
        assert book.lost == 0
    finally:
        for d in (a, b):
            if d is not None and d.proc.poll() is None:
                d.terminate()


def test_ten_kills_at_random_moments_change_no_verdict(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """The fault suite's kill loop: input keeps arriving while the daemon (a static member,
    checkpoints every 2 s) is killed -9 ten times, at a moment drawn at random after each
    start: while it starts, joins, restores, rebuilds, processes or writes a checkpoint.
    Afterwards every input has a verdict, and every verdict sent, including those sent again
    for an uncommitted tail, equals an uninterrupted run's for the same record."""
    bootstrap, state, port = kafka_bootstrap, tmp_path / "state", free_port()
    config = _config(
        tmp_path / "k.yaml",
        bootstrap,
        topics,
        model_dir,
        port,
        state,
        kafka_extra="  group_instance_id: killed\n",
    )
    config.write_text(config.read_text().replace("interval_seconds: 8", "interval_seconds: 2"))
    rng = np.random.default_rng(20261203)
    steps = np.linspace(0, 420, 12).astype(int)  # the first part, then one more per kill
    produce(bootstrap, topics["readings"], _readings(0, int(steps[1])))
    daemon = Daemon(config, tmp_path / "run-0.log")
    try:  # first a checkpoint of every partition, so that no restart is a cold start
        _wait_for(
            "a checkpoint of every partition",
            lambda: all(checkpoint.segments(state / topics["readings"] / str(p)) for p in range(3)),
            90,
        )
        kills = []
        for k in range(10):
            produce(bootstrap, topics["readings"], _readings(int(steps[k + 1]), int(steps[k + 2])))
            delay = float(rng.uniform(0.2, 6.0))
            time.sleep(delay)  # the moment of the kill is what this test draws at random
            daemon.proc.send_signal(signal.SIGKILL)
            assert daemon.proc.wait(timeout=10) == -signal.SIGKILL
            kills.append(f"{delay:.1f}s")
            daemon = Daemon(config, tmp_path / f"run-{k + 1}.log")
        started = time.monotonic()
        wait_ready(port, 90)  # the last one joined and restored: then it has read everything
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        recover = time.monotonic() - started
    finally:
        code = daemon.terminate() if daemon.proc.poll() is None else daemon.proc.returncode
    assert code == 0, daemon.output()
    # each restart restored every partition (the first run alone started from nothing)
    restarts = [(tmp_path / f"run-{k}.log").read_text() for k in range(1, 11)]
    assert not [x for x in restarts if "start afresh" in x or "Traceback" in x], kills
    rebuilt = sum("are read again without output" in x for x in restarts)
    print(f"kills after {kills}; restarts that rebuilt state past their checkpoint: {rebuilt}")
    assert rebuilt, kills  # the path under test: records between checkpoint and commit
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("kill -9 at 10 random moments", recover)
    assert book.lost == 0
    everything = _readings(0, int(steps[-1]))

    expected = _reference(bootstrap, topics, model_dir, tmp_path, len(everything))

    def every_record(got: list) -> bool:
        keys = {(e["partition"], e["offset"]) for e in map(json.loads, (r.value for r in got))}
        return len(keys) >= len(expected)

    got = [
        json.loads(r.value)
        for r in consume_all(bootstrap, topics["scores"], 0, timeout=60, until=every_record)
    ]
    assert {(e["partition"], e["offset"]) for e in got} == set(expected), kills  # none lost
    _as_reference(got, expected, kills)  # sent once or again, each the reference's verdict


def test_a_rolling_restart_of_three_replicas_keeps_every_streams_state(
    kafka_bootstrap: str, model_dir: Path, tmp_path: Path
) -> None:
    """Three static members share six partitions; input keeps arriving while each is stopped
    (SIGTERM) and started again in turn, as a rollout does.  Each returns within the session
    timeout: no rebalance, no partition moves, each restores its own checkpoints (no stream
    starts afresh), and every record gets exactly one verdict, equal to an uninterrupted
    single replica's."""
    bootstrap, tag = kafka_bootstrap, uuid.uuid4().hex[:8]
    topics = {k: f"{k}-{tag}" for k in ("readings", "anomalies", "dead", "scores", "reference")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [NewTopic(topics["readings"], 6, 1)]
        + [NewTopic(topics[k], 1, 1) for k in ("anomalies", "dead", "scores", "reference")]
    )
    admin.close()
    topics["group"] = f"streamwatch-{tag}"
    names = ("a", "b", "c")
    ports = {n: free_port() for n in names}
    configs = {
        n: _config(
            tmp_path / f"{n}.yaml",
            bootstrap,
            topics,
            model_dir,
            ports[n],
            tmp_path / f"state-{n}",
            kafka_extra=f"  group_instance_id: member-{n}\n",
        )
        for n in names
    }
    # the group settles first: a partition that moves with records read but not committed is
    # read again by its new owner (at least once), which this test is not about
    members = {n: Daemon(configs[n], tmp_path / f"{n}-0.log") for n in names}
    try:
        for n in names:  # serving its metrics
            wait_metric(ports[n], "streamwatch_records_consumed_total", 0, 60)
        _wait_for(
            "two partitions a member",
            lambda: all(metric(ports[n], "streamwatch_assigned_partitions") == 2 for n in names),
            120,
        )
        produce(bootstrap, topics["readings"], _readings(0, 120))
        wait_committed(bootstrap, topics["group"], topics["readings"], 6)
        settled = {n: len(members[n].output()) for n in names}
        recover = 0.0
        for k, n in enumerate(names):  # the rollout, one member at a time
            produce(bootstrap, topics["readings"], _readings(120 + 20 * k, 140 + 20 * k))
            assert members[n].terminate() == 0, members[n].output()
            members[n], started = Daemon(configs[n], tmp_path / f"{n}-1.log"), time.monotonic()
            wait_ready(ports[n], 60)
            recover = max(recover, time.monotonic() - started)
        wait_committed(bootstrap, topics["group"], topics["readings"], 6)
    finally:
        codes = {n: d.terminate() for n, d in members.items() if d.proc.poll() is None}
    assert all(c == 0 for c in codes.values()), codes
    restored = 0
    for n in names:
        again = (tmp_path / f"{n}-1.log").read_text()
        restored += sum(int(m) for m in re.findall(r"restored (\d+) stream", again))
        # no rebalance moved anything: while another member restarted, none gave up or took
        # a partition (a stop revokes what the member held, a return takes the same back)
        before = (tmp_path / f"{n}-0.log").read_text()[settled[n] :]
        after = again[again.find("partitions assigned") :].split("\n", 1)[-1]
        moved = [
            x
            for x in (
                before[: before.rfind("draining")] + after[: after.rfind("draining")]
            ).splitlines()
            if "partitions revoked" in x or "partitions lost" in x or "partitions assigned" in x
        ]
        assert not moved, (n, moved)
    assert restored == N_STREAMS  # each member restored its own streams, none started afresh
    book = ledger(bootstrap, topics["readings"], topics["scores"], 6)
    book.report("rolling restart of three replicas", recover)
    assert (book.lost, book.duplicated) == (0, 0)
    everything = _readings(0, 180)

    expected = _reference(bootstrap, topics, model_dir, tmp_path, len(everything))
    got = _verdicts(bootstrap, topics["scores"], len(everything) + 1)  # waits for a duplicate
    keys = [(e["partition"], e["offset"]) for e in got]
    assert sorted(keys) == sorted(expected)  # each exactly once
    _as_reference(got, expected)


def test_a_member_paused_past_its_session_is_fenced_and_rejoins_with_its_state(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """A is stopped (SIGSTOP) longer than its session timeout: the group gives its partitions
    to B, which reads on.  When A runs again (SIGCONT) its commits are refused (fenced), it
    learns it lost the partitions, saves and drops their state, and rejoins; partitions it gets
    back are restored from its checkpoint and rebuilt, quietly, through what B committed
    meanwhile.  A batch the zombie still had in hand is scored again and its verdicts sent
    (at least once: only exactly-once delivery would fence those writes too).  Nothing
    crashes, every record gets a verdict, and both stop cleanly."""
    bootstrap = kafka_bootstrap
    ports = {"a": free_port(), "b": free_port()}
    configs = {
        n: _config(tmp_path / f"{n}.yaml", bootstrap, topics, model_dir, ports[n], tmp_path / n)
        for n in ports
    }
    a = Daemon(configs["a"], tmp_path / "a.log")
    wait_metric(ports["a"], "streamwatch_assigned_partitions", 3, 90)
    b = Daemon(configs["b"], tmp_path / "b.log")
    try:
        wait_metric(ports["b"], "streamwatch_assigned_partitions", 1, 90)
        produce(bootstrap, topics["readings"], _readings(0, 100))
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        held_by_a = metric(ports["a"], "streamwatch_assigned_partitions")
        _wait_for(
            "A's checkpoints",
            lambda: (
                sum(
                    bool(checkpoint.segments(tmp_path / "a" / topics["readings"] / str(p)))
                    for p in range(3)
                )
                == held_by_a
            ),
        )
        a.proc.send_signal(signal.SIGSTOP)
        produce(bootstrap, topics["readings"], _readings(100, 150))
        # the session (10 s) runs out: B is given everything and reads on
        wait_metric(ports["b"], "streamwatch_assigned_partitions", 3, 60)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        a.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        _wait_for("A to learn it lost its partitions", lambda: "partitions lost" in a.output())
        assert "UnknownMemberIdError" in a.output()  # its commit after the pause: refused
        _wait_for(
            "A to rejoin with partitions",
            lambda: "partitions assigned: r" in a.output().split("partitions lost", 1)[1],
        )
        rejoin = time.monotonic() - resumed
        wait_ready(ports["a"], 60)
        produce(bootstrap, topics["readings"], _readings(150, 200))
        ends = wait_committed(bootstrap, topics["group"], topics["readings"], 3)
    finally:
        if a.proc.poll() is None:
            a.proc.send_signal(signal.SIGCONT)
        codes = {"a": a.terminate(), "b": b.terminate()}
    assert codes == {"a": 0, "b": 0}, (a.output(), b.output())
    for d in (a, b):
        assert "Traceback" not in d.output(), d.output()
    after = a.output().split("partitions lost", 1)[1]
    # what it was given back: restored from its own checkpoint (rebuilt through B's offsets
    # where B committed past it), or, a partition it never held, started afresh, counted
    assert "restored " in after or "no checkpoint" in after, after

    def every_record(got: list) -> bool:
        keys = {(e["partition"], e["offset"]) for e in map(json.loads, (r.value for r in got))}
        return keys >= expected

    expected = {(tp.partition, o) for tp, end in ends.items() for o in range(end)}
    assert len(expected) == len(_readings(0, 200))
    got = consume_all(bootstrap, topics["scores"], 0, timeout=60, until=every_record)
    assert every_record(got)  # at least once: a verdict for every record
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("a member paused past its session (SIGSTOP), then resumed", rejoin)
    assert book.lost == 0


def _backlog_config(tmp_path: Path, bootstrap: str, topics: dict[str, str], model_dir: Path,
                    port: int, name: str) -> Path:  # fmt: skip
    """Checkpoints on, 100 records a poll: a backlog is many batches, a stop cuts one."""
    return _config(
        tmp_path / f"{name}.yaml",
        bootstrap,
        topics,
        model_dir,
        port,
        tmp_path / f"state-{name}",
        kafka_extra="  max_poll_records: 100\n",
    )


def test_sigterm_under_load_exits_promptly_and_the_restart_loses_nothing(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM in the middle of a 24,000-record backlog: the batch in hand finishes, the last
    checkpoint and commit are written, exit 0 within 30 s; the restart reads on from the
    commit, and each record has exactly one verdict."""
    bootstrap, port = kafka_bootstrap, free_port()
    config = _backlog_config(tmp_path, bootstrap, topics, model_dir, port, "load")
    produce(bootstrap, topics["readings"], _readings(0, 2000))
    daemon = Daemon(config, tmp_path / "first.log")
    try:
        wait_metric(port, "streamwatch_records_consumed_total", 3000, timeout=90)
        asked = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(timeout=60)
        took = time.monotonic() - asked
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    assert code == 0 and took < 30, (code, took, daemon.output())
    assert "Traceback" not in daemon.output()
    daemon = Daemon(config, tmp_path / "second.log")
    try:
        wait_ready(port, 90)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
    finally:
        assert daemon.terminate() == 0, daemon.output()
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("SIGTERM under load (exit in s, then restart)", took)
    assert (book.lost, book.duplicated) == (0, 0)


def test_sigterm_during_a_rebalance_exits_promptly_and_loses_nothing(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """A member is stopped just as another joins the group (the rebalance in progress): it
    exits 0 within 30 s, the other ends up with every partition, and every record gets a
    verdict."""
    bootstrap = kafka_bootstrap
    ports = {"a": free_port(), "b": free_port()}
    configs = {
        n: _backlog_config(tmp_path, bootstrap, topics, model_dir, ports[n], n) for n in ports
    }
    produce(bootstrap, topics["readings"], _readings(0, 1000))
    a = Daemon(configs["a"], tmp_path / "a.log")
    b: Daemon | None = None
    try:
        wait_metric(ports["a"], "streamwatch_records_consumed_total", 1000, timeout=90)
        b = Daemon(configs["b"], tmp_path / "b.log")
        _wait_for("B to ask to join", lambda: "consuming " in b.output(), 60)  # type: ignore[union-attr]
        _wait_for("the rebalance to reach A", lambda: "partitions revoked" in a.output(), 60)
        asked = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        code = a.proc.wait(timeout=60)
        took = time.monotonic() - asked
        assert code == 0 and took < 30, (code, took, a.output())
        wait_metric(ports["b"], "streamwatch_assigned_partitions", 3, 90)
        produce(bootstrap, topics["readings"], _readings(1000, 1050))
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
        if b is not None and b.proc.poll() is None:
            assert b.terminate() == 0, b.output()
    assert "Traceback" not in a.output() + (b.output() if b else "")
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("SIGTERM during a rebalance (exit in s)", took)
    assert book.lost == 0


def test_sigterm_with_the_broker_down_exits_in_bounded_time_and_loses_nothing(
    own_kafka: Any, model_dir: Path, tmp_path: Path
) -> None:
    """The broker killed (-9) under a backlog, then SIGTERM: the daemon commits nothing of the
    batch it could not settle and exits 0 within 45 s; with the broker back, a restart reads on
    and every record has a verdict."""
    broker = own_kafka
    bootstrap, tag, port = broker.bootstrap(), uuid.uuid4().hex[:8], free_port()
    topics = {k: f"{k}-{tag}" for k in ("readings", "anomalies", "dead", "scores")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [NewTopic(topics["readings"], 3, 1)]
        + [NewTopic(topics[k], 1, 1) for k in ("anomalies", "dead", "scores")]
    )
    admin.close()
    topics["group"] = f"streamwatch-{tag}"
    config = _backlog_config(tmp_path, bootstrap, topics, model_dir, port, "down")
    produce(bootstrap, topics["readings"], _readings(0, 2000))
    daemon = Daemon(config, tmp_path / "first.log")
    try:
        wait_metric(port, "streamwatch_records_consumed_total", 3000, timeout=90)
        broker.kill()
        asked = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(timeout=90)
        took = time.monotonic() - asked
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    assert code == 0 and took < 45, (code, took, daemon.output())
    assert "Traceback" not in daemon.output()
    assert broker.start() == bootstrap  # same port, same data
    daemon = Daemon(config, tmp_path / "second.log")
    try:
        wait_ready(port, 90)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
    finally:
        assert daemon.terminate() == 0, daemon.output()
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("SIGTERM with the broker down (exit in s, then restart)", took)
    assert book.lost == 0


def _changelog_pair(
    bootstrap: str, topics: dict[str, str], model_dir: Path, tmp_path: Path, names: str = "ab"
) -> tuple[dict[str, Path], dict[str, int]]:
    """Configs of members A and B (or ``names``), each with a disk of its own, sharing one
    changelog."""
    ports = {name: free_port() for name in names}
    configs = {
        name: _config(
            tmp_path / f"{name}.yaml",
            bootstrap,
            topics,
            model_dir,
            ports[name],
            tmp_path / f"state-{name}",
            changelog=f"{topics['group']}-changelog",
        )
        for name in names
    }
    return configs, ports


def _cold_starts(port: int) -> float:
    return sum(
        metric(port, "streamwatch_state_cold_starts_total", f'{{reason="{r}"}}')
        for r in ("damaged", "other_model", "gap", "unreadable")
    )


def test_with_a_changelog_state_follows_a_partition_to_a_member_that_joins(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """A reads three partitions alone; B joins with an empty disk.  A hands the partition it
    gives up over through the changelog (its last round, written at the revocation), and B
    restores it from there: B starts no stream afresh, and every verdict, before and after
    the move, equals an uninterrupted run's."""
    bootstrap = kafka_bootstrap
    first, second = _readings(0, 150), _readings(150, 200)
    produce(bootstrap, topics["readings"], first)
    configs, ports = _changelog_pair(bootstrap, topics, model_dir, tmp_path)
    a = Daemon(configs["a"], tmp_path / "a.log")
    b: Daemon | None = None
    try:
        wait_metric(ports["a"], "streamwatch_records_consumed_total", len(first), 90)
        assert "changelog topic " in a.output() and ": created" in a.output(), a.output()
        b, joined = Daemon(configs["b"], tmp_path / "b.log"), time.monotonic()
        _wait_for("B's restore", lambda: "from the changelog" in b.output(), 90)
        moved = metric(ports["b"], "streamwatch_state_restored_streams_total")
        recover = time.monotonic() - joined
        produce(bootstrap, topics["readings"], second)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        assert 0 < moved < N_STREAMS, b.output()
        assert metric(ports["b"], "streamwatch_state_cold_starts_total", '{reason="none"}') == 0
        assert _cold_starts(ports["b"]) == 0, b.output()
        assert (
            metric(ports["b"], "streamwatch_changelog_restored_records_total") >= 2
        )  # chunk, marker
        assert metric(ports["a"], "streamwatch_changelog_failures_total") == 0
    finally:
        for d in (a, b):
            if d is not None and d.proc.poll() is None:
                assert d.terminate() == 0, d.output()
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("a member added, state moved by the changelog", recover)
    assert book.lost == 0
    everything = len(first) + len(second)
    expected = _reference(bootstrap, topics, model_dir, tmp_path, everything)
    got = _verdicts(bootstrap, topics["scores"], everything)
    _as_reference(got, expected, "after the move")


def test_with_a_changelog_a_member_killed_hands_its_partitions_to_the_survivor(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """A and B share three partitions; B is killed with -9 (no last round, no commit).  A
    takes B's partitions once B's session ends, restores them from B's last changelog round,
    reads again without output up to B's committed offsets, and goes on: nothing lost, no
    stream started afresh, and every verdict equals an uninterrupted run's."""
    bootstrap = kafka_bootstrap
    first, second, third = _readings(0, 120), _readings(120, 160), _readings(160, 200)
    produce(bootstrap, topics["readings"], first)
    configs, ports = _changelog_pair(bootstrap, topics, model_dir, tmp_path)
    a = Daemon(configs["a"], tmp_path / "a.log")
    b: Daemon | None = None
    try:
        wait_metric(ports["a"], "streamwatch_records_consumed_total", len(first), 90)
        b = Daemon(configs["b"], tmp_path / "b.log")
        _wait_for("B's restore", lambda: "from the changelog" in b.output(), 90)
        produce(bootstrap, topics["readings"], second)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        # B's first periodic round (8 s after its restore) is in the changelog ...
        _wait_for(
            "a round of B's",
            lambda: metric(ports["b"], "streamwatch_checkpoint_written_bytes_total") > 0,
        )
        produce(bootstrap, topics["readings"], third)  # ... and then some it never saves
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        fresh = metric(ports["a"], "streamwatch_state_cold_starts_total", '{reason="none"}')
        b.proc.send_signal(signal.SIGKILL)
        assert b.proc.wait(timeout=10) == -signal.SIGKILL
        killed = time.monotonic()
        a_restores = a.output().count("from the changelog")
        _wait_for(
            "A's restore of B's partition",
            lambda: a.output().count("from the changelog") > a_restores,
            90,
        )
        recover = time.monotonic() - killed
        assert _cold_starts(ports["a"]) == 0, a.output()
        # B's partition came with its state: no stream of it starts afresh on A
        assert metric(ports["a"], "streamwatch_state_cold_starts_total", '{reason="none"}') == fresh
        assert "are read again without output" in a.output(), a.output()
    finally:
        for d in (a, b):
            if d is not None and d.proc.poll() is None:
                assert d.terminate() == 0, d.output()
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("one of two members killed, state moved by the changelog", recover)
    assert book.lost == 0
    everything = len(first) + len(second) + len(third)
    expected = _reference(bootstrap, topics, model_dir, tmp_path, everything)
    got = _verdicts(bootstrap, topics["scores"], everything)
    _as_reference(got, expected, "after the kill")


def test_with_a_changelog_a_damaged_local_checkpoint_gives_way_to_the_changelog(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """A member restarts: its own checkpoints are as new as the changelog, which it sees from
    the last record of each changelog partition, without reading the rest.  It stops again,
    and every segment on its disk is then damaged (a bad sector, a torn copy).  Restarted, it
    passes over them and restores every partition from the changelog instead of starting its
    streams afresh: every verdict equals an uninterrupted run's."""
    bootstrap = kafka_bootstrap
    first, middle, second = _readings(0, 100), _readings(100, 150), _readings(150, 200)
    produce(bootstrap, topics["readings"], first)
    configs, ports = _changelog_pair(bootstrap, topics, model_dir, tmp_path)
    a = Daemon(configs["a"], tmp_path / "a.log")
    try:
        wait_metric(ports["a"], "streamwatch_records_consumed_total", len(first), 90)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
    finally:
        assert a.terminate() == 0, a.output()
    produce(bootstrap, topics["readings"], middle)
    a = Daemon(configs["a"], tmp_path / "a1.log")
    try:
        wait_metric(ports["a"], "streamwatch_records_consumed_total", len(middle), 90)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
    finally:
        assert a.terminate() == 0, a.output()
    assert a.output().count(" from 1 segment(s)") == 3, a.output()
    assert "changelog record(s)" not in a.output(), a.output()
    damaged = 0
    for segment in (tmp_path / "state-a").rglob("*.npz"):
        data = bytearray(segment.read_bytes())
        at = len(data) // 2
        data[at : at + 64] = bytes(64)
        segment.write_bytes(bytes(data))
        damaged += 1
    assert damaged >= 3

    produce(bootstrap, topics["readings"], second)
    a, started = Daemon(configs["a"], tmp_path / "a2.log"), time.monotonic()
    try:
        wait_ready(ports["a"], 90)
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        recover = time.monotonic() - started
        restored = metric(ports["a"], "streamwatch_state_restored_streams_total")
        fresh = metric(ports["a"], "streamwatch_state_cold_starts_total", '{reason="none"}')
        cold = _cold_starts(ports["a"])
    finally:
        assert a.terminate() == 0, a.output()
    out = a.output()
    assert restored == N_STREAMS, out
    assert (fresh, cold) == (0, 0), out
    assert out.count("passed over: ") >= 3 and "not a readable checkpoint segment" in out, out
    assert out.count("from the changelog") >= 3, out
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("local checkpoints damaged, state from the changelog", recover)
    assert (book.lost, book.duplicated) == (0, 0)
    everything = len(first) + len(middle) + len(second)
    expected = _reference(bootstrap, topics, model_dir, tmp_path, everything)
    got = _verdicts(bootstrap, topics["scores"], everything)
    _as_reference(got, expected, "after the damage")


def test_with_a_changelog_three_members_one_killed_lose_no_state(
    kafka_bootstrap: str, model_dir: Path, topics: dict[str, str], tmp_path: Path
) -> None:
    """A, then B, then C join (each join hands a partition over through the changelog); C is
    killed with -9.  Its partition goes to A or B, restored from C's last round: no stream
    starts afresh anywhere after the first start, nothing is lost, and every verdict equals an
    uninterrupted run's."""
    bootstrap = kafka_bootstrap
    parts = [_readings(0, 100), _readings(100, 140), _readings(140, 170), _readings(170, 200)]
    produce(bootstrap, topics["readings"], parts[0])
    configs, ports = _changelog_pair(bootstrap, topics, model_dir, tmp_path, "abc")
    members: dict[str, Daemon] = {}
    try:
        members["a"] = Daemon(configs["a"], tmp_path / "a.log")
        wait_metric(ports["a"], "streamwatch_records_consumed_total", len(parts[0]), 90)
        for name, more in (("b", parts[1]), ("c", parts[2])):
            members[name] = Daemon(configs[name], tmp_path / f"{name}.log")
            _wait_for(
                f"{name}'s restore", lambda n=name: "from the changelog" in members[n].output(), 90
            )
            produce(bootstrap, topics["readings"], more)
            wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        _wait_for(
            "a round of C's",
            lambda: metric(ports["c"], "streamwatch_checkpoint_written_bytes_total") > 0,
        )
        fresh = {
            n: metric(ports[n], "streamwatch_state_cold_starts_total", '{reason="none"}')
            for n in "ab"
        }
        members["c"].proc.send_signal(signal.SIGKILL)
        assert members["c"].proc.wait(timeout=10) == -signal.SIGKILL
        killed = time.monotonic()
        before = {n: members[n].output().count("from the changelog") for n in "ab"}
        _wait_for(
            "C's partition restored by A or B",
            lambda: any(members[n].output().count("from the changelog") > before[n] for n in "ab"),
            90,
        )
        recover = time.monotonic() - killed
        produce(bootstrap, topics["readings"], parts[3])
        wait_committed(bootstrap, topics["group"], topics["readings"], 3)
        for n in "ab":
            assert _cold_starts(ports[n]) == 0, members[n].output()
            now = metric(ports[n], "streamwatch_state_cold_starts_total", '{reason="none"}')
            assert now == fresh[n], members[n].output()
        assert metric(ports["b"], "streamwatch_state_cold_starts_total", '{reason="none"}') == 0
    finally:
        for d in members.values():
            if d.proc.poll() is None:
                assert d.terminate() == 0, d.output()
    book = ledger(bootstrap, topics["readings"], topics["scores"], 3)
    book.report("one of three members killed, state moved by the changelog", recover)
    assert book.lost == 0
    everything = sum(len(p) for p in parts)
    expected = _reference(bootstrap, topics, model_dir, tmp_path, everything)
    got = _verdicts(bootstrap, topics["scores"], everything)
    _as_reference(got, expected, "after the kill of one of three")

"""Per-partition checkpoints: the store's changes, the segments on disk, and the daemon's
restore, rebuild and save around a crash, a revocation and a reassignment."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support import memory_daemon, sine_records

from streamwatch import checkpoint
from streamwatch.config import parse
from streamwatch.daemon import Daemon
from streamwatch.errors import ConfigError, SourceError
from streamwatch.records import Record
from streamwatch.sinks.memory import MemorySink
from streamwatch.sources.memory import MemorySource
from streamwatch.state import StateStore

MODEL = {"name": "m", "version": "1"}

# -- the store's changes -------------------------------------------------------------------------


def _filled(ids: list[str], seed: int = 0, owner: int = 0) -> StateStore:
    store = StateStore(state_size=6, capacity=4, max_streams=100, n_targets=2)
    slots = store.assign(ids, now=5.0)
    _scramble(store, slots, seed)
    store.owner[slots] = owner
    return store


def _scramble(store: StateStore, slots: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name in ("state", "norm", "forecast", "scale", "scores", "envelope", "last_ts"):
        arr = getattr(store, name)
        arr[slots] = rng.standard_normal(arr[slots].shape)


def _same(a: StateStore, b: StateStore, streams: list[str]) -> None:
    for stream in streams:
        i, j = a.slot(stream), b.slot(stream)
        assert i is not None and j is not None, stream
        for name in ("state", "norm", "scores", "envelope", "forecast"):
            np.testing.assert_array_equal(getattr(a, name)[i], getattr(b, name)[j])


def test_a_store_hands_out_its_changes_per_partition_and_takes_them_back() -> None:
    ids = [f"s{i}" for i in range(11)]
    old = _filled(ids)
    other = old.assign(["elsewhere"], now=5.0)
    old.owner[other] = 1
    rows, gone = old.changes(owner=0)
    assert sorted(old.key[[old.slot(s) for s in ids]].tolist()) == sorted(rows["key"].tolist())
    assert len(gone) == 0
    # nothing changed since: an empty delta; one stream stepped: a delta of one
    assert len(old.changes(owner=0)[0]["key"]) == 0
    _scramble(old, old.assign(["s3"], now=6.0), seed=1)
    delta, _ = old.changes(owner=0)
    assert len(delta["key"]) == 1 and delta["key"][0] == old.key[old.slot("s3")]
    # a full export holds every stream of the partition, changed or not
    assert len(old.changes(owner=0, full=True)[0]["key"]) == 11
    new = StateStore(state_size=6, capacity=2, max_streams=100, n_targets=2)
    assert new.add(rows, owner=7, now=100.0) == 11
    assert new.add(delta, owner=7, now=100.0) == 0  # s3 is held: its live state stays
    _same(old, new, [s for s in ids if s != "s3"])
    assert set(new.owner[[new.slot(s) for s in ids]].tolist()) == {7}
    # streams that arrive later get slots of their own, and nothing restored is overwritten
    before = new.state[[new.slot(s) for s in ids]].copy()
    fresh = new.assign([f"t{i}" for i in range(20)], now=101.0)
    assert len(set(fresh.tolist())) == 20 and not set(fresh.tolist()) & {new.slot(s) for s in ids}
    np.testing.assert_array_equal(new.state[[new.slot(s) for s in ids]], before)


def test_evicted_streams_are_recorded_as_gone_for_their_partition_only() -> None:
    store = StateStore(state_size=2, capacity=8, max_streams=8)
    slots = store.assign(["a", "b", "c"], now=0.0)
    store.owner[slots] = [0, 0, 1]
    store.changes(0)
    store.changes(1)
    key_a = int(store.key[store.slot("a")])
    store.assign(["b", "c"], now=100.0)
    assert store.evict_idle(now=150.0, ttl=60.0) == 1  # "a"
    rows, gone = store.changes(0)
    assert gone.tolist() == [key_a] and "a" not in store
    assert rows["key"].tolist() == [int(store.key[store.slot("b")])]  # b changed
    assert len(store.changes(1)[1]) == 0
    assert len(store.changes(0)[1]) == 0  # said once


def test_a_store_refuses_rows_it_cannot_hold() -> None:
    rows = _filled(["a", "b", "c"]).export()
    wrong = StateStore(state_size=8, n_targets=2)
    with pytest.raises(ValueError, match="state rows of shape"):
        wrong.add(rows, owner=0, now=0.0)
    small = StateStore(state_size=6, capacity=1, max_streams=2, n_targets=2)
    with pytest.raises(ValueError, match="max_streams=2"):
        small.add(rows, owner=0, now=0.0)
    for bad in ([5, 5, 7], [1, 5, 7]):
        with pytest.raises(ValueError, match="reserved values or repeated"):
            StateStore(state_size=6, n_targets=2).add(
                {**rows, "key": np.array(bad, np.uint64)}, owner=0, now=0.0
            )


def test_window_rows_go_into_the_checkpoint_and_must_fit_the_scorer() -> None:
    store = StateStore(state_size=6, n_targets=2)
    store.set_window(100)
    slots = store.assign(["a", "b"], now=0.0)
    store.window[slots, :3] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    store.window_stats[slots, 0] = 3.0
    rows = store.export()
    back = StateStore(state_size=6, n_targets=2)
    back.set_window(100)
    back.add(rows, owner=0, now=1.0)
    np.testing.assert_array_equal(back.window[back.slot("b"), :3], [4.0, 5.0, 6.0])
    with pytest.raises(ValueError, match="do not fit this scorer"):
        back.set_window(200)  # it holds streams now
    other = StateStore(state_size=6, n_targets=2)  # a scorer without the window test
    with pytest.raises(ValueError, match="window rows of shape"):
        other.add(rows, owner=0, now=1.0)
    assert other.window.nbytes == other.window_stats.nbytes == 0  # off: no bytes at all


# -- segments on disk ----------------------------------------------------------------------------


def _chain(tmp_path: Path) -> tuple[checkpoint.Checkpoints, StateStore, list[int]]:
    """A full segment at offset 10, then deltas at 20 and 30 (one changes s1, one evicts s2)."""
    ckpt = checkpoint.Checkpoints(tmp_path)
    store = _filled(["s0", "s1", "s2"])
    part = ("in", 0)
    sizes = [ckpt.write(checkpoint.Job(part, True, 10, MODEL, *store.changes(0, full=True)))]
    _scramble(store, store.assign(["s1"], now=6.0), seed=2)
    sizes.append(ckpt.write(checkpoint.Job(part, False, 20, MODEL, *store.changes(0))))
    store.assign(["s0", "s1"], now=1000.0)
    store.evict_idle(now=1000.0, ttl=60.0)  # s2
    sizes.append(ckpt.write(checkpoint.Job(part, False, 30, MODEL, *store.changes(0))))
    return ckpt, store, sizes


def test_a_full_segment_and_its_deltas_restore_the_latest_state(tmp_path: Path) -> None:
    _ckpt, store, _ = _chain(tmp_path)
    got = checkpoint.Checkpoints(tmp_path).restore(("in", 0), MODEL)
    assert got is not None and (got.offset, got.segments, got.skipped) == (30, 3, [])
    back = StateStore(state_size=6, n_targets=2)
    assert back.add(got.rows, owner=0, now=0.0) == 2
    _same(store, back, ["s0", "s1"])
    assert "s2" not in back
    names = sorted(p.name for p in (tmp_path / "in" / "0").iterdir())
    assert names == [
        "000000000000.full.npz",
        "000000000001.delta.npz",
        "000000000002.delta.npz",
    ]
    assert checkpoint.Checkpoints(tmp_path).restore(("in", 1), MODEL) is None


def test_a_damaged_segment_gives_way_to_the_last_good_state(tmp_path: Path) -> None:
    _ckpt, _store, _ = _chain(tmp_path)
    where = tmp_path / "in" / "0"
    newest = where / "000000000002.delta.npz"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the zip's CRC catches it
    newest.write_bytes(bytes(data))
    got = checkpoint.restore(where, MODEL)
    assert got is not None and got.offset == 20 and got.segments == 2
    assert "000000000002.delta.npz" in got.skipped[0]
    (where / "000000000000.full.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    damaged = r"000000000000\.full\.npz: not a readable"
    with pytest.raises(checkpoint.CheckpointError, match=damaged):
        checkpoint.restore(where, MODEL)


def test_a_newer_full_segment_prunes_all_but_the_chain_before_it(tmp_path: Path) -> None:
    ckpt = checkpoint.Checkpoints(tmp_path)
    ckpt.MIN_FULL_BYTES = 0  # as for a partition of many streams
    store = StateStore(state_size=6, capacity=4, max_streams=1000, n_targets=2)
    ids = [f"s{i}" for i in range(300)]
    slots = store.assign(ids, now=0.0)
    store.owner[slots] = 0
    part, where = ("in", 0), tmp_path / "in" / "0"
    assert ckpt.needs_full(part)  # nothing on disk yet
    ckpt.write(checkpoint.Job(part, True, 10, MODEL, *store.changes(0, full=True)))
    for offset in (20, 30, 40):
        store.assign(ids[offset : offset + 5], now=1.0)
        ckpt.write(checkpoint.Job(part, False, offset, MODEL, *store.changes(0)))
    assert not ckpt.needs_full(part)  # three small deltas weigh less than the full segment
    ckpt.write(checkpoint.Job(part, False, 40, MODEL, *store.changes(0, full=True)))  # a big delta
    assert ckpt.needs_full(part)  # the deltas now outweigh the full segment
    ckpt.write(checkpoint.Job(part, True, 50, MODEL, *store.changes(0, full=True)))
    ckpt.write(checkpoint.Job(part, True, 60, MODEL, *store.changes(0, full=True)))
    assert [s for s, _, _ in checkpoint.segments(where)] == [5, 6]
    # the newest full one damaged: the one before it serves
    (where / "000000000006.full.npz").write_bytes(b"garbage")
    got = checkpoint.restore(where, MODEL)
    assert got is not None and got.offset == 50


def test_segments_of_another_model_are_refused(tmp_path: Path) -> None:
    _chain(tmp_path)
    with pytest.raises(checkpoint.OtherModel, match="written for model m 1, not the one served"):
        checkpoint.restore(tmp_path / "in" / "0", {"name": "m", "version": "2"})


def test_a_crash_mid_write_leaves_no_partial_segment(tmp_path: Path) -> None:
    store = _filled(["a"])
    (tmp_path / "000000000000.full.npz").mkdir()  # the rename onto it fails
    with pytest.raises(OSError):
        data = checkpoint.encode_segment(0, True, 1, MODEL, *store.changes(0, full=True))
        checkpoint.write_segment(tmp_path, 0, True, data)
    assert [p.name for p in tmp_path.iterdir()] == ["000000000000.full.npz"]


# -- config ---------------------------------------------------------------------------------------


def test_the_checkpoint_directory_is_made_or_refused_when_the_daemon_starts(
    tmp_path: Path, model_dir: Path
) -> None:
    """Checked at ``streamwatch run`` only: ``check-config`` runs where the config is written,
    where the daemon's directory need not exist."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "streamwatch.yaml"
    config.write_text(
        f"model: {{path: {model_dir}}}\n"
        "kafka: {bootstrap_servers: '127.0.0.1:1', input_topics: [in]}\n"
        f"state: {{checkpoint_dir: {blocker / 'state'}}}\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "streamwatch", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr
    run = subprocess.run(
        [sys.executable, "-m", "streamwatch", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == ConfigError.exit_code
    assert f"state.checkpoint_dir: cannot create '{blocker / 'state'}'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_old_and_impossible_checkpoint_settings_are_refused_naming_the_key(
    model_dir: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"state\.checkpoint_path: unknown key \(now state\."):
        parse({"model": {"path": str(model_dir)}, "state": {"checkpoint_path": "/x/s.npz"}})
    with pytest.raises(ConfigError, match=r"state\.checkpoint_dir: needs input\.source kafka"):
        parse(
            {
                "model": {"path": str(model_dir)},
                "input": {"source": "file", "path": "-"},
                "state": {"checkpoint_dir": "/x"},
            }
        )


# -- the daemon ----------------------------------------------------------------------------------


def _checkpointing_daemon(
    model_dir: Path,
    records: list[Record],
    where: Path | None,
    batch: int = 97,
    interval: float = 3600.0,
) -> tuple[Daemon, MemorySource, MemorySink, CollectorRegistry]:
    """memory_daemon with every verdict on topic "scores", checkpointing under ``where``
    (None: not at all) every ``interval`` seconds."""
    state: dict[str, object] = {"checkpoint_interval_seconds": interval}
    if where is not None:
        state["checkpoint_dir"] = str(where)
    return memory_daemon(model_dir, records, batch, outputs={"scores_topic": "scores"}, state=state)


def _run(daemon: Daemon) -> None:
    """Run until the in-memory source is empty (it never says so itself), then stop cleanly."""
    source = daemon.source
    assert isinstance(source, MemorySource)
    daemon.run(max_polls=len(source.pending) // source.batch_size + 3)


def _verdicts(sink: MemorySink) -> dict[tuple[str, int, int], dict[str, object]]:
    out = {}
    for m in sink.topic("scores"):
        e = json.loads(m.value)
        out[(e["topic"], e["partition"], e["offset"])] = e
    return out


def _upto(daemon: Daemon, n: int) -> None:
    """Process batches until ``n`` records have been consumed."""
    source = daemon.source
    assert isinstance(source, MemorySource)
    while len(source.log) - len(source.pending) < n:
        daemon.run_once()


def test_after_a_crash_state_resumes_from_the_checkpoint_without_sending_anything_twice(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpointed after 100 readings a stream, killed after 130 (offsets committed past the
    checkpoint), restarted: the checkpoint's state is rebuilt up to the committed offsets
    without output, and every verdict from there equals the uninterrupted run's, the spike at
    150 included (a stream back in warm-up could not flag it)."""
    records = sine_records(length=200, spike_at=150)
    whole, _, whole_sink, _ = _checkpointing_daemon(model_dir, records, None)
    _run(whole)
    expected = _verdicts(whole_sink)

    first, first_source, _, _ = _checkpointing_daemon(model_dir, records, tmp_path)
    _upto(first, 5 * 100)
    first.checkpoint()
    first.wait_checkpoints()
    saved = dict(first._processed)
    _upto(first, 5 * 130)  # ... and then kill -9: no stop, no last checkpoint
    committed = dict(first_source.committed)
    assert all(committed[p] > saved[p] for p in saved)

    second, source, sink, registry = _checkpointing_daemon(model_dir, records, tmp_path)
    source.committed = dict(committed)
    with caplog.at_level(logging.INFO, "streamwatch"):
        _run(second)
    assert source.started[0] == saved  # read again from the checkpoint's offsets
    for (_t, p), offset in saved.items():
        assert (
            f"partition in[{p}]: restored {3 - p} stream(s) as of offset {offset} from 1 "
            f"segment(s); offsets {offset} to {committed[('in', p)]} are read again without "
            "output"
        ) in caplog.text
    after = _verdicts(sink)
    assert sorted(after) == sorted(k for k in expected if k[2] >= committed[(k[0], k[1])])
    for key, e in after.items():
        assert e["anomaly"] == expected[key]["anomaly"], key
        assert e["score"] == pytest.approx(expected[key]["score"], abs=1e-6), key
        assert e["prediction"] == pytest.approx(expected[key]["prediction"], rel=1e-6), key
    assert sum(e["anomaly"] for e in after.values()) >= 3
    rebuilt = registry.get_sample_value("streamwatch_state_rebuilt_records_total")
    assert rebuilt == sum(committed[p] - saved[p] for p in saved)
    assert registry.get_sample_value("streamwatch_state_restored_streams_total") == 5

    # without the checkpoint the same restart would have flagged nothing
    cold, cold_source, cold_sink, _cold_registry = _checkpointing_daemon(model_dir, records, None)
    cold_source.committed = dict(committed)
    _run(cold)
    assert not any(e["anomaly"] for e in _verdicts(cold_sink).values())


def test_checkpoints_are_written_every_interval_and_at_the_stop(
    model_dir: Path, tmp_path: Path
) -> None:
    records = sine_records(length=60)
    daemon, _, _, registry = _checkpointing_daemon(
        model_dir, records, tmp_path / "a", interval=1e-9
    )
    daemon.run(max_polls=3)
    often = checkpoint.segments(tmp_path / "a" / "in" / "0")
    assert len(often) >= 3 and often[0][1] and not any(full for _, full, _ in often[1:])
    daemon, _, _, _ = _checkpointing_daemon(model_dir, records, tmp_path / "b")
    daemon.run(max_polls=3)
    once = checkpoint.segments(tmp_path / "b" / "in" / "0")
    assert len(once) == 1  # at the stop only
    assert registry.get_sample_value("streamwatch_checkpoint_written_bytes_total") > 0


def test_a_revoked_partition_is_saved_and_comes_back_with_its_state(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = sine_records(n_streams=4, length=30)  # s0, s2 on partition 0; s1, s3 on 1
    daemon, source, _, registry = _checkpointing_daemon(model_dir, records, tmp_path)
    while daemon.run_once():
        pass
    store = daemon.engine.store
    kept = {s: store.state[store.slot(s)].copy() for s in ("s1", "s3")}
    source.revoke({("in", 1)})
    daemon.run_once()
    daemon.wait_checkpoints()
    assert "s1" not in store and "s0" in store
    (segment,) = checkpoint.segments(tmp_path / "in" / "1")
    assert checkpoint.read_segment(segment[2]).offset == 60
    source.parts.add(("in", 1))  # the group hands it back
    source._events.append(checkpoint_event("assigned", {("in", 1)}))
    readiness = []
    add = store.add

    def watched_add(*args: object, **kwargs: object) -> int:
        readiness.append(daemon.health.ready()[1])
        return add(*args, **kwargs)  # type: ignore[arg-type]

    store.add = watched_add  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, "streamwatch"):
        daemon.run_once()
    assert readiness == ["waiting for state"]  # not ready while restoring ...
    assert daemon.health.ready() == (True, "ready")  # ... and ready after
    assert "partition in[1]: restored 2 stream(s) as of offset 60 from 1 segment(s)" in (
        caplog.text
    )
    for stream, state in kept.items():
        np.testing.assert_array_equal(store.state[store.slot(stream)], state)
    assert registry.get_sample_value("streamwatch_state_cold_starts_total", {"reason": "none"}) == 2


def checkpoint_event(kind: str, parts: set[tuple[str, int]]) -> object:
    from streamwatch.sources import PartitionEvent

    return PartitionEvent(kind, frozenset(parts))  # type: ignore[arg-type]


def test_no_checkpoint_after_a_failed_batch(model_dir: Path, tmp_path: Path) -> None:
    daemon, _, sink, _ = _checkpointing_daemon(model_dir, sine_records(length=60), tmp_path)

    def refuse(msg: object) -> None:
        raise SourceError("sending to 'scores' failed: refused")

    sink.send = refuse  # type: ignore[method-assign]
    with pytest.raises(SourceError):
        daemon.run()
    # its readings are in the state, not in the offsets: a checkpoint would step them twice
    assert not list(tmp_path.rglob("*.npz"))


def test_a_checkpoint_that_cannot_be_written_is_logged_counted_and_the_run_goes_on(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0").write_text("")  # a file where partition 0's directory goes
    records = sine_records(length=60)
    daemon, _, sink, registry = _checkpointing_daemon(model_dir, records, tmp_path, interval=1e-9)
    with caplog.at_level(logging.INFO, "streamwatch"):
        _run(daemon)
    assert "checkpoints not written (the last good ones stay): in[0]:" in caplog.text
    assert registry.get_sample_value("streamwatch_checkpoint_failures_total") >= 2
    assert len(_verdicts(sink)) == len(records)  # every reading scored all the same
    # partition 1 was written, in full each time only at first
    assert checkpoint.segments(tmp_path / "in" / "1")[0][1]


def test_a_partition_whose_records_after_the_checkpoint_are_gone_starts_afresh(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention deleted the records after partition 1's checkpoint while it was away: the
    state would skip readings, so its streams start afresh (counted); partition 0's continue."""
    records = sine_records(length=200, spike_at=150)
    first, _, _, _ = _checkpointing_daemon(model_dir, records[: 5 * 120], tmp_path)
    _run(first)  # the stop checkpoints both partitions: 0 at 360, 1 at 240
    rest = [r for r in records if r.partition == 0] + [
        r for r in records if r.partition == 1 and r.offset >= 244
    ]
    second, _, sink, registry = _checkpointing_daemon(model_dir, rest, tmp_path)
    with caplog.at_level(logging.INFO, "streamwatch"):
        _run(second)
    assert (
        "partition in[1] resumes at offset 244, its checkpoint at 240: the records between are "
        "gone, so its 2 restored stream(s) start afresh"
    ) in caplog.text
    assert registry.get_sample_value("streamwatch_state_cold_starts_total", {"reason": "gap"}) == 1
    flagged = {e["stream"] for e in _verdicts(sink).values() if e["anomaly"]}
    assert {"s0", "s2", "s4"} <= flagged  # partition 0's streams (even ones) kept their state
    assert not flagged & {"s1", "s3"}  # partition 1's are back in warm-up (and not spiked)


def test_the_writer_writes_no_delta_on_a_segment_that_failed(tmp_path: Path) -> None:
    """Rounds are decided before the writer reports: a delta queued behind a full segment that
    failed would restore a state that never was, so it is refused until a full one lands."""
    store = _filled(["a", "b"])
    ckpt = checkpoint.Checkpoints(tmp_path)
    rounds: list[tuple[int, list[tuple[tuple[str, int], str]]]] = []
    writer = checkpoint.Writer(ckpt, lambda size, _s, failed, _log: rounds.append((size, failed)))
    part = ("in", 0)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0").write_text("")  # the partition's directory cannot be made
    full = checkpoint.Job(part, True, 10, MODEL, *store.changes(0, full=True))
    delta = checkpoint.Job(part, False, 20, MODEL, *store.changes(0))
    writer.submit([full])
    writer.submit([delta])
    writer.wait()
    assert [len(f) for _, f in rounds] == [1, 0] and list(writer.failed) == [part, part]
    (tmp_path / "in" / "0").unlink()
    writer.submit([delta])  # still no full segment: refused
    writer.submit([checkpoint.Job(part, True, 30, MODEL, *store.changes(0, full=True))])
    writer.submit([checkpoint.Job(part, False, 40, MODEL, *store.changes(0))])
    writer.close()
    assert [(s, full) for s, full, _ in checkpoint.segments(tmp_path / "in" / "0")] == [
        (0, True),
        (1, False),
    ]
    got = checkpoint.restore(tmp_path / "in" / "0", MODEL)
    assert got is not None and got.offset == 40


def test_partitions_waiting_for_state_are_exported_while_restored_and_rebuilt(
    model_dir: Path, tmp_path: Path
) -> None:
    """streamwatch_state_pending_partitions: each partition counts from its assignment until
    its state is restored and rebuilt up to the committed offset."""
    records = sine_records(length=60)
    first, first_source, _, _ = _checkpointing_daemon(model_dir, records, tmp_path)
    _upto(first, 5 * 20)
    first.checkpoint()
    first.wait_checkpoints()
    _upto(first, 5 * 40)  # committed past the checkpoint: the restart rebuilds
    second, source, _, registry = _checkpointing_daemon(model_dir, records, tmp_path)
    source.committed = dict(first_source.committed)
    pending = "streamwatch_state_pending_partitions"
    seen: list[float | None] = []
    restore = second._restore

    def watched(part: tuple[str, int], committed: int | None) -> int | None:
        seen.append(registry.get_sample_value(pending))  # what a scrape now would read
        return restore(part, committed)

    second._restore = watched  # type: ignore[method-assign]
    second.run_once()
    assert seen == [2.0, 2.0]  # the first one restored, now to rebuild; the second to restore
    assert registry.get_sample_value(pending) == 2.0  # both rebuilding
    while second._quiet:
        second.run_once()
    assert registry.get_sample_value(pending) == 0.0

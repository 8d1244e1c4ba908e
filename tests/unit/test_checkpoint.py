"""State snapshots across restarts: the store's rows, the file, and the daemon's resume rule."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamwatch import checkpoint
from streamwatch.config import parse
from streamwatch.daemon import Daemon
from streamwatch.engine import Engine
from streamwatch.errors import ConfigError, SourceError
from streamwatch.metrics import Metrics
from streamwatch.model import load_model
from streamwatch.records import Record
from streamwatch.sinks.memory import MemorySink
from streamwatch.sources.memory import MemorySource
from streamwatch.state import StateStore

from .test_daemon import _records

# -- the store's rows ----------------------------------------------------------------------------


def _filled(ids: list[str], seed: int = 0) -> StateStore:
    store = StateStore(state_size=6, capacity=4, max_streams=100, n_targets=2)
    slots = store.assign(ids, now=5.0)
    rng = np.random.default_rng(seed)
    for name in ("state", "norm", "forecast", "scale", "scores", "envelope", "last_ts"):
        arr = getattr(store, name)
        arr[slots] = rng.standard_normal(arr[slots].shape)
    store.owner[slots] = np.arange(len(ids)) % 3
    return store


def test_a_store_takes_back_exactly_the_streams_it_gave() -> None:
    ids = [f"s{i}" for i in range(11)]
    old = _filled(ids)
    old.assign(["gone"], now=6.0)
    rows = old.export()
    new = StateStore(state_size=6, capacity=2, max_streams=100, n_targets=2)
    assert new.restore(rows, now=100.0) == 12
    for stream in [*ids, "gone"]:
        a, b = old.slot(stream), new.slot(stream)
        assert b is not None
        for name in ("state", "norm", "scores", "envelope", "owner"):
            np.testing.assert_array_equal(getattr(new, name)[b], getattr(old, name)[a])
    # streams that arrive later get slots of their own, and nothing restored is overwritten
    before = new.state[: len(new)].copy()
    fresh = new.assign([f"t{i}" for i in range(20)], now=101.0)
    assert len(set(fresh.tolist())) == 20
    assert not set(fresh.tolist()) & {new.slot(s) for s in ids}
    np.testing.assert_array_equal(new.state[: len(before)], before)
    assert len(new) == 32


def test_a_store_refuses_rows_it_cannot_hold() -> None:
    rows = _filled(["a", "b", "c"]).export()
    busy = _filled(["x"])
    with pytest.raises(ValueError, match="already holds"):
        busy.restore(rows, now=0.0)
    wrong = StateStore(state_size=8, n_targets=2)
    with pytest.raises(ValueError, match="state rows of shape"):
        wrong.restore(rows, now=0.0)
    small = StateStore(state_size=6, capacity=1, max_streams=2, n_targets=2)
    with pytest.raises(ValueError, match="max_streams=2"):
        small.restore(rows, now=0.0)


# -- the file ------------------------------------------------------------------------------------


def test_a_damaged_snapshot_is_refused_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "state.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(checkpoint.CheckpointError, match=r"state\.npz: not a readable"):
        checkpoint.read(bad)
    with pytest.raises(FileNotFoundError):
        checkpoint.read(tmp_path / "none.npz")


def test_the_checkpoint_directory_must_exist_when_the_daemon_starts(
    tmp_path: Path, model_dir: Path
) -> None:
    """Checked at ``streamwatch run`` only: ``check-config`` runs where the config is written,
    where the daemon's directory need not exist."""
    config = tmp_path / "streamwatch.yaml"
    missing = tmp_path / "no" / "state.npz"
    config.write_text(
        f"model: {{path: {model_dir}}}\ninput: {{source: file}}\n"
        f"state: {{checkpoint_path: {missing}}}\n"
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
    assert f"state.checkpoint_path: no directory '{missing.parent}'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


# -- the daemon ----------------------------------------------------------------------------------


def _daemon(
    model_dir: Path, records: list[Record], path: Path | None, batch: int = 97
) -> tuple[Daemon, MemorySource, MemorySink, CollectorRegistry]:
    cfg = parse(
        {
            "kafka": {"bootstrap_servers": "unused:9092", "input_topics": ["in"]},
            "model": {"path": str(model_dir)},
            "scoring": {"warmup": 50},
            "outputs": {"scores_topic": "scores"},
            "state": {"checkpoint_path": None if path is None else str(path)},
        }
    )
    model = load_model(model_dir)
    engine = Engine(model, StateStore(model.spec.state_size), cfg.scoring.scorer())
    source, sink, registry = MemorySource(records, batch), MemorySink(), CollectorRegistry()
    daemon = Daemon(cfg, source, sink, engine, model.spec, Metrics(registry), clock=lambda: 2e9)
    return daemon, source, sink, registry


def _run(daemon: Daemon) -> None:
    """Run until the in-memory source is empty (it never says so itself), then stop cleanly."""
    source = daemon.source
    assert isinstance(source, MemorySource)
    daemon.run(max_polls=len(source.pending) // source.batch_size + 2)


def _verdicts(sink: MemorySink) -> dict[tuple[str, int, int], dict[str, object]]:
    out = {}
    for m in sink.topic("scores"):
        e = json.loads(m.value)
        out[(e["topic"], e["partition"], e["offset"])] = e
    return out


def test_a_restart_continues_every_stream_as_if_it_had_never_stopped(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = _records(length=200, spike_at=150)
    cut = 5 * 120  # after 120 readings of each stream: 70 past warm-up, 30 before the spike
    path = tmp_path / "state.npz"
    whole, _, whole_sink, _ = _daemon(model_dir, records, None)
    _run(whole)
    first, _, _, _ = _daemon(model_dir, records[:cut], path)
    _run(first)
    assert path.exists()
    second, _, sink, _ = _daemon(model_dir, records[cut:], path)
    with caplog.at_level(logging.INFO, "streamwatch"):
        assert second.restore() == 5
        _run(second)
    assert "partition in[0] resumes at offset 360: its state continues" in caplog.text
    after, expected = _verdicts(sink), _verdicts(whole_sink)
    assert len(after) == len(records) - cut
    for key, e in after.items():
        assert e["anomaly"] == expected[key]["anomaly"], key
        assert e["score"] == pytest.approx(expected[key]["score"], abs=1e-4), key
        assert e["prediction"] == pytest.approx(expected[key]["prediction"], rel=1e-4), key
    # the spike right after the restart is flagged: no stream went back into warm-up
    assert sum(e["anomaly"] for e in after.values()) >= 3
    # and without the snapshot it would not have been
    cold, _, cold_sink, _ = _daemon(model_dir, records[cut:], None)
    _run(cold)
    assert not any(e["anomaly"] for e in _verdicts(cold_sink).values())


def test_a_partition_that_resumes_elsewhere_starts_afresh_and_the_others_continue(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = _records(length=200, spike_at=150)
    cut = 5 * 120
    path = tmp_path / "state.npz"
    first, _, _, _ = _daemon(model_dir, records[:cut], path)
    _run(first)
    # partition 1 lost its first 4 records after the snapshot (say, another member took them)
    rest = [r for r in records[cut:] if r.partition == 0] + [
        r for r in records[cut:] if r.partition == 1
    ][4:]
    second, _, sink, registry = _daemon(model_dir, rest, path)
    with caplog.at_level(logging.INFO, "streamwatch"):
        second.restore()
        _run(second)
    assert "partition in[1] resumes at offset 244, the snapshot at 240: its 2 restored" in (
        caplog.text
    )
    evicted = registry.get_sample_value(
        "streamwatch_stream_evictions_total", {"reason": "stale_snapshot"}
    )
    assert evicted == 2
    flagged = {e["stream"] for e in _verdicts(sink).values() if e["anomaly"]}
    assert {"s0", "s2", "s4"} <= flagged  # partition 0's streams (even ones) kept their state
    assert not flagged & {"s1", "s3"}  # partition 1's are back in warm-up (and not spiked)


def test_a_snapshot_of_another_model_or_a_damaged_one_is_passed_over(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = _records(length=120)
    path = tmp_path / "state.npz"
    first, _, _, _ = _daemon(model_dir, records, path)
    _run(first)
    second, _, _, _ = _daemon(model_dir, [], path)
    second.spec = dataclasses.replace(second.spec, version="other")
    with caplog.at_level(logging.INFO, "streamwatch"):
        assert second.restore() == 0
    assert f"state not restored: {path} was written for model" in caplog.text
    assert len(second.engine.store) == 0
    path.write_bytes(b"garbage")
    third, _, _, _ = _daemon(model_dir, [], path)
    with caplog.at_level(logging.INFO, "streamwatch"):
        assert third.restore() == 0
    assert "not a readable state snapshot" in caplog.text


def test_no_snapshot_after_a_failed_batch(model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    daemon, _, sink, _ = _daemon(model_dir, _records(length=60), path)

    def refuse(msg: object) -> None:
        raise SourceError("sending to 'scores' failed: refused")

    sink.send = refuse  # type: ignore[method-assign]
    with pytest.raises(SourceError):
        daemon.run()
    # its readings are in the state, not in the offsets: a snapshot would refuse their replay
    assert not path.exists()


def test_a_snapshot_that_cannot_be_written_is_logged_and_leaves_no_partial_file(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.npz"
    path.mkdir()  # the rename onto it fails, after the temporary file was written
    daemon, _, _, _ = _daemon(model_dir, _records(length=60), path)
    with caplog.at_level(logging.INFO, "streamwatch"):
        _run(daemon)
    assert f"state snapshot not written to {path}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]


def test_a_store_refuses_keys_that_are_reserved_or_repeated() -> None:
    rows = _filled(["a", "b", "c"]).export()
    for bad in ([5, 5, 7], [1, 5, 7]):
        wrong = {**rows, "key": np.array(bad, np.uint64)}
        with pytest.raises(ValueError, match="reserved values or repeated"):
            StateStore(state_size=6, n_targets=2).restore(wrong, now=0.0)


def test_window_rows_go_into_the_snapshot_and_must_fit_the_scorer() -> None:
    store = StateStore(state_size=6, n_targets=2)
    store.set_window(100)
    slots = store.assign(["a", "b"], now=0.0)
    store.window[slots, :3] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    store.window_stats[slots, 0] = 3.0
    rows = store.export()
    back = StateStore(state_size=6, n_targets=2)
    back.set_window(100)
    back.restore(rows, now=1.0)
    np.testing.assert_array_equal(back.window[back.slot("b"), :3], [4.0, 5.0, 6.0])
    with pytest.raises(ValueError, match="do not fit this scorer"):
        back.set_window(200)  # it holds streams now
    other = StateStore(state_size=6, n_targets=2)  # a scorer without the window test
    with pytest.raises(ValueError, match="window rows of shape"):
        other.restore(rows, now=1.0)
    assert other.window.nbytes == other.window_stats.nbytes == 0  # off: no bytes at all

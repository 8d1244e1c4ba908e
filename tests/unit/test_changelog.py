"""The changelog's record format: rounds, their markers, and what a restore may trust."""

from __future__ import annotations

import numpy as np
import pytest

from streamwatch import changelog
from streamwatch.changelog import ChangelogError, ChangelogOtherModel, fold

MODEL = {"name": "m", "version": "1"}


def _rows(keys: list[int], value: float) -> dict[str, np.ndarray]:
    n = len(keys)
    return {
        "key": np.array(keys, np.uint64),
        "state": np.full((n, 4), value, np.float32),
        "last_ts": np.full(n, value),
    }


def _round(
    topic: str,
    offset: int,
    base: int,
    rows: dict[str, np.ndarray],
    streams: int,
    gone: tuple[int, ...] = (),
    marker: bool = True,
) -> list[tuple[bytes, bytes | None]]:
    keys, values, dtype = changelog.encode_rows(topic, offset, rows)
    out: list[tuple[bytes, bytes | None]] = list(zip(keys, values, strict=True))
    out += [(k, None) for k in changelog.tombstone_keys(topic, np.array(gone, np.uint64))]
    if marker:
        value = changelog.encode_marker(offset, base, streams, MODEL, dtype)
        out.append((changelog.marker_key(topic), value))
    return out


def _compact(records: list[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes | None]]:
    """What log compaction leaves: the last record of every key, in log order (tombstones
    kept, as within delete.retention.ms)."""
    last = {k: i for i, (k, _) in enumerate(records)}
    return [r for i, r in enumerate(records) if last[r[0]] == i]


def test_a_full_round_then_deltas_fold_to_the_latest_state_before_and_after_compaction() -> None:
    log = _round("in", 100, 100, _rows([5, 6, 7], 1.0), 3)
    log += _round("in", 150, 100, _rows([6], 2.0), 2, gone=(7,))
    log += _round("in", 180, 100, _rows([8], 3.0), 3)
    for records in (log, _compact(log)):
        got = fold(records, "in", MODEL)
        assert got is not None
        assert (got.offset, got.base) == (180, 100)
        order = np.argsort(got.rows["key"])
        assert got.rows["key"][order].tolist() == [5, 6, 8]
        assert got.rows["state"][order][:, 0].tolist() == [1.0, 2.0, 3.0]
        assert got.rows["last_ts"][order].tolist() == [1.0, 2.0, 3.0]
        assert got.rows["state"].shape == (3, 4)


def test_a_round_cut_short_before_its_marker_is_passed_over() -> None:
    log = _round("in", 100, 100, _rows([5, 6], 1.0), 2)
    log += _round("in", 150, 100, _rows([6, 9], 2.0), 3, gone=(5,), marker=False)
    got = fold(log, "in", MODEL)
    assert got is not None and got.offset == 100
    assert sorted(got.rows["key"].tolist()) == [5, 6]
    assert got.rows["state"][:, 0].tolist() == [1.0, 1.0]


def test_rows_a_cut_short_round_compacted_away_refuse_the_changelog_rather_than_lie() -> None:
    log = _round("in", 100, 100, _rows([5, 6], 1.0), 2)
    log += _round("in", 150, 100, _rows([6], 2.0), 2, marker=False)
    with pytest.raises(ChangelogError, match="marker counts 2"):
        fold(_compact(log), "in", MODEL)  # stream 6's row of the round at 100 is gone


def test_rows_older_than_the_last_full_round_are_left_overs() -> None:
    """A full round rewrites every live stream; a stream dropped without a tombstone (its
    state lost with a member) must not come back from an older round."""
    log = _round("in", 100, 100, _rows([5, 6], 1.0), 2)
    log += _round("in", 200, 200, _rows([6], 2.0), 1)
    got = fold(_compact(log), "in", MODEL)
    assert got is not None and got.rows["key"].tolist() == [6]


def test_the_input_topics_sharing_a_changelog_partition_are_kept_apart() -> None:
    log = _round("a", 10, 10, _rows([5], 1.0), 1) + _round("b", 20, 20, _rows([5, 6], 2.0), 2)
    a, b = fold(log, "a", MODEL), fold(log, "b", MODEL)
    assert a is not None and b is not None
    assert (a.offset, a.rows["key"].tolist()) == (10, [5])
    assert (b.offset, sorted(b.rows["key"].tolist())) == (20, [5, 6])
    assert fold(log, "c", MODEL) is None


def test_another_models_changelog_is_refused() -> None:
    log = _round("in", 100, 100, _rows([5], 1.0), 1)
    with pytest.raises(ChangelogOtherModel, match="not the one served"):
        fold(log, "in", {"name": "m", "version": "2"})


def test_a_marker_that_is_not_json_is_refused() -> None:
    with pytest.raises(ChangelogError, match="not JSON"):
        fold([(changelog.marker_key("in"), b"{")], "in", MODEL)


def test_a_record_is_a_stream_so_it_stays_far_below_the_brokers_message_limit() -> None:
    rows = {
        "key": np.array([2], np.uint64),
        "state": np.zeros((1, 2 * 2 * 2 * 128), np.float32),  # 2 layers of 128, h and c
        "window": np.zeros((1, 256), np.float32),
    }
    keys, values, _ = changelog.encode_rows("in", 1, rows)
    assert len(values[0]) < 8 * 1024 < 1_000_000 and len(keys[0]) < 100

"""The changelog's record format: segment chains in chunks, their markers, and what a restore
may trust."""

from __future__ import annotations

import numpy as np
import pytest

from streamwatch import changelog, checkpoint
from streamwatch.changelog import ChangelogError, ChangelogOtherModel, Link, fold

MODEL = {"name": "m", "version": "1"}
Records = list[tuple[bytes, bytes | None]]


def _rows(keys: list[int], value: float, width: int = 4) -> dict[str, np.ndarray]:
    n = len(keys)
    return {"key": np.array(keys, np.uint64), "state": np.full((n, width), value, np.float32)}


class _Log:
    """A changelog partition written as ``changelog_kafka.Changelog`` writes it."""

    def __init__(self, topic: str = "in") -> None:
        self.topic, self.records, self.chain = topic, [], []  # type: ignore[var-annotated]

    def round(
        self,
        offset: int,
        full: bool,
        rows: dict[str, np.ndarray],
        gone: tuple[int, ...] = (),
        marker: bool = True,
        model: dict[str, object] = MODEL,
    ) -> None:
        data = checkpoint.encode_segment(0, full, offset, model, rows, np.array(gone, np.uint64))
        pieces = changelog.chunks(data)
        link = Link(changelog.new_id(), len(pieces), len(data))
        self.records += [
            (changelog.chunk_key(self.topic, link.sid, i), v) for i, v in enumerate(pieces)
        ]
        if not marker:
            return
        old, self.chain = self.chain, [link] if full else [*self.chain, link]
        value = changelog.encode_marker(offset, self.chain, model)
        self.records.append((changelog.marker_key(self.topic), value))
        if full:
            self.records += [(k, None) for o in old for k in changelog.link_keys(self.topic, o)]


def _compact(records: Records) -> Records:
    """What log compaction leaves: the last record of every key, in log order (tombstones
    kept, as within delete.retention.ms)."""
    last = {k: i for i, (k, _) in enumerate(records)}
    return [r for i, r in enumerate(records) if last[r[0]] == i]


def _state(got: changelog.Folded | None) -> dict[int, float]:
    assert got is not None
    return dict(zip(got.rows["key"].tolist(), got.rows["state"][:, 0].tolist(), strict=True))


def test_a_full_segment_and_its_deltas_fold_to_the_latest_state_before_and_after_compaction():
    log = _Log()
    log.round(100, True, _rows([5, 6, 7], 1.0))
    log.round(150, False, _rows([6], 2.0), gone=(7,))
    log.round(180, False, _rows([8], 3.0))
    for records in (log.records, _compact(log.records)):
        got = fold(records, "in", MODEL)
        assert _state(got) == {5: 1.0, 6: 2.0, 8: 3.0}
        assert got is not None and got.offset == 180 and got.strays == []


def test_a_new_full_chain_replaces_the_old_one_whose_chunks_compaction_then_drops() -> None:
    log = _Log()
    log.round(100, True, _rows([5, 6], 1.0))
    log.round(150, False, _rows([6], 2.0))
    log.round(200, True, _rows([6, 9], 4.0))
    compacted = _compact(log.records)
    assert len(compacted) < len(log.records)
    assert _state(fold(compacted, "in", MODEL)) == {6: 4.0, 9: 4.0}


def test_a_state_larger_than_a_chunk_travels_in_several_and_comes_back_whole() -> None:
    log = _Log()
    rows = _rows(list(range(2, 2002)), 7.0, width=128)  # 1 MB of state: two chunks or more
    log.round(10, True, rows)
    assert sum(1 for k, _ in log.records if b"\x00c\x00" in k) >= 2
    got = fold(_compact(log.records), "in", MODEL)
    assert got is not None and np.array_equal(got.rows["state"], rows["state"])
    assert all(len(v or b"") <= changelog.CHUNK_BYTES for _, v in log.records)


def test_a_round_cut_short_before_its_marker_is_passed_over_and_its_chunks_are_strays() -> None:
    log = _Log()
    log.round(100, True, _rows([5, 6], 1.0))
    log.round(150, False, _rows([6, 9], 2.0), gone=(5,), marker=False)
    got = fold(log.records, "in", MODEL)
    assert _state(got) == {5: 1.0, 6: 1.0}
    assert got is not None and got.offset == 100 and len(got.strays) == 1


def test_a_chain_missing_a_chunk_refuses_the_changelog_rather_than_lie() -> None:
    log = _Log()
    log.round(100, True, _rows([5, 6], 1.0))
    missing = [r for r in log.records if b"\x00c\x00" not in r[0]]
    with pytest.raises(ChangelogError, match="lacks 1 of its 1 chunk"):
        fold(missing, "in", MODEL)


def test_a_damaged_chunk_fails_the_segments_checksum() -> None:
    log = _Log()
    log.round(100, True, _rows([5, 6], 1.0))
    key, value = log.records[0]
    assert value is not None
    damaged = value[:-40] + bytes(b ^ 0xFF for b in value[-40:-20]) + value[-20:]
    with pytest.raises(ChangelogError):
        fold([(key, damaged), *log.records[1:]], "in", MODEL)


def test_the_input_topics_sharing_a_changelog_partition_are_kept_apart() -> None:
    a, b = _Log("a"), _Log("b")
    a.round(10, True, _rows([5], 1.0))
    b.round(20, True, _rows([5, 6], 2.0))
    records = a.records + b.records
    assert _state(fold(records, "a", MODEL)) == {5: 1.0}
    assert _state(fold(records, "b", MODEL)) == {5: 2.0, 6: 2.0}
    assert fold(records, "c", MODEL) is None


def test_another_models_changelog_is_refused() -> None:
    log = _Log()
    log.round(100, True, _rows([5], 1.0))
    with pytest.raises(ChangelogOtherModel, match="not the one served"):
        fold(log.records, "in", {"name": "m", "version": "2"})


def test_a_marker_that_is_not_json_is_refused() -> None:
    with pytest.raises(ChangelogError, match="does not say what it must"):
        fold([(changelog.marker_key("in"), b"{")], "in", MODEL)

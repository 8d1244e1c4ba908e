from __future__ import annotations

import os

import numpy as np

from streamwatch.slotindex import SlotIndex, hashes
from streamwatch.state import StateStore


def test_agrees_with_a_dict_through_inserts_deletes_and_rebuilds() -> None:
    rng = np.random.default_rng(0)
    index, model = SlotIndex(8), {}
    keys = [int(k) for k in hashes([f"stream-{i}" for i in range(5000)])]
    for step in range(20000):
        key = keys[int(rng.integers(len(keys)))]
        if key in model and rng.random() < 0.4:
            index.delete(key)
            del model[key]
        elif key not in model:
            index.insert(key, step)
            model[key] = step
        if step % 997 == 0:
            probe = np.array(keys, np.uint64)
            expected = [model.get(k, -1) for k in keys]
            assert index.lookup(probe).tolist() == expected
            assert [index.get(k) for k in keys[:50]] == expected[:50]
    assert len(index) == len(model)
    assert 2 * index.used <= len(index.keys)  # load factor kept at or under one half


def test_reserved_values_are_never_keys() -> None:
    h = hashes(["x"] * 3)
    assert (h >= 2).all() and len(set(h.tolist())) == 1


def test_store_agrees_with_a_dict_model_under_churn() -> None:
    """Streams come, go idle and are evicted at capacity: every live stream keeps one slot
    of its own, and no two live streams share one."""
    rng = np.random.default_rng(1)
    store = StateStore(state_size=2, capacity=4, max_streams=300)
    for t in range(200):
        ids = [f"s{int(i)}" for i in rng.integers(0, 1000, 64)]
        slots = store.assign(ids, now=float(t))
        by_id = dict(zip(ids, slots.tolist(), strict=True))
        assert len(set(by_id.values())) == len(by_id)  # distinct streams, distinct slots
        assert all(store.slot(s) == by_id[s] for s in by_id)
        if t % 50 == 49:
            store.evict_idle(now=float(t), ttl=10.0)
    assert len(store) <= 300 and store.evicted_lru > 0
    live = np.flatnonzero(store.key)
    assert len(live) == len(store) and len(set(store.key[live].tolist())) == len(live)


def test_keys_are_the_same_in_every_process() -> None:
    """State snapshots outlive the process, so keys must not follow Python's salted hash."""
    import subprocess
    import sys

    ids = ["host-1.cpu", "", "é\u4e2d", "x" * 65, "x" * 64, "\ud800"]
    code = f"from streamwatch.slotindex import hashes; print(hashes({ids!r}).tolist())"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "random")
    }
    assert runs == {f"{hashes(ids).tolist()}\n"}
    assert len(set(hashes(ids).tolist())) == len(ids)
    # an id hashes alike whatever else is in its batch
    assert hashes(["ab", "y" * 70, "abc"])[0] == hashes(["ab"])[0]
    assert hashes(["y" * 70, "q"])[0] == hashes(["z", "y" * 70])[1]

from __future__ import annotations

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

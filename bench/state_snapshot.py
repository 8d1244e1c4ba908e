#!/usr/bin/env python3
"""Time to write and restore a state snapshot (``state.checkpoint_path``) at 1,000,000 streams.

    .venv/bin/python bench/state_snapshot.py [--streams 1000000] [--hidden 64] [--dir /tmp]

Fills a StateStore as bench/state_memory.py does, writes the snapshot the daemon writes at a
clean stop, reads it back and restores it into an empty store, as the next start does; prints
the file size and the seconds of each step, and checks that every stream came back.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from streamwatch import checkpoint
from streamwatch.model.artifact import ModelSpec
from streamwatch.normalize import Normalizer
from streamwatch.slotindex import hashes
from streamwatch.state import StateStore


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=1_000_000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = p.parse_args()
    spec = ModelSpec("m", "1", ("value",), ("value",), 1, args.hidden, Normalizer(), "")
    n = args.streams
    store = StateStore.for_model(spec, max_streams=n)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for start in range(0, n, 5000):
        ids = [f"host-{i:06d}.cpu" for i in range(start, min(start + 5000, n))]
        slots = store.assign(ids, now=0.0)
        store.state[slots] = rng.standard_normal((len(slots), store.state_size))
        store.owner[slots] = np.arange(len(slots)) % 12
    print(f"{n:,} streams, LSTM 1x{args.hidden}: filled in {time.perf_counter() - t:.1f} s")
    owners = {("readings", p): p for p in range(12)}
    offsets = {part: 1000 for part in owners}
    path = args.dir / "streamwatch-bench-state.npz"
    try:
        t = time.perf_counter()
        written = checkpoint.write(path, store, spec, owners, offsets)
        wrote = time.perf_counter() - t
        size = path.stat().st_size
        t = time.perf_counter()
        snap = checkpoint.read(path)
        read = time.perf_counter() - t
        t = time.perf_counter()
        fresh = StateStore.for_model(spec, max_streams=n)
        restored = fresh.restore(snap.rows, now=0.0)
        rebuilt = time.perf_counter() - t
    finally:
        path.unlink(missing_ok=True)
    assert written == restored == n
    probe = [f"host-{i:06d}.cpu" for i in range(0, n, max(1, n // 1000))]
    keys = hashes(probe)
    a, b = store.index.lookup(keys), fresh.index.lookup(keys)
    assert np.array_equal(store.state[a], fresh.state[b])
    print(f"snapshot {size / 1e6:,.0f} MB ({size / n:,.0f} B/stream)")
    print(f"write {wrote:.2f} s, read {read:.2f} s, restore into an empty store {rebuilt:.2f} s")


if __name__ == "__main__":
    main()

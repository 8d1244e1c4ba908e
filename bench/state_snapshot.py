#!/usr/bin/env python3
"""Time to checkpoint and restore stream state (``state.checkpoint_dir``) at 1,000,000 streams.

    .venv/bin/python bench/state_snapshot.py [--streams 1000000] [--hidden 64] [--window 0]
        [--partitions 12] [--changed 0.01] [--dir /tmp] [--changelog HOST:PORT]

Fills a StateStore as bench/state_memory.py does, over ``--partitions`` input partitions;
writes a full checkpoint of every partition (what the first round after an assignment does),
then changes ``--changed`` of the streams and writes the deltas (what each later round does),
then restores every partition into an empty store, as a restart or an assignment does.  Prints
bytes per stream and the seconds of each step, and checks that every stream came back with
its latest state.  ``--window 2100`` sizes the rows for the scorer's window test.

``--changelog`` names a broker (``deploy/kafka/localkafka.py start`` gives one): the same full
round and deltas also go to a new changelog topic (``state.changelog_topic``), and every
partition is restored from it as a member that is handed the partitions does, timed beside
the restore from disk.
"""

from __future__ import annotations

import argparse
import shutil
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
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--changed", type=float, default=0.01)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--changelog", metavar="HOST:PORT", help="also time the changelog on it")
    args = p.parse_args()
    spec = ModelSpec("m", "1", ("value",), ("value",), 1, args.hidden, Normalizer(), "")
    model = checkpoint.model_identity(spec)
    n, parts = args.streams, [("readings", p) for p in range(args.partitions)]
    store = StateStore.for_model(spec, max_streams=n)
    store.set_window(args.window)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    ids = [f"host-{i:06d}.cpu" for i in range(n)]
    for start in range(0, n, 5000):
        slots = store.assign(ids[start : start + 5000], now=0.0)
        store.state[slots] = rng.standard_normal((len(slots), store.state_size))
        store.owner[slots] = np.arange(start, start + len(slots)) % len(parts)
    print(
        f"{n:,} streams, LSTM 1x{args.hidden}, window {args.window}, {len(parts)} partitions: "
        f"filled in {time.perf_counter() - t:.1f} s"
    )
    root = args.dir / "streamwatch-bench-checkpoints"
    shutil.rmtree(root, ignore_errors=True)
    try:
        ckpt = checkpoint.Checkpoints(root)
        t = time.perf_counter()
        full = sum(
            ckpt.write(checkpoint.Job(part, True, 1000, model, *store.changes(i, full=True)))
            for i, part in enumerate(parts)
        )
        wrote_full = time.perf_counter() - t
        changed = rng.choice(n, int(n * args.changed), replace=False)
        slots = store.assign([ids[i] for i in changed.tolist()], now=1.0)
        store.state[slots] += 1.0
        t = time.perf_counter()
        delta = sum(
            ckpt.write(checkpoint.Job(part, False, 2000, model, *store.changes(i)))
            for i, part in enumerate(parts)
        )
        wrote_delta = time.perf_counter() - t
        t = time.perf_counter()
        fresh = StateStore.for_model(spec, max_streams=n)
        fresh.set_window(args.window)
        back = checkpoint.Checkpoints(root)
        restored = 0
        for i, part in enumerate(parts):
            got = back.restore(part, model)
            assert got is not None and got.offset == 2000
            restored += fresh.add(got.rows, i, now=0.0)
        took = time.perf_counter() - t
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert restored == n
    probe = [ids[i] for i in range(0, n, max(1, n // 1000))] + [ids[int(changed[0])]]
    keys = hashes(probe)
    a, b = store.index.lookup(keys), fresh.index.lookup(keys)
    assert np.array_equal(store.state[a], fresh.state[b])
    print(
        f"full checkpoint: {full / 1e6:,.0f} MB ({full / n:,.0f} B/stream), written in "
        f"{wrote_full:.2f} s"
    )
    print(
        f"delta of {len(changed):,} changed streams ({args.changed:.0%}): {delta / 1e6:,.1f} MB, "
        f"written in {wrote_delta:.2f} s"
    )
    print(f"restore of {restored:,} streams (full + delta, {len(parts)} partitions): {took:.2f} s")
    if args.changelog:
        _changelog(args.changelog, store, ids, parts, model, spec, args, took)


def _changelog(
    bootstrap: str,
    store: StateStore,
    ids: list[str],
    parts: list[tuple[str, int]],
    model: dict[str, object],
    spec: ModelSpec,
    args: argparse.Namespace,
    local_seconds: float,
) -> None:
    import uuid

    from streamwatch.changelog_kafka import Changelog

    n = len(ids)
    settings = {"bootstrap_servers": bootstrap.split(",")}
    log = Changelog(f"bench-changelog-{uuid.uuid4().hex[:8]}", settings, {})
    log.ensure_topic(len(parts))
    try:
        t = time.perf_counter()
        for i, part in enumerate(parts):
            job = checkpoint.Job(part, True, 3000, model, *store.changes(i, full=True))
            data = checkpoint.encode_segment(0, True, 3000, model, job.rows, job.gone)
            failed = log.write([(job, data)])
            assert not failed, failed
        wrote = time.perf_counter() - t
        rng = np.random.default_rng(1)
        changed = rng.choice(n, int(n * args.changed), replace=False)
        slots = store.assign([ids[i] for i in changed.tolist()], now=2.0)
        store.state[slots] += 1.0
        t = time.perf_counter()
        for i, part in enumerate(parts):
            job = checkpoint.Job(part, False, 4000, model, *store.changes(i))
            data = checkpoint.encode_segment(1, False, 4000, model, job.rows, job.gone)
            failed = log.write([(job, data)])
            assert not failed, failed
        wrote_delta = time.perf_counter() - t
        fresh = StateStore.for_model(spec, max_streams=n)
        fresh.set_window(args.window)
        reader = Changelog(log.topic, settings, {})
        t = time.perf_counter()
        restored = records = 0
        for i, part in enumerate(parts):
            got = reader.restore(part, model)
            assert got is not None and got.offset == 4000
            records += got.records
            restored += fresh.add(got.rows, i, now=0.0)
        took = time.perf_counter() - t
        reader.close()
    finally:
        log.close()
    assert restored == n
    probe = [ids[i] for i in range(0, n, max(1, n // 1000))] + [ids[int(changed[0])]]
    keys = hashes(probe)
    a, b = store.index.lookup(keys), fresh.index.lookup(keys)
    assert np.array_equal(store.state[a], fresh.state[b])
    print(f"changelog full round of {n:,} streams: written in {wrote:.2f} s")
    print(f"changelog delta round of {len(changed):,} streams: written in {wrote_delta:.2f} s")
    print(
        f"restore of {restored:,} streams from the changelog ({records:,} records, "
        f"{len(parts)} partitions): {took:.2f} s, {took / local_seconds:.1f} x the restore "
        "from disk in this run"
    )


if __name__ == "__main__":
    main()

"""Per-stream state in preallocated arrays: a slot per stream, one row per slot.

Each array row belongs to one stream: the packed LSTM state (h and c of every layer, float32),
the normalisation statistics, the forecast for the stream's next reading and bookkeeping.
Engines gather rows by slot, step them together and scatter them back, so no per-stream Python
object exists beyond the id -> slot dict.  Capacity doubles when full (amortised O(1) per new
stream); ``max_streams`` bounds it, and past it the least recently seen stream gives way.

>>> store = StateStore(state_size=4, capacity=2, max_streams=3)
>>> store.assign(["a", "b", "a"], now=1.0).tolist()
[0, 1, 0]
>>> store.assign(["c", "a"], now=2.0).tolist(), store.capacity
([2, 0], 3)
>>> store.assign(["d"], now=3.0).tolist(), store.evicted_lru  # "b" was seen least recently
([1], 1)
"""

from __future__ import annotations

import numpy as np

from streamwatch.model.artifact import ModelSpec
from streamwatch.normalize import Normalizer
from streamwatch.scoring import N_STATS


class StateStore:
    def __init__(
        self,
        state_size: int,
        capacity: int = 1024,
        max_streams: int = 1_000_000,
        n_targets: int = 1,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        self.state_size = state_size
        self.n_targets = n_targets
        self.max_streams = max_streams
        self.index: dict[str, int] = {}
        self.evicted_lru = 0
        self.evicted_idle = 0
        self._alloc(max(1, min(capacity, max_streams)))

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids: list[str | None] = [None] * capacity
        self.free: list[int] = list(range(capacity - 1, -1, -1))  # pop() hands out slot 0 first
        self.state = np.zeros((capacity, self.state_size), np.float32)
        self.norm = Normalizer.new_stats(capacity * self.n_targets).reshape(capacity, -1, 3)
        self.forecast = np.full((capacity, self.n_targets), np.nan)  # next reading, raw units
        self.scale = np.full((capacity, self.n_targets), np.nan)  # and its predicted scale
        # the scorer's per-stream statistics: float32 is plenty for them, and 20 bytes a
        # stream fewer at a million streams
        self.scores = np.zeros((capacity, N_STATS), np.float32)
        self.last_seen = np.zeros(capacity)  # wall-clock seconds, from the injected clock
        self.owner = np.full(capacity, -1, np.int32)  # the source partition it arrives on
        self.last_ts = np.full(capacity, np.nan)  # the stream's latest reading time (epoch s)

    @classmethod
    def for_model(cls, spec: ModelSpec, **kwargs: int) -> StateStore:
        """A store shaped for ``spec``: its state size and number of targets."""
        return cls(spec.state_size, n_targets=len(spec.targets), **kwargs)

    def __len__(self) -> int:
        return len(self.index)

    def nbytes(self) -> int:
        arrays = (
            self.state,
            self.norm,
            self.forecast,
            self.scale,
            self.scores,
            self.last_seen,
            self.owner,
            self.last_ts,
        )
        return sum(a.nbytes for a in arrays)

    def _grow(self) -> None:
        old = self.capacity
        new = min(old * 2, self.max_streams)
        arrays = ("state", "norm", "forecast", "scale", "scores", "last_seen", "owner", "last_ts")
        for name in arrays:
            arr = getattr(self, name)
            grown = np.empty((new, *arr.shape[1:]), arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)
        self.ids.extend([None] * (new - old))
        self.free.extend(range(new - 1, old - 1, -1))
        self.capacity = new

    def _reset(self, slot: int) -> None:
        self.state[slot] = 0.0
        self.norm[slot] = 0.0
        self.forecast[slot] = np.nan
        self.scale[slot] = np.nan
        self.scores[slot] = 0.0
        self.last_ts[slot] = np.nan

    def _release(self, slot: int) -> None:
        stream = self.ids[slot]
        if stream is not None:
            del self.index[stream]
        self.ids[slot] = None
        self.free.append(slot)

    def assign(self, stream_ids: list[str], now: float) -> np.ndarray:
        """Slots for ``stream_ids`` (new streams get fresh state); marks them seen at ``now``."""
        slots = np.empty(len(stream_ids), np.int64)
        index = self.index
        for i, stream in enumerate(stream_ids):
            slot = index.get(stream)
            if slot is None:
                slot = self._new_slot(slots[:i])
                index[stream] = slot
                self.ids[slot] = stream
            slots[i] = slot
        self.last_seen[slots] = now
        return slots

    def _new_slot(self, pinned: np.ndarray) -> int:
        if not self.free:
            if self.capacity < self.max_streams:
                self._grow()
            else:
                self._evict_lru(pinned)
        slot = self.free.pop()
        self._reset(slot)
        return slot

    def _evict_lru(self, pinned: np.ndarray) -> None:
        """Free the least recently seen ~1 % of slots at once, so that a stream of new ids at
        capacity costs one partial sort per hundred streams, not one each.  Streams already
        given slots in the current batch are never chosen."""
        seen = self.last_seen.copy()
        seen[pinned] = np.inf
        k = max(1, self.capacity // 100)
        victims = np.argpartition(seen, k - 1)[:k] if k < self.capacity else np.argsort(seen)[:k]
        victims = victims[np.isfinite(seen[victims])]
        if len(victims) == 0:
            raise ValueError(f"one batch holds more than max_streams={self.max_streams} streams")
        for slot in victims.tolist():
            self._release(slot)
        self.evicted_lru += len(victims)

    def drop_owners(self, owners: set[int]) -> int:
        """Drop the streams that arrive on the given partitions (revoked in a rebalance: the
        replica that takes them over builds their state afresh); return how many went."""
        if not owners or not self.index:
            return 0
        used = np.fromiter(self.index.values(), np.int64, len(self.index))
        gone = used[np.isin(self.owner[used], list(owners))]
        for slot in gone.tolist():
            self._release(slot)
        return len(gone)

    def evict_idle(self, now: float, ttl: float) -> int:
        """Drop streams not seen for ``ttl`` seconds; return how many went."""
        used = np.fromiter(self.index.values(), np.int64, len(self.index))
        stale = used[self.last_seen[used] < now - ttl]
        for slot in stale.tolist():
            self._release(slot)
        self.evicted_idle += len(stale)
        return len(stale)

"""Per-stream state in preallocated arrays: a slot per stream, one row per slot.

Each array row belongs to one stream: the packed LSTM state (h and c of every layer, float32),
the normalisation statistics, the forecast for the stream's next reading and bookkeeping.
Engines gather rows by slot, step them together and scatter them back, so no per-stream Python
object exists at all: streams are found by the hash of their id in a numpy table
(``slotindex.py``).  Capacity doubles when full (amortised O(1) per new stream);
``max_streams`` bounds it, and past it the least recently seen streams give way.

>>> store = StateStore(state_size=4, capacity=2, max_streams=3)
>>> store.assign(["a", "b", "a"], now=1.0).tolist()
[0, 1, 0]
>>> store.assign(["c", "a"], now=2.0).tolist(), store.capacity
([2, 0], 3)
>>> store.assign(["d"], now=3.0).tolist(), store.evicted_lru  # "b" was seen least recently
([1], 1)
>>> "b" in store, store.slot("d"), len(store)
(False, 1, 3)
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from streamwatch import serve
from streamwatch.model.artifact import ModelSpec
from streamwatch.normalize import Normalizer
from streamwatch.scoring import N_STATS
from streamwatch.slotindex import SlotIndex, hashes

_ROWS = (
    "state",
    "norm",
    "forecast",
    "scale",
    "scores",
    "envelope",
    "last_seen",
    "owner",
    "last_ts",
    "key",
    "window",
    "window_stats",
    "serve",
)
# Rows a snapshot written before they existed lacks: restored as a new stream has them.
_OPTIONAL = frozenset({"serve"})


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
        self.evicted_lru = 0
        self._t0: float | None = None  # the clock's value at the first assign
        # stream id -> (2, targets) trained range, which a new slot of that stream starts with
        self.envelopes: dict[str, np.ndarray] = {}
        # (owner, key) arrays of streams evicted since their partition's last checkpoint,
        # which its next one records as gone
        self._gone: list[tuple[np.ndarray, np.ndarray]] = []
        capacity = max(1, min(capacity, max_streams))
        self.index = SlotIndex(2 * capacity)
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        # free slots as a stack: slot 0 is handed out first
        self.free = np.arange(capacity - 1, -1, -1, dtype=np.int32)
        self.n_free = capacity
        self.state = np.zeros((capacity, self.state_size), np.float32)
        self.norm = Normalizer.new_stats(capacity * self.n_targets).reshape(capacity, -1, 3)
        self.forecast = np.full((capacity, self.n_targets), np.nan)  # next reading, raw units
        self.scale = np.full((capacity, self.n_targets), np.nan)  # and its predicted scale
        # the scorer's per-stream statistics: float32 is plenty for them, and 20 bytes a
        # stream fewer at a million streams
        self.scores = np.zeros((capacity, N_STATS), np.float32)
        # the stream's trained range per target (lo, hi; NaN: none), for the envelope test
        self.envelope = np.full((capacity, 2, self.n_targets), np.nan, np.float32)
        # wall-clock seconds since the store's first assign (float32: a millisecond's
        # resolution over a week, and 4 bytes a stream fewer than epoch seconds in float64)
        self.last_seen = np.zeros(capacity, np.float32)
        self.owner = np.full(capacity, -1, np.int16)  # the source partition it arrives on
        self.last_ts = np.full(capacity, np.nan)  # the stream's latest reading time (epoch s)
        self.key = np.zeros(capacity, np.uint64)  # the slot's stream id hash; 0: free
        # what the stream is scored against: model or persistence, and the scale's factor
        self.serve = serve.new_rows(capacity, self.n_targets)
        # changed since the partition's last checkpoint (not state: never exported)
        self.dirty = np.zeros(capacity, bool)
        self._alloc_window(capacity, 0)  # the engine shapes it for its scorer (set_window)

    def _alloc_window(self, capacity: int, width: int) -> None:
        # the scorer's window test (scoring.window; 0 columns, no bytes, when it is off)
        self.window_width = width
        self.window = np.full((capacity, width), np.nan, np.float32)
        self.window_stats = np.zeros((capacity, 4 if width else 0), np.float32)

    def set_window(self, width: int) -> None:
        """Shape the rows for a scorer whose window test keeps ``width`` misses a stream;
        only while the store is empty (a running stream cannot gain a history it lacks)."""
        if width == self.window_width:
            return
        if len(self):
            raise ValueError("the state store's window rows do not fit this scorer")
        self._alloc_window(self.capacity, width)

    @classmethod
    def for_model(cls, spec: ModelSpec, **kwargs: int) -> StateStore:
        """A store shaped for ``spec``: its state size and number of targets."""
        return cls(spec.state_size, n_targets=len(spec.targets), **kwargs)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, stream: str) -> bool:
        return self.slot(stream) is not None

    def slot(self, stream: str) -> int | None:
        found = int(self.index.lookup(hashes([stream]))[0])
        return None if found < 0 else found

    def nbytes(self) -> int:
        rows = sum(getattr(self, name).nbytes for name in _ROWS)
        return rows + self.free.nbytes + self.index.nbytes()

    def _used(self) -> np.ndarray:
        return np.flatnonzero(self.key)

    def _grow(self) -> None:
        old = self.capacity
        new = min(old * 2, self.max_streams)
        for name in _ROWS:
            arr = getattr(self, name)
            grown = np.empty((new, *arr.shape[1:]), arr.dtype)
            grown[:old] = arr
            setattr(self, name, grown)
        self.key[old:] = 0
        dirty = np.zeros(new, bool)
        dirty[:old] = self.dirty
        self.dirty = dirty
        free = np.empty(new, np.int32)
        free[: self.n_free] = self.free[: self.n_free]
        free[self.n_free : self.n_free + new - old] = np.arange(new - 1, old - 1, -1)
        self.free, self.n_free, self.capacity = free, self.n_free + new - old, new

    def _reset(self, slot: int) -> None:
        self.state[slot] = 0.0
        self.norm[slot] = 0.0
        self.forecast[slot] = np.nan
        self.scale[slot] = np.nan
        self.scores[slot] = 0.0
        self.envelope[slot] = np.nan
        self.last_ts[slot] = np.nan
        self.owner[slot] = -1
        self.window[slot] = np.nan
        self.window_stats[slot] = 0.0
        serve.reset(self.serve[slot : slot + 1])

    def set_envelopes(self, table: dict[str, np.ndarray]) -> None:
        """Take the trained ranges of the model being served (stream id -> (2, targets)):
        streams that start from now on begin with theirs, and live streams swap the range
        they had for the new model's, or none: after a reload the envelope test measures
        against the model that now predicts, as for a stream that starts after it."""
        self.envelopes = table
        self.envelope[:] = np.nan
        if not table:
            return
        ids = list(table)
        slots = self.index.lookup(hashes(ids))
        live = np.flatnonzero(slots >= 0)
        if len(live):
            self.envelope[slots[live]] = np.stack([table[ids[i]] for i in live.tolist()])

    def _release(self, slot: int) -> None:
        key = int(self.key[slot])
        if key:
            self.index.delete(key)
            self.key[slot] = 0
            self.dirty[slot] = False
            self.free[self.n_free] = slot
            self.n_free += 1

    def assign(self, stream_ids: list[str], now: float) -> np.ndarray:
        """Slots for ``stream_ids`` (new streams get fresh state); marks them seen at ``now``."""
        keys = hashes(stream_ids)
        slots = self.index.lookup(keys)
        # New streams (rare once running) one by one: a batch may bring one twice.
        for i in np.flatnonzero(slots < 0).tolist():
            key = int(keys[i])
            slot = self.index.get(key)
            if slot < 0:
                # every slot this batch already holds, found earlier or later in it, stays
                slot = self._new_slot(slots)
                self.index.insert(key, slot)
                self.key[slot] = key
                trained = self.envelopes.get(stream_ids[i])
                if trained is not None:
                    self.envelope[slot] = trained
            slots[i] = slot
        if self._t0 is None:
            self._t0 = now
        self.last_seen[slots] = now - self._t0
        self.dirty[slots] = True
        return slots

    def _new_slot(self, pinned: np.ndarray) -> int:
        if not self.n_free:
            if self.capacity < self.max_streams:
                self._grow()
            else:
                self._evict_lru(pinned[pinned >= 0])  # -1: still to be assigned
        self.n_free -= 1
        slot = int(self.free[self.n_free])
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
        self._note_gone(victims)
        for slot in victims.tolist():
            self._release(slot)
        self.evicted_lru += len(victims)

    def export(self, owners: Collection[int] | None = None) -> dict[str, np.ndarray]:
        """The rows of every live stream (or of those arriving on ``owners``), as a checkpoint
        holds them (``checkpoint.py``): the arrays of ``_ROWS`` but ``last_seen`` (time since
        this process started: meaningless to the next).  One copy: a million streams are
        630 MB."""
        used = self._used()
        if owners is not None:
            used = used[np.isin(self.owner[used], list(owners))]
        return {name: getattr(self, name)[used] for name in _ROWS if name != "last_seen"}

    def drop_owners(self, owners: set[int]) -> int:
        """Drop the streams that arrive on the given partitions (revoked in a rebalance: the
        replica that takes them over builds their state afresh); return how many went."""
        if not owners or not len(self):
            return 0
        used = self._used()
        gone = used[np.isin(self.owner[used], list(owners))]
        for slot in gone.tolist():
            self._release(slot)
        ids = list(owners)
        self._gone = [(o[~m], k[~m]) for o, k in self._gone if not (m := np.isin(o, ids)).all()]
        return len(gone)

    def evict_idle(self, now: float, ttl: float) -> int:
        """Drop streams not seen for ``ttl`` seconds; return how many went."""
        if self._t0 is None:
            return 0
        used = self._used()
        stale = used[self.last_seen[used] < now - self._t0 - ttl]
        self._note_gone(stale)
        for slot in stale.tolist():
            self._release(slot)
        return len(stale)

    def _note_gone(self, slots: np.ndarray) -> None:
        if len(slots):
            self._gone.append((self.owner[slots].copy(), self.key[slots].copy()))

    def changes(self, owner: int, full: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """What a partition's checkpoint records, and forgets it as changed: the rows (as
        ``export``'s) of its streams changed since its last checkpoint (every stream, with
        ``full``), and the keys of its streams evicted since (none with ``full``)."""
        used = self._used()
        mine = used[self.owner[used] == owner]
        if not full:
            mine = mine[self.dirty[mine]]
        self.dirty[mine] = False
        gone = [k[o == owner] for o, k in self._gone]
        self._gone = [(o[o != owner], k[o != owner]) for o, k in self._gone]
        self._gone = [(o, k) for o, k in self._gone if len(o)]
        keys = np.concatenate(gone) if gone and not full else np.zeros(0, np.uint64)
        rows = {name: getattr(self, name)[mine] for name in _ROWS if name != "last_seen"}
        return rows, keys

    def add(self, rows: dict[str, np.ndarray], owner: int, now: float) -> int:
        """Take on a partition's streams (``export``'s or ``changes``' rows) beside those the
        store holds, as seen at ``now`` and arriving on ``owner``; a stream already held keeps
        its live state.  ``ValueError`` says what does not fit.  Returns how many came."""
        missing = sorted(set(_ROWS) - {"last_seen"} - _OPTIONAL - set(rows))
        if missing:
            raise ValueError(f"no {', '.join(missing)} rows")
        n = len(rows["key"])
        if "serve" not in rows:
            rows = {**rows, "serve": serve.new_rows(n, self.n_targets)}
        for name, arr in rows.items():
            mine = getattr(self, name, None)
            if mine is None or name == "last_seen":
                raise ValueError(f"unknown rows {name!r}")
            if arr.shape != (n, *mine.shape[1:]):
                raise ValueError(f"{name} rows of shape {arr.shape}, not {(n, *mine.shape[1:])}")
        keys = rows["key"]
        if (keys < 2).any() or len(np.unique(keys)) != n:  # 0 and 1 mark free index cells
            raise ValueError("stream keys are reserved values or repeated")
        new = np.flatnonzero(self.index.lookup(keys) < 0)
        if len(self) + len(new) > self.max_streams:
            raise ValueError(
                f"{len(self) + len(new):,} streams, more than state.max_streams="
                f"{self.max_streams:,}"
            )
        while self.n_free < len(new):
            self._grow()
        slots = self.free[self.n_free - len(new) : self.n_free][::-1].copy()
        self.n_free -= len(new)
        for name, arr in rows.items():
            getattr(self, name)[slots] = arr[new]
        self.owner[slots] = owner
        self.dirty[slots] = False
        for slot, key in zip(slots.tolist(), keys[new].tolist(), strict=True):
            self.index.insert(key, slot)
        if self._t0 is None:
            self._t0 = now
        self.last_seen[slots] = now - self._t0
        return len(new)

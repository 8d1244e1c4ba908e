"""Stream id -> state slot, in flat numpy arrays instead of a dict of strings.

At a million streams a ``dict[str, int]`` costs about 170 bytes a stream (the string, the
entry, the table), a third of the LSTM state it points to.  Here a stream is known by the
64-bit hash of its id, in an open-addressing table (linear probing, load factor at most 1/2):
12 bytes a slot, 24 to 48 a stream.  Lookups for a whole batch run vectorised.

Two different ids with the same 64-bit hash would share a state; among a million streams the
chance that any two do is about n^2 / 2^65 = 3e-8.  Python's string hash is salted per
process, which is fine: the table never outlives the process.

>>> index = SlotIndex(8)
>>> h = hashes(["a", "b", "c"])
>>> index.lookup(h).tolist()
[-1, -1, -1]
>>> for key, slot in zip(h.tolist(), [5, 6, 7]):
...     index.insert(key, slot)
>>> index.lookup(h).tolist(), len(index)
([5, 6, 7], 3)
>>> index.delete(int(h[1])); index.lookup(h).tolist()
[5, -1, 7]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EMPTY, TOMBSTONE = 0, 1  # reserved key values; real hashes 0 and 1 are moved to 2 and 3


def hashes(ids: Sequence[str]) -> np.ndarray:
    """uint64 keys of stream ids (never EMPTY or TOMBSTONE)."""
    h = np.fromiter((hash(s) for s in ids), np.int64, len(ids)).view(np.uint64)
    h[h < 2] += np.uint64(2)
    return h


class SlotIndex:
    def __init__(self, size: int = 1024) -> None:
        self._alloc(max(8, 1 << (int(size) - 1).bit_length()))

    def _alloc(self, size: int) -> None:
        self.keys = np.zeros(size, np.uint64)
        self.vals = np.zeros(size, np.int32)
        self.mask = size - 1
        self.count = 0  # live keys
        self.used = 0  # live keys and tombstones: what probing has to walk past

    def __len__(self) -> int:
        return self.count

    def nbytes(self) -> int:
        return self.keys.nbytes + self.vals.nbytes

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """Slots of keys ``h`` (uint64 array), -1 where absent."""
        out = np.full(len(h), -1, np.int64)
        active = np.arange(len(h))
        pos = (h & np.uint64(self.mask)).astype(np.int64)
        keys, vals, mask = self.keys, self.vals, self.mask
        while active.size:
            k = keys[pos]
            hit = k == h[active]
            out[active[hit]] = vals[pos[hit]]
            more = ~hit & (k != EMPTY)
            active, pos = active[more], (pos[more] + 1) & mask
        return out

    def get(self, key: int) -> int:
        i = key & self.mask
        while True:
            k = int(self.keys[i])
            if k == key:
                return int(self.vals[i])
            if k == EMPTY:
                return -1
            i = (i + 1) & self.mask

    def insert(self, key: int, slot: int) -> None:
        """Add a key that is not present."""
        if 2 * (self.used + 1) > len(self.keys):
            self._rebuild(
                2 * len(self.keys) if 2 * (self.count + 1) > len(self.keys) // 2 else len(self.keys)
            )
        i = key & self.mask
        while int(self.keys[i]) not in (EMPTY, TOMBSTONE):
            i = (i + 1) & self.mask
        if int(self.keys[i]) == EMPTY:
            self.used += 1
        self.keys[i], self.vals[i] = key, slot
        self.count += 1

    def delete(self, key: int) -> None:
        i = key & self.mask
        while True:
            k = int(self.keys[i])
            if k == key:
                self.keys[i] = TOMBSTONE
                self.count -= 1
                return
            if k == EMPTY:
                return
            i = (i + 1) & self.mask

    def _rebuild(self, size: int) -> None:
        """Re-insert the live keys into a fresh table (dropping tombstones), vectorised."""
        live = self.keys > TOMBSTONE
        keys, vals = self.keys[live], self.vals[live]
        self._alloc(size)
        pending = np.arange(len(keys))
        pos = (keys & np.uint64(self.mask)).astype(np.int64)
        while pending.size:
            p = pos[pending]
            free = self.keys[p] == EMPTY
            cells, first = np.unique(p[free], return_index=True)  # one winner per cell
            winners = pending[free][first]
            self.keys[cells], self.vals[cells] = keys[winners], vals[winners]
            placed = np.zeros(len(keys), bool)
            placed[winners] = True
            pending = pending[~placed[pending]]
            pos[pending] = (pos[pending] + 1) & self.mask
        self.count = self.used = len(keys)

"""Stream id -> state slot, in flat numpy arrays instead of a dict of strings.

At a million streams a ``dict[str, int]`` costs about 170 bytes a stream (the string, the
entry, the table), a third of the LSTM state it points to.  Here a stream is known by the
64-bit hash of its id, in an open-addressing table (linear probing, load factor at most 1/2):
12 bytes a slot, 24 to 48 a stream.  Lookups for a whole batch run vectorised.

Two different ids with the same 64-bit hash would share a state; among a million streams the
chance that any two do is about n^2 / 2^65 = 3e-8.  The hash is the same in every process
(FNV-1a over the id's code points, then murmur3's finaliser so that the low bits the table
indexes by depend on every character), because the keys outlive the process in state
snapshots (``checkpoint.py``); Python's own string hash is salted per process.  It is computed
for a whole batch at once, longest ids first, so it costs about one numpy operation per
character position; ids longer than 64 characters (rare) take BLAKE2b one by one instead,
so that one of them does not make the whole batch that wide.

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

import hashlib
from collections.abc import Sequence

import numpy as np

EMPTY, TOMBSTONE = 0, 1  # reserved key values; real hashes 0 and 1 are moved to 2 and 3


_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)
_FMIX_1, _FMIX_2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_33 = np.uint64(33)
_LONG = 64  # ids longer than this (rare) are hashed one by one, not padded to in a batch


def hashes(ids: Sequence[str]) -> np.ndarray:
    """uint64 keys of stream ids (never EMPTY or TOMBSTONE), the same in every process.

    >>> hashes(["host-1.cpu", ""]).tolist()
    [4891035662071924165, 17280346270528514342]
    """
    n = len(ids)
    lengths = np.fromiter(map(len, ids), np.int64, n)
    long = np.flatnonzero(lengths > _LONG)
    if len(long):
        out = np.empty(n, np.uint64)
        for i in long.tolist():
            digest = hashlib.blake2b(ids[i].encode("utf-8", "surrogatepass"), digest_size=8)
            out[i] = int.from_bytes(digest.digest(), "little")
        short = np.flatnonzero(lengths <= _LONG)
        out[short] = _fnv([ids[i] for i in short.tolist()], lengths[short])
    else:
        out = _fnv(ids, lengths)
    out[out < 2] += np.uint64(2)
    return out


def _fnv(ids: Sequence[str], lengths: np.ndarray) -> np.ndarray:
    """FNV-1a over code points and murmur3's fmix64, for a batch at once: one numpy step per
    character position, over the ids that still have a character there (longest first)."""
    n = len(ids)
    if not n:
        return np.empty(0, np.uint64)
    text = np.array(ids, dtype=str)
    width = text.dtype.itemsize // 4
    order = np.argsort(-lengths, kind="stable")
    points = text.view(np.uint32).reshape(n, width)[order]
    rows = np.searchsorted(-lengths[order], -np.arange(width), side="left")
    h = np.full(n, _FNV_OFFSET)
    with np.errstate(over="ignore"):  # multiplication modulo 2^64 is the point
        for j, k in enumerate(rows.tolist()):
            h[:k] = (h[:k] ^ points[:k, j]) * _FNV_PRIME
        h ^= h >> _33
        h *= _FMIX_1
        h ^= h >> _33
        h *= _FMIX_2
        h ^= h >> _33
    out = np.empty(n, np.uint64)
    out[order] = h
    return out


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

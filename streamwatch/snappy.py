"""Snappy's block format, in Python: what remote write compresses its requests with.

The format (google/snappy, ``format_description.txt``): the uncompressed length as a varint,
then elements, each a tag byte whose low two bits say what it is:

- ``00`` a literal: the length less one in the tag's upper six bits (up to 59), or, for 60 to
  63 there, in the next 1 to 4 bytes (little-endian); then the bytes themselves;
- ``01`` a copy of 4 to 11 bytes from up to 2047 bytes back: the length less four in bits
  2-4, the offset's high three bits in bits 5-7 and its low eight in the next byte;
- ``10`` a copy of 1 to 64 bytes: the length less one in the upper six bits, then a two-byte
  offset (little-endian); ``11`` the same with a four-byte offset (never written here).

A copy may overlap what it writes (an offset shorter than its length repeats a run).  The
compressor is the reference one's: each 64 KiB block on its own, a hash table of 4-byte
sequences finding earlier occurrences, each match extended as far as it goes, and the search
skipping ahead faster the longer it finds nothing (incompressible data costs little); the
words and their hashes are worked out for a whole block at once with numpy.

>>> data = b"streamwatch_stream_score " * 40
>>> packed = compress(data)
>>> len(packed) < len(data) // 10, decompress(packed) == data
(True, True)
"""

from __future__ import annotations

import numpy as np

BLOCK = 1 << 16  # matches never reach across blocks: every offset fits two bytes
_MIN_MATCH = 4
_HASH_BITS = 14
_HASH_MUL = 0x1E35A7BD


class SnappyError(ValueError):
    """Bytes that are not a valid snappy block."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _literal(out: bytearray, data: bytes, start: int, end: int) -> None:
    n = end - start - 1
    if n < 60:
        out.append(n << 2)
    elif n < 1 << 8:
        out += bytes((60 << 2, n))
    elif n < 1 << 16:
        out.append(61 << 2)
        out += n.to_bytes(2, "little")
    elif n < 1 << 24:
        out.append(62 << 2)
        out += n.to_bytes(3, "little")
    else:
        out.append(63 << 2)
        out += n.to_bytes(4, "little")
    out += data[start:end]


def _copy(out: bytearray, offset: int, length: int) -> None:
    # pieces of at most 64; a tail of at least 4 so that it may take the short form
    while length >= 68:
        out += bytes((2 | (63 << 2), offset & 0xFF, offset >> 8))
        length -= 64
    if length > 64:
        out += bytes((2 | (59 << 2), offset & 0xFF, offset >> 8))
        length -= 60
    if 4 <= length <= 11 and offset < 2048:
        out += bytes((1 | ((length - 4) << 2) | ((offset >> 8) << 5), offset & 0xFF))
    else:
        out += bytes((2 | ((length - 1) << 2), offset & 0xFF, offset >> 8))


def _match_end(data: bytes, a: int, b: int, limit: int) -> int:
    """How far ``data[b:]`` repeats ``data[a:]`` (a < b), up to ``limit``: the end of the
    match at ``b``.  Compared 32 bytes, then one, at a time."""
    while b + 32 <= limit and data[a : a + 32] == data[b : b + 32]:
        a += 32
        b += 32
    while b < limit and data[a] == data[b]:
        a += 1
        b += 1
    return b


def _hashes(data: bytes, start: int, end: int) -> tuple[list[int], list[int]]:
    """The 4-byte little-endian word at each position of ``data[start:end]`` that starts
    one, and its hash: computed for the whole block at once (numpy), not byte by byte."""
    b = np.frombuffer(data, np.uint8, end - start, start).astype(np.uint32)
    words = b[:-3] | (b[1:-2] << 8) | (b[2:-1] << 16) | (b[3:] << 24)
    mixed = (words.astype(np.uint64) * _HASH_MUL) & 0xFFFFFFFF
    return words.tolist(), (mixed >> (32 - _HASH_BITS)).tolist()


def _compress_block(out: bytearray, data: bytes, start: int, end: int) -> None:
    if end - start < _MIN_MATCH + 1:
        _literal(out, data, start, end)
        return
    words, hashes = _hashes(data, start, end)  # indexed by position - start
    table = [-1] * (1 << _HASH_BITS)  # hash of 4 bytes -> where they were last seen
    literal = start  # the first byte not yet written out
    i = start
    last = end - _MIN_MATCH  # the last position a 4-byte sequence starts at
    misses = 32  # the reference's skip heuristic: step = misses // 32
    while i <= last:
        h = hashes[i - start]
        candidate = table[h]
        table[h] = i
        if candidate < 0 or words[candidate - start] != words[i - start]:
            i += misses >> 5
            misses += 1
            continue
        misses = 32
        if literal < i:
            _literal(out, data, literal, i)
        stop = _match_end(data, candidate + 4, i + 4, end)
        _copy(out, i - candidate, stop - i)
        # the positions just passed go into the table too: the next match may start there
        for p in range(max(i + 1, stop - 3), min(stop, last + 1)):
            table[hashes[p - start]] = p
        i = literal = stop
    if literal < end:
        _literal(out, data, literal, end)


def compress(data: bytes) -> bytes:
    """``data`` as one snappy block (what Go's ``snappy.Encode`` writes, not the framed
    stream format)."""
    out = bytearray(_varint(len(data)))
    for start in range(0, len(data), BLOCK):
        _compress_block(out, data, start, min(start + BLOCK, len(data)))
    return bytes(out)


def decompress(packed: bytes) -> bytes:
    """The bytes a snappy block holds; SnappyError if ``packed`` is not one."""
    size, shift, i = 0, 0, 0
    while True:
        if i >= len(packed) or shift > 28:
            raise SnappyError("bad length preamble")
        byte = packed[i]
        i += 1
        size |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    out = bytearray()
    n = len(packed)
    while i < n:
        tag = packed[i]
        i += 1
        kind = tag & 3
        if kind == 0:
            length = (tag >> 2) + 1
            if length > 60:
                extra = length - 60
                if i + extra > n:
                    raise SnappyError("truncated literal length")
                length = int.from_bytes(packed[i : i + extra], "little") + 1
                i += extra
            if i + length > n:
                raise SnappyError("truncated literal")
            out += packed[i : i + length]
            i += length
            continue
        if kind == 1:
            if i >= n:
                raise SnappyError("truncated copy")
            length = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | packed[i]
            i += 1
        else:
            width = 2 if kind == 2 else 4
            if i + width > n:
                raise SnappyError("truncated copy")
            length = (tag >> 2) + 1
            offset = int.from_bytes(packed[i : i + width], "little")
            i += width
        if offset == 0 or offset > len(out):
            raise SnappyError(f"copy offset {offset} outside the {len(out)} bytes written")
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # overlapping: the run repeats every ``offset`` bytes
            pattern = out[start:]
            out += (pattern * (length // offset + 1))[:length]
        if len(out) > size:
            raise SnappyError("more bytes than the preamble says")
    if len(out) != size:
        raise SnappyError(f"{len(out)} bytes, the preamble says {size}")
    return bytes(out)

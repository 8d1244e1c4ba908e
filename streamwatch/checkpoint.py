"""Per-partition stream state on local disk: periodic, incremental checkpoints.

Without them a crash (kill -9, an OOM kill, a lost node) starts every stream afresh: an empty
LSTM state and ``scoring.warmup`` readings without a verdict.  The state of the streams of
input partition p lives in ``<checkpoint_dir>/<topic>/<p>/`` as numbered segments: a *full*
one holds every stream of the partition, each later *delta* the streams changed since the
segment before it and the keys of streams evicted meanwhile.  Each segment also names the model
that wrote it and the input offset it reflects: the state after every record before it.

Restoring reads the newest full segment and the deltas after it, in order, up to the first
that cannot be read; a full one that cannot be read gives way to the one before it (the
previous full segment and its deltas are kept until a newer full one is on disk).  The daemon
then reads the partition again from that segment's offset, rebuilding the state silently up to
the offset already committed (``daemon.py``), so that it ends exactly where an uninterrupted
run would be.

Each segment is an uncompressed ``.npz`` (no pickles; zip checks every member's CRC-32 as it is
read), written beside its final name, synced and renamed into place: a crash mid-write leaves
no partial segment.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np

from streamwatch.errors import StreamwatchError
from streamwatch.model.artifact import ModelSpec
from streamwatch.sources import Partition

log = logging.getLogger("streamwatch")

FORMAT = 2
_SEGMENT = re.compile(r"^(\d{12})\.(full|delta)\.npz$")


class CheckpointError(StreamwatchError):
    """A segment that cannot be used; the message names the file and says why."""

    reason = "damaged"


class OtherModel(CheckpointError):
    """Segments written for another model: their state does not fit the one served."""

    reason = "other_model"


def model_identity(spec: ModelSpec) -> dict[str, object]:
    """What a checkpoint must match to be restored: the very model that wrote it."""
    return {
        "name": spec.name,
        "version": spec.version,
        "state_layout": spec.state_layout,
        "layers": spec.layers,
        "hidden_size": spec.hidden_size,
        "features": list(spec.features),
        "targets": list(spec.targets),
    }


@dataclass(frozen=True)
class Segment:
    seq: int
    full: bool
    offset: int  # the next input offset: the state has seen every record before it
    model: dict[str, object]
    rows: dict[str, np.ndarray]
    gone: np.ndarray  # keys of streams evicted since the segment before (deltas only)


@dataclass(frozen=True)
class Restored:
    rows: dict[str, np.ndarray]
    offset: int
    seq: int  # the last segment applied
    segments: int  # how many were applied
    skipped: list[str]  # why segments on disk were passed over (damaged ones)


def partition_dir(root: Path, part: Partition) -> Path:
    topic, partition = part
    return root / topic / str(partition)


def segments(where: Path) -> list[tuple[int, bool, Path]]:
    """The segments in a partition's directory, oldest first: (seq, full, path)."""
    try:
        names = os.listdir(where)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot list the checkpoint segments: {exc}") from exc
    found = []
    for name in names:
        m = _SEGMENT.match(name)
        if m:
            found.append((int(m.group(1)), m.group(2) == "full", where / name))
    return sorted(found)


def encode_segment(
    seq: int,
    full: bool,
    offset: int,
    model: dict[str, object],
    rows: dict[str, np.ndarray],
    gone: np.ndarray,
) -> bytes:
    """One segment's bytes, as a file holds them (and the changelog, in chunks)."""
    meta = {"format": FORMAT, "seq": seq, "full": full, "offset": offset, "model": model}
    arrays: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    arrays["gone"] = np.asarray(gone, np.uint64)
    arrays.update({f"row.{name}": arr for name, arr in rows.items()})
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def write_segment(where: Path, seq: int, full: bool, data: bytes) -> int:
    """Write one segment's bytes atomically; return its size."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{seq:012d}.{'full' if full else 'delta'}.npz"
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_dir(where)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep half a segment about
        raise
    return len(data)


def _sync_dir(where: Path) -> None:
    fd = os.open(where, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_segment(path: Path) -> Segment:
    """Read one segment; ``CheckpointError`` names the file and what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint segment: {exc}") from exc
    return decode_segment(data, str(path))


def decode_segment(data: bytes, name: str) -> Segment:
    """A segment from its bytes; ``CheckpointError`` names it (``name``) and says what is
    wrong with it."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {member: z[member] for member in z.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{name}: checkpoint format {meta.get('format')!r}, not {FORMAT}")
        rows = {k.removeprefix("row."): v for k, v in arrays.items() if k.startswith("row.")}
        return Segment(
            int(meta["seq"]),
            bool(meta["full"]),
            int(meta["offset"]),
            dict(meta["model"]),
            rows,
            arrays["gone"],
        )
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{name}: not a readable checkpoint segment: {exc}") from exc


def restore(where: Path, model: dict[str, object]) -> Restored | None:
    """The state a partition's segments hold, or None if there is none to use.  A segment of
    another model ends the search (``CheckpointError``: the state does not fit the model)."""
    found = segments(where)
    skipped: list[str] = []
    fulls = [i for i, (_, full, _) in enumerate(found) if full]
    for start in reversed(fulls):
        try:
            base = read_segment(found[start][2])
        except CheckpointError as exc:
            skipped.append(str(exc))
            continue
        if base.model != model:
            raise OtherModel(
                f"{found[start][2]} was written for model {base.model.get('name')} "
                f"{base.model.get('version')}, not the one served ({model['name']} "
                f"{model['version']})"
            )
        rows, last, applied = dict(base.rows), base, 1
        for _, full, path in found[start + 1 :]:
            if full:
                break  # a newer full segment that could not be read: its deltas belong to it
            try:
                delta = read_segment(path)
            except CheckpointError as exc:
                skipped.append(str(exc))
                break  # later deltas build on this one: the state as of the one before
            if delta.model != model:
                break
            rows = apply_delta(rows, delta)
            last, applied = delta, applied + 1
        return Restored(rows, last.offset, last.seq, applied, skipped)
    if skipped:
        raise CheckpointError("; ".join(skipped))
    return None


def apply_delta(rows: dict[str, np.ndarray], delta: Segment) -> dict[str, np.ndarray]:
    """Rows after a delta: its evicted streams gone, its changed ones replaced or added."""
    keys = rows["key"]
    drop = np.isin(keys, delta.gone) | np.isin(keys, delta.rows["key"])
    keep = ~drop
    return {
        name: np.concatenate([arr[keep], delta.rows[name]]) if name in delta.rows else arr[keep]
        for name, arr in rows.items()
    }


@dataclass
class _Chain:
    """What is on disk for one partition: the next segment number and the sizes that decide
    when a delta gives way to a full segment."""

    seq: int
    full_bytes: int  # the size of the newest full segment (0: none written or read yet)
    delta_bytes: int  # the deltas written since it
    deltas: int = 0  # and how many


class Checkpoints:
    """The checkpoint directory: writes segments per partition and decides full or delta.

    A delta is written while the deltas since the last full segment total less than that
    segment (or than ``MIN_FULL_BYTES``: a small partition's deltas are mostly headers) and
    number fewer than ``MAX_DELTAS`` (each is read at a restore); then a full one, after which
    segments older than the full one before it are deleted.  So the disk holds about three
    times a partition's state at most, and one older full chain survives a damaged newest one.
    """

    MIN_FULL_BYTES = 1 << 20
    MAX_DELTAS = 100

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._chains: dict[Partition, _Chain] = {}
        # partitions with a full segment handed to the writer and not yet written: the rounds
        # decided meanwhile are deltas on it
        self._full_queued: set[Partition] = set()

    def restore(self, part: Partition, model: dict[str, object]) -> Restored | None:
        where = partition_dir(self.root, part)
        found = segments(where)
        # whatever is restored, the next segment is numbered after everything on disk
        self._chains[part] = _Chain(found[-1][0] + 1 if found else 0, 0, 0)
        got = restore(where, model)
        if got is not None:
            self._chains[part].full_bytes = sum(
                p.stat().st_size for s, full, p in found if full and s <= got.seq
            )
            # the chain restored grows on: count its deltas toward the next full segment
            deltas = [p for s, full, p in found if not full and s <= got.seq]
            self._chains[part].delta_bytes = sum(p.stat().st_size for p in deltas)
            self._chains[part].deltas = len(deltas)
        return got

    def queued(self, part: Partition, full: bool) -> None:
        """A segment of ``part`` was handed to the writer (``Writer``)."""
        if full:
            self._full_queued.add(part)

    def needs_full(self, part: Partition) -> bool:
        if part in self._full_queued:
            return False
        chain = self._chains.get(part)
        return (
            chain is None
            or not chain.full_bytes
            or chain.delta_bytes >= max(chain.full_bytes, self.MIN_FULL_BYTES)
            or chain.deltas >= self.MAX_DELTAS
        )

    def next_seq(self, part: Partition) -> int:
        """The number of the partition's next segment."""
        return self._chain(part).seq

    def _chain(self, part: Partition) -> _Chain:
        chain = self._chains.get(part)
        if chain is None:
            found = segments(partition_dir(self.root, part))
            chain = self._chains[part] = _Chain(found[-1][0] + 1 if found else 0, 0, 0)
        return chain

    def write(self, job: Job, data: bytes | None = None) -> int:
        """Write the partition's next segment (``data``: encoded already, by
        ``encode_segment`` with ``next_seq``); return its size."""
        part, full = job.part, job.full
        chain = self._chain(part)
        if data is None:
            data = encode_segment(chain.seq, full, job.offset, job.model, job.rows, job.gone)
        where = partition_dir(self.root, part)
        try:
            size = write_segment(where, chain.seq, full, data)
        finally:
            if full:
                self._full_queued.discard(part)
        if full:
            self._prune(where, chain.seq)
            chain.full_bytes, chain.delta_bytes, chain.deltas = size, 0, 0
        else:
            chain.delta_bytes += size
            chain.deltas += 1
        chain.seq += 1
        return size

    def forget(self, part: Partition) -> None:
        """The partition is no longer ours: the next assignment reads its directory again."""
        self._chains.pop(part, None)

    @staticmethod
    def _prune(where: Path, newest_full: int) -> None:
        """Delete the segments older than the full segment before ``newest_full``."""
        fulls = [s for s, full, _ in segments(where) if full and s < newest_full]
        if not fulls:
            return
        keep_from = fulls[-1]
        for s, _, path in segments(where):
            if s < keep_from:
                path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Job:
    """One segment to write: the rows are the caller's own copy."""

    part: Partition
    full: bool
    offset: int
    model: dict[str, object]
    rows: dict[str, np.ndarray]
    gone: np.ndarray
    changelog: bool = True  # and to the changelog, if one is kept (not for partitions lost)


# a partition whose segment (or changelog round) was not written, and why
Failure: TypeAlias = tuple[Partition, str]


class RoundWriter(Protocol):
    """Where a round's segments go besides the local disk (``changelog_kafka.Changelog``)."""

    def write(self, segments: list[tuple[Job, bytes]]) -> list[Failure]: ...


class Writer:
    """Writes rounds of segments on a thread of its own, in order, so that the run loop only
    copies the changed rows (writing a round of 100,000 changed streams, 66 MB, on the loop's
    thread held records back long enough to show in the latency tail).  ``on_round`` gets
    (bytes written, seconds, failures as ``(partition, error)``) after each round."""

    def __init__(
        self,
        checkpoints: Checkpoints,
        on_round: Callable[[int, float, list[Failure], list[Failure]], None],
        changelog: RoundWriter | None = None,
    ) -> None:
        self.checkpoints = checkpoints
        self.changelog = changelog
        self._on_round = on_round
        self._jobs: queue.Queue[list[Job] | None] = queue.Queue()
        self.failed: deque[Partition] = deque()  # partitions whose next segment must be full
        self._broken: set[Partition] = set()  # a segment failed: deltas wait for a full one
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="checkpoints", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[Job]) -> None:
        if jobs and self._thread.is_alive():
            self._jobs.put(jobs)

    def wait(self) -> None:
        """Return once every round submitted is on disk (or has failed)."""
        if self._thread.is_alive():
            self._jobs.join()

    def close(self, timeout: float | None = None) -> bool:
        """Write what was submitted, then end the thread; whether it has ended (False: still
        writing after ``timeout`` seconds, and a later call waits on)."""
        if self._thread.is_alive():
            if not self._closing:
                self._closing = True
                self._jobs.put(None)
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            jobs = self._jobs.get()
            try:
                if jobs is None:
                    return
                started, written, failed = time.perf_counter(), 0, []
                to_log: list[tuple[Job, bytes]] = []
                for job in jobs:
                    # a delta on a segment that is not on disk would restore a state that
                    # never was: only a full segment mends the chain
                    refused = job.part in self._broken and not job.full
                    seq, unlisted = 0, None
                    if not refused:
                        try:
                            seq = self.checkpoints.next_seq(job.part)
                        except CheckpointError as exc:  # its directory cannot be listed
                            unlisted = str(exc)
                    data = encode_segment(seq, job.full, job.offset, job.model, job.rows, job.gone)
                    if job.changelog and self.changelog is not None:
                        to_log.append((job, data))  # whatever becomes of the local copy
                    if refused or unlisted is not None:
                        self.failed.append(job.part)
                        if unlisted is not None:
                            self._broken.add(job.part)
                            failed.append((job.part, unlisted))
                        continue
                    try:
                        written += self.checkpoints.write(job, data)
                    except (OSError, CheckpointError) as exc:
                        self._broken.add(job.part)
                        self.failed.append(job.part)
                        failed.append((job.part, str(exc)))
                    else:
                        self._broken.discard(job.part)
                log_failed = self.changelog.write(to_log) if self.changelog and to_log else []
                # a partition whose round the changelog did not take: its next one is full
                self.failed.extend(part for part, _ in log_failed)
                self._on_round(written, time.perf_counter() - started, failed, log_failed)
            except Exception:  # never let the writer die silently: the next round is full
                log.exception("checkpoint writer")
            finally:
                self._jobs.task_done()

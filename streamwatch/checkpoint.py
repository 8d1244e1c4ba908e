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
# a partition whose segment (or changelog round) was not written, and why
Failure: TypeAlias = tuple[Partition, str]
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
    # where the changelog stood once this segment's round was in it (changelog_kafka.py):
    # {"end": its end offset, "base": its last full round's offset}; None: not written there
    changelog: dict[str, int] | None = None


@dataclass(frozen=True)
class Restored:
    rows: dict[str, np.ndarray]
    offset: int
    seq: int  # the last segment applied
    segments: int  # how many were applied
    skipped: list[str]  # why segments on disk were passed over (damaged ones)
    changelog: dict[str, int] | None = None  # the last segment's (``Segment.changelog``)


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


def write_segment(
    where: Path,
    seq: int,
    full: bool,
    offset: int,
    model: dict[str, object],
    rows: dict[str, np.ndarray],
    gone: np.ndarray,
    changelog: dict[str, int] | None = None,
) -> int:
    """Write one segment atomically; return its size in bytes."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{seq:012d}.{'full' if full else 'delta'}.npz"
    meta = {"format": FORMAT, "seq": seq, "full": full, "offset": offset, "model": model}
    if changelog is not None:
        meta["changelog"] = changelog
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            arrays: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
            arrays["gone"] = np.asarray(gone, np.uint64)
            arrays.update({f"row.{name}": arr for name, arr in rows.items()})
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
        _sync_dir(where)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep half a segment about
        raise
    return size


def _sync_dir(where: Path) -> None:
    fd = os.open(where, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_segment(path: Path) -> Segment:
    """Read one segment; ``CheckpointError`` names the file and what is wrong with it."""
    try:
        # our own handle: np.load leaves its own open when the file is not a zip
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, not {FORMAT}")
        rows = {k.removeprefix("row."): v for k, v in arrays.items() if k.startswith("row.")}
        return Segment(
            int(meta["seq"]),
            bool(meta["full"]),
            int(meta["offset"]),
            dict(meta["model"]),
            rows,
            arrays["gone"],
            meta.get("changelog"),
        )
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint segment: {exc}") from exc


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
            rows = _apply(rows, delta)
            last, applied = delta, applied + 1
        return Restored(rows, last.offset, last.seq, applied, skipped, last.changelog)
    if skipped:
        raise CheckpointError("; ".join(skipped))
    return None


def _apply(rows: dict[str, np.ndarray], delta: Segment) -> dict[str, np.ndarray]:
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

    def write(self, job: Job, changelog: dict[str, int] | None = None) -> int:
        """Write the partition's next segment; return its size."""
        part, full = job.part, job.full
        chain = self._chains.get(part)
        where = partition_dir(self.root, part)
        if chain is None:
            found = segments(where)
            chain = self._chains[part] = _Chain(found[-1][0] + 1 if found else 0, 0, 0)
        try:
            size = write_segment(
                where, chain.seq, full, job.offset, job.model, job.rows, job.gone, changelog
            )
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
    streams: int = 0  # the partition's live streams after it (what the changelog counts)


class RoundWriter(Protocol):
    """Where a round goes before the local segments (``changelog_kafka.Changelog``)."""

    def write(self, jobs: list[Job]) -> tuple[dict[Partition, dict[str, int]], list[Failure]]: ...


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
                logged: dict[Partition, dict[str, int]] = {}
                log_failed: list[Failure] = []
                if self.changelog is not None:
                    # first the changelog, so that each local segment says where it stood
                    logged, log_failed = self.changelog.write([j for j in jobs if j.changelog])
                    # its next round must be full: a delta on a round not written would lose
                    # the changes in it
                    self.failed.extend(part for part, _ in log_failed)
                for job in jobs:
                    if job.part in self._broken and not job.full:
                        # a delta on a segment that is not on disk would restore a state
                        # that never was: only a full segment mends the chain
                        self.failed.append(job.part)
                        continue
                    try:
                        written += self.checkpoints.write(job, logged.get(job.part))
                    except (OSError, CheckpointError) as exc:
                        self._broken.add(job.part)
                        self.failed.append(job.part)
                        failed.append((job.part, str(exc)))
                    else:
                        self._broken.discard(job.part)
                self._on_round(written, time.perf_counter() - started, failed, log_failed)
            except Exception:  # never let the writer die silently: the next round is full
                log.exception("checkpoint writer")
            finally:
                self._jobs.task_done()

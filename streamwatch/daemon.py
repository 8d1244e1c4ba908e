"""The run loop: poll -> decode -> engine -> sinks -> flush -> commit.

At least once: offsets are committed only after every output of the batch (anomalies and dead
letters) is acknowledged, so a crash replays the batch instead of losing it.  Signals only flip
the run flag; the loop finishes the batch in hand, flushes, commits and returns.

A broker away (a retriable SourceError from the source or the sink) is waited out in place:
the loop backs off and tries again, polling nothing new until the batch in hand is
acknowledged, with ``/readyz`` not ready and ``/healthz`` live meanwhile.  Only errors that need
an operator (a group the ACLs deny) end the run.

Under systemd (``Type=notify``, deploy/systemd) the loop says ``READY=1`` the first time
``/readyz`` would say ready, pings ``WATCHDOG=1`` from the same turns that keep ``/healthz``
live, says ``STOPPING=1`` as it begins to drain, and asks for more time
(``EXTEND_TIMEOUT_USEC``) while the last checkpoints are written.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamwatch import changelog, checkpoint, events, sdnotify
from streamwatch.checkpoint import Failure
from streamwatch.codec import MessageFormat
from streamwatch.config import Config
from streamwatch.engine import Engine, StepModel, Verdicts
from streamwatch.errors import DecodeError, ModelError, SourceError
from streamwatch.http import Health
from streamwatch.metrics import Metrics
from streamwatch.model.artifact import ModelSpec
from streamwatch.records import Outgoing, Record
from streamwatch.sinks import DENIED, MISSING, Sink
from streamwatch.sinks.remote_write import RemoteWrite
from streamwatch.sources import Offsets, Partition, Source

log = logging.getLogger("streamwatch")

IDLE_SWEEP_SECONDS = 10.0  # idle eviction scans every slot: do it now and then, not per poll
FLUSH_SECONDS = 10.0  # a batch's outputs get this long to be acknowledged, the first time
RETRY_FLUSH_SECONDS = 5.0  # and this long again on each retry, and at a stop
BACKOFF_SECONDS = (0.5, 10.0)  # the wait after a failure: first, and at most (doubling)
OUTAGE_LOG_SECONDS = 60.0  # while the broker stays away, say so this often
# At a stop, the last checkpoints may take longer than systemd's TimeoutStopSec: ask it for
# EXTEND_SECONDS more every EXTEND_EVERY seconds while they are written, for at most
# FINAL_CHECKPOINT_SECONDS (a writer stuck that long is left to the stop timeout).
EXTEND_SECONDS = 30.0
EXTEND_EVERY = 10.0
FINAL_CHECKPOINT_SECONDS = 600.0


@dataclass
class _Unsettled:
    """A processed batch whose outputs the broker has not acknowledged yet: its offsets and
    what to count once it has."""

    offsets: Offsets
    sent: dict[str, int]
    latency: np.ndarray
    started: float
    model_seconds: float


class StateLog(checkpoint.RoundWriter, Protocol):
    """Where a partition's state is kept beside the local checkpoints (``changelog_kafka``)."""

    topic: str
    current: set[Partition]  # partitions whose changelog chain holds the state served

    def last_marker(self, part: Partition) -> changelog.Marker | None: ...

    def adopt(self, part: Partition, marker: changelog.Marker, current: bool) -> None: ...

    def restore(
        self,
        part: Partition,
        model: dict[str, object],
        progress: Callable[[int, int], None] | None = None,
    ) -> changelog.Folded | None: ...

    def forget(self, part: Partition) -> None: ...

    def close(self) -> None: ...


class TimedModel:
    """A model whose steps are timed (``seconds``, cumulative), for the daemon's metrics."""

    def __init__(self, model: StepModel) -> None:
        self.model, self.spec, self.seconds = model, model.spec, 0.0

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        started = time.perf_counter()
        try:
            return self.model.step(x, state)
        finally:
            self.seconds += time.perf_counter() - started


class Daemon:
    def __init__(
        self,
        cfg: Config,
        source: Source,
        sink: Sink,
        engine: Engine,
        spec: ModelSpec,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        health: Health | None = None,
        notifier: sdnotify.Notifier | None = None,
        changelog: StateLog | None = None,
    ) -> None:
        self.cfg, self.source, self.sink, self.engine = cfg, source, sink, engine
        # the model's calls are timed here, for the metrics: the engine itself stays pure
        self._timed = TimedModel(engine.model)
        engine.replace_model(self._timed)
        self.spec, self.metrics, self.clock = spec, metrics, clock
        self.health = health or Health()
        self.notifier = notifier or sdnotify.Notifier(None)  # None: systemd is not told
        self._told_ready = False
        self.health.model_loaded = self.health.state_ready = True
        rw = cfg.outputs.remote_write  # best effort, beside the sink: no part of a commit
        self.remote_write = RemoteWrite(rw, cfg.input.value_fields, metrics) if rw else None
        i = cfg.input
        self.format = MessageFormat(
            i.stream_field,
            i.timestamp_field,
            i.value_fields,
            i.covariate_fields,
            i.stream_from_key,
            i.max_message_bytes,
            i.max_stream_id_length,
        )
        # a file source waits this long for input too, rather than spinning on an idle pipe
        self.poll_timeout_ms = cfg.kafka.poll_timeout_ms if cfg.kafka else 500
        self._owner_ids: dict[Partition, int] = {}  # partition -> small int kept per stream
        # partition -> the next offset its streams' state has not seen (what a checkpoint
        # records): moved on only once a batch is settled, so state and offsets agree
        self._processed: Offsets = {}
        d = cfg.state.checkpoint_dir
        self.checkpoints = checkpoint.Checkpoints(d) if d is not None else None
        self.changelog = changelog if self.checkpoints is not None else None
        self._writer = (
            checkpoint.Writer(self.checkpoints, self._written, self.changelog)
            if self.checkpoints
            else None
        )
        self._model_id = checkpoint.model_identity(spec)
        # restored partitions read again from their checkpoint: records before the committed
        # offset rebuild state without output (their verdicts were sent before the crash)
        self._quiet: Offsets = {}
        self._saved: Offsets = {}  # partition -> the offset its newest segment reflects
        # restored partitions whose first record is still to come: it must be the one at the
        # checkpoint's offset, or readings the state never saw are gone (retention)
        self._expect: Offsets = {}
        self._full: set[Partition] = set()  # partitions whose next segment must be full
        self._last_checkpoint = time.monotonic()
        self._unsettled: _Unsettled | None = None
        self._outage_since: float | None = None  # monotonic time of the first failure
        self._outage_logged = 0.0
        self.running = False
        self.reload_requested = False
        self.batches = 0
        self._last_idle_sweep = clock()
        self._restoring = 0  # partitions of an assignment whose checkpoint is still to read
        metrics.model_info.info({"name": spec.name, "version": spec.version})
        # asked at each scrape, so that it says what /readyz would say then
        metrics.ready.set_function(lambda: 1.0 if self.health.ready()[0] else 0.0)

    def stop(self) -> None:
        self.running = False

    def request_reload(self) -> None:
        """Ask for the model to be reloaded between batches (what SIGHUP does)."""
        self.reload_requested = True

    def reload(self) -> bool:
        """Load the model at ``model.path`` again and serve it if the running state fits it;
        otherwise keep the old one and say why.  Returns whether the model was replaced."""
        self.reload_requested = False
        from streamwatch.model import load_model  # the only onnxruntime user, loaded lazily

        try:
            model = load_model(self.cfg.model.path, threads=self.cfg.model.threads)
        except ModelError as exc:
            self.metrics.reloads.labels(outcome="failed").inc()
            log.warning("reload: keeping model %s %s: %s", self.spec.name, self.spec.version, exc)
            return False
        new, old = model.spec, self.spec
        why = [
            f"{name} {a} != {b}"
            for name, a, b in (
                ("state layout", new.state_layout, old.state_layout),
                ("layers", new.layers, old.layers),
                ("hidden size", new.hidden_size, old.hidden_size),
                ("features", new.features, old.features),
                ("targets", new.targets, old.targets),
            )
            if a != b
        ]
        if why:
            self.metrics.reloads.labels(outcome="failed").inc()
            log.warning(
                "reload: keeping model %s %s: the new one does not fit the running state (%s)",
                old.name,
                old.version,
                "; ".join(why),
            )
            return False
        self._timed = TimedModel(model)
        self.engine.replace_model(self._timed)
        self.spec = new
        # the state is the new model's from now on: its checkpoints start a new full chain
        self._model_id = checkpoint.model_identity(new)
        self._full = set(self._processed)
        self.metrics.model_info.info({"name": new.name, "version": new.version})
        self.metrics.reloads.labels(outcome="ok").inc()
        log.info("reload: now serving model %s version %s", new.name, new.version)
        return True

    def output_topics(self) -> dict[str, str]:
        """Config key -> topic, for every topic the run loop may send to."""
        o = self.cfg.outputs
        keys = {"outputs.anomalies_topic": o.anomalies_topic}
        if o.scores_topic:
            keys["outputs.scores_topic"] = o.scores_topic
        keys["outputs.dead_letter_topic"] = o.dead_letter_topic
        return keys

    def check_topics(self) -> None:
        """Raise SourceError, naming the config keys, if an input topic may not be read, or an
        output topic does not exist or may not be written to: found now, before anything is
        consumed, rather than by a consumer that sits with no partitions, or by the first
        send, which would block for the producer's max_block_ms (60 s) and fail with a bare
        timeout, or fail its batch."""
        outputs = self.output_topics()
        problems = self.sink.unwritable_topics(set(outputs.values()))
        inputs = self.source.unreadable_topics()
        named_inputs = [f"kafka.input_topics: topic {t!r}" for t in inputs]
        parts = []
        for named, says, other in (
            (
                named_inputs,
                "{is_} not readable by this client: the broker's ACLs do not allow Read on "
                "{it} to the daemon's principal: grant it or name {other}",
                ("another topic", "others"),
            ),
            (
                [f"{k}: topic {t!r}" for k, t in outputs.items() if problems.get(t) == MISSING],
                "{does} not exist on the broker, which did not create {it} on request "
                "(auto.create.topics.enable=false, or no permission to create topics): "
                "create {it} or name {other}",
                ("an existing topic", "existing ones"),
            ),
            (
                [f"{k}: topic {t!r}" for k, t in outputs.items() if problems.get(t) == DENIED],
                "{is_} not writable by this client: the broker's ACLs do not allow Write on "
                "{it} to the daemon's principal: grant it or name {other}",
                ("another topic", "others"),
            ),
        ):
            if named:
                one = len(named) == 1
                words = {
                    "does": "does" if one else "do",
                    "is_": "is" if one else "are",
                    "it": "it" if one else "them",
                    "other": other[0] if one else other[1],
                }
                parts.append(f"{', '.join(named)} {says.format(**words)}")
        if parts:
            # retriable: once the topic exists or the ACL is granted, a restart gets going
            raise SourceError("; ".join(parts), retriable=True)

    # -- partitions and their state ----------------------------------------------------------

    def _lifecycle(self, records: list[Record]) -> list[Record]:
        """Act on the partition changes the last poll brought, in order: save and drop the
        state of partitions gone, restore that of partitions new.  Returns the batch less the
        records of partitions gone, and of those restored, which are read again from their
        checkpoint's offset."""
        events = self.source.events()
        if not events:
            return records
        drop: set[Partition] = set()
        for event in events:
            parts = set(event.partitions)
            if event.kind == "assigned":
                drop -= parts
                drop |= self._assigned(parts)
            else:
                drop |= parts
                self._gone(parts, event.kind)
        self.metrics.active_streams.set(len(self.engine.store))
        if not drop:
            return records
        return [r for r in records if (r.topic, r.partition) not in drop]

    def _owner_id(self, part: Partition) -> int:
        """The small int a partition's streams carry in the state store; never reused."""
        found = self._owner_ids.get(part)
        if found is None:
            found = self._owner_ids[part] = max(self._owner_ids.values(), default=-1) + 1
        return found

    def _assigned(self, parts: set[Partition]) -> set[Partition]:
        """Restore what the checkpoints hold for newly assigned partitions and start reading
        them; returns those started at a checkpoint's offset rather than the committed one."""
        if self.checkpoints is None:
            self.source.start(dict.fromkeys(parts))
            return set()
        self.health.state_ready = False  # /readyz: "waiting for state" while restoring
        self._restoring = len(parts)
        self._export_pending()
        try:
            committed = self.source.committed_offsets(parts)
            starts = {}
            for part in sorted(parts):
                starts[part] = self._restore(part, committed.get(part))
                self._restoring -= 1
                self._export_pending()  # a scrape meanwhile (another thread) sees progress
        finally:
            self.health.state_ready = True
            self._restoring = 0
            self._export_pending()
        self.source.start(starts)
        return {part for part, offset in starts.items() if offset is not None}

    def _restore(self, part: Partition, committed: int | None) -> int | None:
        """Take on a partition's saved streams (from the local checkpoint, or from the
        changelog where it is newer); return the offset to read it from (None: nothing
        restored, read from the committed offset)."""
        assert self.checkpoints is not None and self._writer is not None
        self._writer.wait()  # what was saved of it (a revocation just now) is on disk
        self._full.add(part)  # until a segment is restored, the next one written is full
        if self.changelog is not None:
            self.changelog.forget(part)  # its chain is read again below
        problems: list[tuple[str, str]] = []  # (cold start reason, why), from either store
        try:
            local = self.checkpoints.restore(part, self._model_id)
        except checkpoint.CheckpointError as exc:
            local = None
            problems.append((exc.reason, str(exc)))
        remote = None
        if self.changelog is not None:
            remote, trouble = self._read_changelog(part, local)
            if trouble is not None:
                problems.append(trouble)
        use_remote = remote is not None and (local is None or remote.offset > local.offset)
        got = remote if use_remote else local
        n = 0
        if got is not None:
            try:
                n = self.engine.store.add(got.rows, self._owner_id(part), self.clock())
            except ValueError as exc:
                problems.append(("damaged", str(exc)))
                got = None
        if got is None:
            if not problems:
                self.metrics.cold_starts.labels(reason="none").inc()
                log.info("partition %s[%d]: no checkpoint, its streams start afresh", *part)
                return None
            reason, why = problems[-1]
            self.metrics.cold_starts.labels(reason=reason).inc()
            log.warning(
                "partition %s[%d]: state not restored, its streams start afresh: %s", *part, why
            )
            return None
        for _, why in problems:  # the other store served: still worth an operator's look
            log.warning("partition %s[%d]: passed over: %s", *part, why)
        offset, where = got.offset, "the changelog"
        if isinstance(got, checkpoint.Restored):
            where = f"{got.segments} segment(s)"
            for skipped in got.skipped:
                log.warning("partition %s[%d]: passed over a damaged segment: %s", *part, skipped)
            self._full.discard(part)  # the local chain goes on from the segment restored
        self.metrics.restored.inc(n)
        self._processed[part] = self._saved[part] = self._expect[part] = offset
        if committed is not None and committed > offset:
            self._quiet[part] = committed
            rebuild = f"; offsets {offset} to {committed} are read again without output"
        else:
            rebuild = ""
        log.info(
            "partition %s[%d]: restored %d stream(s) as of offset %d from %s%s",
            *part,
            n,
            offset,
            where,
            rebuild,
        )
        return offset

    def _read_changelog(
        self, part: Partition, local: checkpoint.Restored | None
    ) -> tuple[changelog.Folded | None, tuple[str, str] | None]:
        """The changelog's state of ``part``, unless the local checkpoint is as new (the
        changelog's last round is the one this member wrote with it): then None, and the
        changelog's chain goes on.  Also the cold start reason and why, if the changelog
        could not be used."""
        assert self.changelog is not None
        try:
            last = self.changelog.last_marker(part)
            if local is not None and last is not None and last.offset == local.offset:
                self.changelog.adopt(part, last, current=True)
                return None, None
            started = time.monotonic()
            self.health.state_detail = f"restoring {part[0]}[{part[1]}] from the changelog"

            def progress(read: int, total: int) -> None:
                self.metrics.restore_remaining.set(total - read)
                self.health.state_detail = (
                    f"restoring {part[0]}[{part[1]}] from the changelog: {read:,} of {total:,} "
                    "records"
                )
                self._beat()  # restoring is progress: live, and systemd's watchdog fed

            try:
                got = self.changelog.restore(part, self._model_id, progress)
            finally:
                self.metrics.restore_remaining.set(0)
                self.health.state_detail = ""
            if got is not None:
                self.metrics.changelog_records.inc(got.records)
                log.info(
                    "partition %s[%d]: read %d changelog record(s) in %.1f s: %d stream(s) as of "
                    "offset %d",
                    *part,
                    got.records,
                    time.monotonic() - started,
                    len(got.rows["key"]),
                    got.offset,
                )
                if local is not None and local.offset >= got.offset:
                    # the local state is served: the changelog's chain lacks what is newer
                    self.changelog.current.discard(part)
            return got, None
        except changelog.ChangelogError as exc:
            return None, (exc.reason, f"changelog {self.changelog.topic}: {exc}")
        except SourceError as exc:
            return None, ("unreadable", f"changelog {self.changelog.topic} not read: {exc}")

    def _gone(self, parts: set[Partition], kind: str) -> None:
        """Save (if anything may be saved) and drop the state of partitions revoked or lost:
        their state is as good as their processed offsets either way, and a checkpoint lets
        them continue where they come back to."""
        for part in parts:
            self._quiet.pop(part, None)
            self._expect.pop(part, None)
        self._export_pending()
        # A partition revoked is handed over: its last round goes to the changelog, and is
        # waited for, so that the next owner finds it.  One lost may be another's already:
        # its state is saved locally only.
        self.checkpoint(parts, to_changelog=kind == "revoked")
        if kind == "revoked" and self.changelog is not None:
            self.wait_checkpoints()
        owners = {self._owner_ids[p] for p in parts if p in self._owner_ids}
        dropped = self.engine.store.drop_owners(owners)
        self.metrics.evictions.labels(reason="revoked").inc(dropped)
        for part in parts:
            self._processed.pop(part, None)
            self._saved.pop(part, None)
            self._full.discard(part)
            if self.checkpoints is not None:
                self.checkpoints.forget(part)
            if self.changelog is not None:
                self.changelog.forget(part)
            with contextlib.suppress(KeyError):  # never reported
                self.metrics.lag.remove(part[0], str(part[1]))
        log.info("dropped the state of %d stream(s) of %s partitions", dropped, kind)

    def checkpoint(self, parts: set[Partition] | None = None, to_changelog: bool = True) -> None:
        """Hand each partition's changes since its last segment (all held, by default) to the
        writer thread, if checkpoints are kept and the state agrees with the processed offsets
        (no batch is in hand unsettled).  A segment that cannot be written is logged and
        counted, and the partition's next one is full; the run goes on."""
        if self._writer is None or self.checkpoints is None or self._unsettled is not None:
            return
        self._last_checkpoint = time.monotonic()
        while self._writer.failed:
            self._full.add(self._writer.failed.popleft())
        jobs = []
        for part in sorted(self._processed if parts is None else parts):
            offset, owner = self._processed.get(part), self._owner_ids.get(part)
            if offset is None or owner is None:
                continue
            full = part in self._full or self.checkpoints.needs_full(part)
            # the changelog's deltas need a chain of its own that holds the state served
            full = full or (self.changelog is not None and part not in self.changelog.current)
            rows, gone = self.engine.store.changes(owner, full=full)  # copies
            if not (full or len(rows["key"]) or len(gone) or self._saved.get(part) != offset):
                continue
            jobs.append(
                checkpoint.Job(part, full, offset, self._model_id, rows, gone, to_changelog)
            )
            self.checkpoints.queued(part, full)
            self._full.discard(part)
            self._saved[part] = offset
        self._writer.submit(jobs)

    def wait_checkpoints(self) -> None:
        """Return once every checkpoint handed to the writer is on disk (or has failed)."""
        if self._writer is not None:
            self._writer.wait()

    def _written(
        self,
        size: int,
        seconds: float,
        failed: list[Failure],
        log_failed: list[Failure],
    ) -> None:
        """The writer thread's report on one round."""
        if log_failed:
            self.metrics.changelog_failures.inc(len(log_failed))
            log.error(
                "changelog rounds not written (the partitions' next rounds are full): %s",
                "; ".join(f"{t}[{p}]: {why}" for (t, p), why in log_failed),
            )
        self.metrics.checkpoint_bytes.inc(size)
        self.metrics.checkpoint_seconds.observe(seconds)
        if failed:
            self.metrics.checkpoint_failures.inc(len(failed))
            log.error(
                "checkpoints not written (the last good ones stay): %s",
                "; ".join(f"{t}[{p}]: {why}" for (t, p), why in failed),
            )

    def run(self, max_polls: int | None = None) -> None:
        self.running = True
        polls = 0
        clean = False
        if self.cfg.kafka:
            topics = ",".join(self.cfg.kafka.input_topics)
            log.info("consuming %s as group %s", topics, self.cfg.kafka.group_id)
        backoff = BACKOFF_SECONDS[0]
        try:
            while self.running and (max_polls is None or polls < max_polls):
                if self.reload_requested:
                    self.reload()
                polls += 1
                try:
                    n = self.run_once()
                except SourceError as exc:
                    if not exc.retriable:
                        raise
                    self._trouble(exc)
                    self._wait(backoff)
                    backoff = min(2 * backoff, BACKOFF_SECONDS[1])
                    continue
                backoff = BACKOFF_SECONDS[0]
                if (
                    self.checkpoints is not None
                    and time.monotonic() - self._last_checkpoint
                    >= self.cfg.state.checkpoint_interval_seconds
                ):
                    self.checkpoint()
                if not n and getattr(self.source, "exhausted", False):
                    break  # a file source at its end
            clean = True
        finally:
            self.notifier.stopping(f"draining after {self.batches} batches")
            # Before the source closes: leaving the group revokes every partition.  Not after
            # a failed batch, nor with one whose outputs the broker never acknowledged: its
            # readings are in the state but not in the offsets (the last segments written
            # stay, and the next start reads the batch again from them).
            if self._drain() and clean:
                self.checkpoint()
            self._close_writer()
            if self.changelog is not None:
                self.changelog.close()
            self.source.close()
            self.sink.close()
            if self.remote_write is not None:
                self.remote_write.close()
            log.info("stopped after %d batches", self.batches)

    def _close_writer(self) -> None:
        """Wait until every round handed to the checkpoint writer is written, asking systemd
        for more stop time meanwhile."""
        if self._writer is None:
            return
        self.notifier.notify(
            f"EXTEND_TIMEOUT_USEC={int(EXTEND_SECONDS * 1e6)}", "STATUS=writing the checkpoints"
        )
        deadline = time.monotonic() + FINAL_CHECKPOINT_SECONDS
        while not self._writer.close(EXTEND_EVERY):
            if time.monotonic() >= deadline:
                self._writer.close()
                return
            self.notifier.extend_timeout(EXTEND_SECONDS)

    def _drain(self) -> bool:
        """Settle the batch in hand at a stop; False if the broker did not take its outputs
        (then its offsets stay uncommitted, and the next start reads it again)."""
        try:
            if self._unsettled is not None:
                self._settle(RETRY_FLUSH_SECONDS)
            else:
                self.sink.flush(RETRY_FLUSH_SECONDS)
        except SourceError as exc:
            log.error(
                "stopping without the last batch's outputs acknowledged (%s): its offsets are "
                "not committed, so the next start reads it again",
                exc,
            )
            return False
        return True

    def _trouble(self, exc: SourceError) -> None:
        """A retriable failure: not ready until a batch goes through; said once, then now and
        then while it lasts."""
        now = time.monotonic()
        self.health.broker_reachable = False
        self.metrics.retries.inc()
        if self._outage_since is None:
            self._outage_since = self._outage_logged = now
            log.warning("broker unavailable, retrying until it is back: %s", exc)
            self.notifier.status(f"broker unavailable, retrying: {exc}")
        elif now - self._outage_logged >= OUTAGE_LOG_SECONDS:
            self._outage_logged = now
            log.warning(
                "broker still unavailable after %.0f s, retrying: %s", now - self._outage_since, exc
            )

    def _wait(self, seconds: float) -> None:
        """Sleep between retries, still live, and awake to a stop."""
        deadline = time.monotonic() + seconds
        while self.running and time.monotonic() < deadline:
            self._beat()
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))

    def _beat(self) -> None:
        """The loop has turned: ``/healthz`` live, and systemd's watchdog fed.

        Fed only from the loop's own thread, at the points that mark a turn (after a poll,
        and while backing off between retries), never from a timer thread: a loop stuck in
        a call that does not return is what the watchdog is for, and it gets restarted.  A
        loop waiting out a broker outage is alive (it retries every 10 s at most, awake to a
        stop) and keeps feeding it: restarting the process brings no broker back, and the
        daemon carries on by itself once the broker is.  Every blocking step of a turn is
        bounded (a poll by kafka.poll_timeout_ms, a flush by FLUSH_SECONDS), far below
        WatchdogSec.  Not before READY=1: systemd arms the watchdog only then (until then
        TimeoutStartSec= applies)."""
        self.health.beat()
        if self._told_ready:
            self.notifier.watchdog()

    def _tell_ready(self) -> None:
        """READY=1 the first time ``/readyz`` would say ready: model loaded, state restored,
        partitions assigned (a file source: reading it), broker reachable.  Said again at the
        next turn if it could not be sent."""
        if not self.health.ready()[0]:
            return
        if self.cfg.kafka and self.cfg.input.source == "kafka":
            what = f"consuming {','.join(self.cfg.kafka.input_topics)}"
        else:
            what = f"reading {self.cfg.input.path}"
        self._told_ready = self.notifier.ready(f"ready: {what}")
        if self._told_ready:
            self.notifier.watchdog()

    def run_once(self) -> int:
        """Poll and process one batch; return how many records it held.  A batch whose
        outputs the broker has not acknowledged (SourceError, retriable) is retried first:
        nothing new is polled until it is through."""
        if self._unsettled is not None:
            self._settle(RETRY_FLUSH_SECONDS)
        records = self.source.poll(self.poll_timeout_ms)
        now = self.clock()
        self._beat()
        assigned = len(self.source.assignment())
        self.health.partitions_assigned = assigned > 0
        self.metrics.assigned_partitions.set(assigned)
        self.metrics.last_poll.set(now)
        if now - self._last_idle_sweep >= IDLE_SWEEP_SECONDS:
            self._last_idle_sweep = now
            idle = self.engine.store.evict_idle(now, self.cfg.state.idle_ttl_seconds)
            self.metrics.evictions.labels(reason="idle").inc(idle)
        reachable = self.source.reachable()
        if reachable and self._outage_since is not None and not records:
            self._recovered()
        self.health.broker_reachable = reachable and self._outage_since is None
        records = self._lifecycle(records)
        if not self._told_ready and self.notifier.enabled:
            self._tell_ready()
        if self._expect and records:
            self._check_continuity(records)
        if not records:
            self.source.commit({})  # offsets held back while a commit was in flight go now
            # lag too: a member stuck with nothing to read must still show its input growing
            # (the positions and the fetched high-water marks are at hand: no broker call)
            self._export_lag()
            return 0
        started = time.perf_counter()
        model_before = self._timed.seconds
        self.batches += 1
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))

        sent = {"anomaly": 0, "score": 0, "dead_letter": 0}
        future = self.cfg.input.max_future_seconds
        batch = self.format.decode_batch(records, None if future is None else now + future)
        quiet = self._quiet_records(records) if self._quiet else None
        for i, err in batch.errors:
            if quiet is None or not quiet[i]:
                self._dead_letter(records[i], err)
                sent["dead_letter"] += 1
        good, streams, stamps, values = batch.index, batch.streams, batch.timestamps, batch.values
        record_ms = np.fromiter((records[i].timestamp for i in good), np.float64, len(good))

        if good:
            lru_before, moved_before = self.engine.store.evicted_lru, self.engine.moved_streams
            cov = np.asarray(batch.covariates, np.float64) if self.format.covariate_fields else None
            verdicts = self.engine.process(
                streams,
                np.asarray(values),
                now,
                covariates=cov,
                owners=self._owners(records, good),
                timestamps=np.asarray(stamps),
            )
            heard = None if quiet is None else ~quiet[np.asarray(good, np.intp)]
            if heard is not None:  # rebuilding state: what was sent before is not sent again
                np.logical_and(verdicts.anomaly, heard, out=verdicts.anomaly)
            if verdicts.skipped.any():
                late = verdicts.skipped if heard is None else verdicts.skipped & heard
                late = np.flatnonzero(late).tolist()
                sent["dead_letter"] += len(late)
                for j in late:
                    self._dead_letter(
                        records[good[j]],
                        DecodeError(
                            "out_of_order",
                            f"ts {stamps[j]} is older than the stream's last reading",
                        ),
                    )
            lru = self.engine.store.evicted_lru - lru_before
            self.metrics.evictions.labels(reason="capacity").inc(lru)
            self.metrics.partition_conflicts.inc(self.engine.moved_streams - moved_before)
            flagged = np.flatnonzero(verdicts.anomaly)
            outputs = self.cfg.outputs
            for j in flagged.tolist():
                event = self._event(j, records[good[j]], streams, stamps, values, verdicts)
                self.sink.send(Outgoing(outputs.anomalies_topic, streams[j].encode(), event))
            sent["anomaly"] = len(flagged)
            if outputs.scores_topic:  # every reading scored: not those dead-lettered above
                scored = ~verdicts.skipped if heard is None else ~verdicts.skipped & heard
                scored = np.flatnonzero(scored).tolist()
                for j in scored:
                    event = self._event(j, records[good[j]], streams, stamps, values, verdicts)
                    self.sink.send(Outgoing(outputs.scores_topic, streams[j].encode(), event))
                sent["score"] = len(scored)
            if self.remote_write is not None:  # queued only: it never holds the batch back
                judged = ~verdicts.skipped if heard is None else ~verdicts.skipped & heard
                self.remote_write.offer(streams, stamps, values, verdicts, judged)

        self._unsettled = _Unsettled(
            _next_offsets(records),
            sent,
            np.maximum(self.clock() - record_ms / 1000.0, 0.0),
            started,
            self._timed.seconds - model_before,
        )
        self._settle(FLUSH_SECONDS)
        return len(records)

    def _settle(self, timeout_s: float) -> None:
        """Wait until every output of the batch in hand is acknowledged, then commit its
        offsets; raise SourceError (the batch stays in hand) if the broker has not taken them
        all within ``timeout_s``."""
        batch = self._unsettled
        assert batch is not None
        self.sink.flush(timeout_s)  # every output of the batch acknowledged ...
        self._unsettled = None
        self.metrics.anomalies.inc(batch.sent["anomaly"])
        for kind, n in batch.sent.items():  # counted once the broker has them
            self.metrics.produced.labels(kind=kind).inc(n)
        self.source.commit(batch.offsets)  # ... before its offsets are committed
        self._processed.update(batch.offsets)
        for part in [p for p, end in self._quiet.items() if batch.offsets.get(p, -1) >= end]:
            del self._quiet[part]
            self._export_pending()
            log.info("partition %s[%d]: state rebuilt up to the committed offset", *part)
        if self._outage_since is not None:
            self._recovered()
        self.health.broker_reachable = True
        self.metrics.model_step_seconds.observe(batch.model_seconds)
        self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)
        self.metrics.end_to_end_seconds.observe_many(batch.latency)
        self._export_lag()
        self.metrics.active_streams.set(len(self.engine.store))
        self.metrics.state_bytes.set(self.engine.store.nbytes())

    def _export_lag(self) -> None:
        for (topic, partition), lag in self.source.lag().items():
            self.metrics.lag.labels(topic, str(partition)).set(lag)

    def _export_pending(self) -> None:
        """Partitions whose state is not caught up: restoring now, or rebuilding."""
        self.metrics.state_pending.set(self._restoring + len(self._quiet))

    def _recovered(self) -> None:
        assert self._outage_since is not None
        log.info("broker back after %.1f s: carrying on", time.monotonic() - self._outage_since)
        self._outage_since = None
        self.notifier.status("broker back: carrying on")

    def _check_continuity(self, records: list[Record]) -> None:
        """A restored partition's first record must be the one at its checkpoint's offset.
        Any later one means the records between are gone (the topic's retention deleted them
        while the partition was away): its streams' state would skip readings, so they start
        afresh, counted as a cold start ("gap")."""
        for rec in records:
            part = (rec.topic, rec.partition)
            expected = self._expect.pop(part, None)
            if expected is None or rec.offset == expected:
                if not self._expect:
                    return
                continue
            dropped = self.engine.store.drop_owners({self._owner_ids[part]})
            self._full.add(part)
            self._processed[part] = rec.offset
            self.metrics.cold_starts.labels(reason="gap").inc()
            log.warning(
                "partition %s[%d] resumes at offset %d, its checkpoint at %d: the records "
                "between are gone, so its %d restored stream(s) start afresh",
                *part,
                rec.offset,
                expected,
                dropped,
            )
            if not self._expect:
                return

    def _quiet_records(self, records: list[Record]) -> np.ndarray:
        """Which records rebuild a restored partition's state without output."""
        out = np.zeros(len(records), bool)
        quiet = self._quiet
        for i, rec in enumerate(records):
            end = quiet.get((rec.topic, rec.partition))
            if end is not None and rec.offset < end:
                out[i] = True
        self.metrics.rebuilt.inc(int(out.sum()))
        return out

    def _owners(self, records: list[Record], good: list[int]) -> np.ndarray:
        """The partition id of each good record (records of one partition come together)."""
        out = np.empty(len(good), np.int32)
        ids, last, last_id = self._owner_ids, None, -1
        for j, i in enumerate(good):
            rec = records[i]
            key = (rec.topic, rec.partition)
            if key != last:
                last_id = ids.get(key, -1)
                if last_id < 0:
                    last_id = self._owner_id(key)
                last = key
            out[j] = last_id
        return out

    def _event(
        self,
        j: int,
        rec: Record,
        streams: list[str],
        stamps: list[float],
        values: list[tuple[float, ...]],
        verdicts: Verdicts,
    ) -> bytes:
        """One verdict as strict JSON (null where a number is undefined): scalars for a
        univariate model, objects keyed by value field for a multivariate one."""
        fields = self.format.value_fields
        if len(fields) == 1:
            value: object = values[j][0]
            prediction: object = float(verdicts.prediction[j, 0])
            scale: object = float(verdicts.scale[j, 0])
        else:
            value = dict(zip(fields, values[j], strict=True))
            prediction = dict(zip(fields, verdicts.prediction[j].tolist(), strict=True))
            scale = dict(zip(fields, verdicts.scale[j].tolist(), strict=True))
        event = {
            "stream": streams[j],
            "ts": stamps[j],
            "value": value,
            "prediction": prediction,
            "scale": scale,
            "score": float(verdicts.score[j]),
            "anomaly": bool(verdicts.anomaly[j]),
            "threshold": self.engine.scorer.threshold,
            "model": self.spec.name,
            "model_version": self.spec.version,
            "topic": rec.topic,
            "partition": rec.partition,
            "offset": rec.offset,
        }
        return events.verdict_event(event)

    def _dead_letter(self, rec: Record, err: DecodeError) -> None:
        detail = ascii(err.detail)[1:-1]  # a log line of plain text, whatever the message held
        log.warning(
            "dead letter %s[%d]@%d: %s: %s",
            rec.topic,
            rec.partition,
            rec.offset,
            err.reason,
            detail,
        )
        o = self.cfg.outputs
        self.sink.send(
            events.dead_letter(
                rec, err.reason, err.detail, o.dead_letter_topic, o.dead_letter_max_bytes
            )
        )
        self.metrics.dead_letters.labels(reason=err.reason).inc()


def _next_offsets(records: list[Record]) -> Offsets:
    offsets: Offsets = {}
    for rec in records:
        key = (rec.topic, rec.partition)
        if rec.offset + 1 > offsets.get(key, -1):
            offsets[key] = rec.offset + 1
    return offsets

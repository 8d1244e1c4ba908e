"""The run loop: poll -> decode -> engine -> sinks -> flush -> commit.

At least once: offsets are committed only after every output of the batch (anomalies and dead
letters) is acknowledged, so a crash replays the batch instead of losing it.  Signals only flip
the run flag; the loop finishes the batch in hand, flushes, commits and returns.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import numpy as np

from streamwatch.codec import MessageFormat
from streamwatch.config import Config
from streamwatch.engine import Engine
from streamwatch.errors import DecodeError
from streamwatch.http import Health
from streamwatch.metrics import Metrics
from streamwatch.model.artifact import ModelSpec
from streamwatch.records import Outgoing, Record
from streamwatch.sinks import Sink
from streamwatch.sources import Offsets, Source

log = logging.getLogger("streamwatch")

IDLE_SWEEP_SECONDS = 10.0  # idle eviction scans every slot: do it now and then, not per poll


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
    ) -> None:
        self.cfg, self.source, self.sink, self.engine = cfg, source, sink, engine
        self.spec, self.metrics, self.clock = spec, metrics, clock
        self.health = health or Health()
        self.health.model_loaded = self.health.state_ready = True
        i = cfg.input
        self.format = MessageFormat(
            i.stream_field,
            i.timestamp_field,
            i.value_field,
            i.stream_from_key,
            i.max_message_bytes,
            i.max_stream_id_length,
        )
        self.running = False
        self.batches = 0
        self._last_idle_sweep = clock()
        metrics.model_info.info({"name": spec.name, "version": spec.version})

    def stop(self) -> None:
        self.running = False

    def run(self, max_polls: int | None = None) -> None:
        self.running = True
        polls = 0
        log.info(
            "consuming %s as group %s",
            ",".join(self.cfg.kafka.input_topics),
            self.cfg.kafka.group_id,
        )
        try:
            while self.running and (max_polls is None or polls < max_polls):
                self.run_once()
                polls += 1
        finally:
            self.sink.flush(30.0)
            self.source.close()
            self.sink.close()
            log.info("stopped after %d batches", self.batches)

    def run_once(self) -> int:
        """Poll and process one batch; return how many records it held."""
        records = self.source.poll(self.cfg.kafka.poll_timeout_ms)
        now = self.clock()
        self.health.beat()
        self.health.partitions_assigned = bool(self.source.assignment())
        self.metrics.last_poll.set(now)
        if now - self._last_idle_sweep >= IDLE_SWEEP_SECONDS:
            self._last_idle_sweep = now
            idle = self.engine.store.evict_idle(now, self.cfg.state.idle_ttl_seconds)
            self.metrics.evictions.labels(reason="idle").inc(idle)
        if not records:
            return 0
        started = time.perf_counter()
        model_before = self.engine.model_seconds
        self.batches += 1
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_size.observe(len(records))

        good: list[int] = []
        streams: list[str] = []
        values: list[float] = []
        stamps: list[float] = []
        oldest_ts = np.inf
        for i, rec in enumerate(records):
            try:
                stream, ts, value = self.format.decode(rec.value, rec.key, rec.timestamp / 1000.0)
            except DecodeError as err:
                self._dead_letter(rec, err)
                continue
            good.append(i)
            streams.append(stream)
            values.append(value)
            stamps.append(ts)
            oldest_ts = min(oldest_ts, rec.timestamp / 1000.0)

        if good:
            lru_before = self.engine.store.evicted_lru
            verdicts = self.engine.process(streams, np.asarray(values), now)
            lru = self.engine.store.evicted_lru - lru_before
            self.metrics.evictions.labels(reason="capacity").inc(lru)
            flagged = np.flatnonzero(verdicts.anomaly)
            for j in flagged.tolist():
                rec = records[good[j]]
                event = {
                    "stream": streams[j],
                    "ts": stamps[j],
                    "value": values[j],
                    "prediction": float(verdicts.prediction[j, 0]),
                    "scale": float(verdicts.scale[j, 0]),
                    "score": float(verdicts.score[j]),
                    "threshold": self.engine.scorer.threshold,
                    "model": self.spec.name,
                    "model_version": self.spec.version,
                    "topic": rec.topic,
                    "partition": rec.partition,
                    "offset": rec.offset,
                }
                self.sink.send(
                    Outgoing(
                        self.cfg.outputs.anomalies_topic,
                        streams[j].encode(),
                        json.dumps(event, separators=(",", ":")).encode(),
                    )
                )
            self.metrics.anomalies.inc(len(flagged))
            self.metrics.produced.labels(kind="anomaly").inc(len(flagged))

        self.sink.flush(30.0)
        self.source.commit(_next_offsets(records))
        self.metrics.model_step_seconds.observe(self.engine.model_seconds - model_before)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        if np.isfinite(oldest_ts):
            self.metrics.end_to_end_seconds.observe(max(0.0, self.clock() - oldest_ts))
        self.metrics.active_streams.set(len(self.engine.store))
        self.metrics.state_bytes.set(self.engine.store.nbytes())
        return len(records)

    def _dead_letter(self, rec: Record, err: DecodeError) -> None:
        log.warning("dead letter %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, err)
        headers = [
            *(rec.headers or []),
            ("streamwatch.reason", err.reason.encode()),
            ("streamwatch.detail", err.detail[:500].encode()),
            ("streamwatch.topic", rec.topic.encode()),
            ("streamwatch.partition", str(rec.partition).encode()),
            ("streamwatch.offset", str(rec.offset).encode()),
        ]
        self.sink.send(
            Outgoing(self.cfg.outputs.dead_letter_topic, rec.key, rec.value or b"", headers)
        )
        self.metrics.dead_letters.labels(reason=err.reason).inc()
        self.metrics.produced.labels(kind="dead_letter").inc()


def _next_offsets(records: list[Record]) -> Offsets:
    offsets: Offsets = {}
    for rec in records:
        key = (rec.topic, rec.partition)
        if rec.offset + 1 > offsets.get(key, -1):
            offsets[key] = rec.offset + 1
    return offsets

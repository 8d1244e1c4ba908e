"""One bundle of Prometheus metrics, built against an injected registry.

Base units, ``_total`` counters, ``_seconds`` histograms, bounded labels only: never a stream id.
Updated once per batch by the daemon, not per message.  The registry also carries
prometheus_client's process and platform collectors (``process_start_time_seconds``,
``process_resident_memory_bytes``, ``python_info``): restarts and memory, for the alerts.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streamwatch import __version__
from streamwatch.codec import REASONS

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENCY = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.0175,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
_SIZES = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
REMOTE_WRITE_DROPS = (
    "max_streams",
    "out_of_order",
    "queue_full",
    "rejected",
    "failed",
    "shutdown",
    "error",
)
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1


class BatchHistogram(Collector):
    """A histogram fed a whole array of observations per batch (numpy searchsorted and
    bincount), exported exactly like a prometheus_client Histogram: per-message latencies
    without a Python call per message.

    >>> registry = CollectorRegistry()
    >>> h = BatchHistogram("demo_seconds", "Demo.", (0.01, 0.1), registry)
    >>> h.observe_many(np.array([0.005, 0.05, 0.05, 3.0]))
    >>> registry.get_sample_value("demo_seconds_bucket", {"le": "0.1"})
    3.0
    >>> registry.get_sample_value("demo_seconds_count")
    4.0
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.array([*sorted(buckets), np.inf])
        self.counts = np.zeros(len(self.bounds), np.int64)
        self.sum = 0.0
        self._lock = threading.Lock()  # the HTTP thread collects while the loop observes
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        # bucket "le" semantics: a value equal to a bound falls in that bound's bucket
        idx = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(idx, minlength=len(self.bounds))
        with self._lock:
            self.counts += counts
            self.sum += float(np.sum(values))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self.counts).astype(float).tolist()
            total = self.sum
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=[(floatToGoString(b), c) for b, c in zip(self.bounds, cumulative, strict=True)],
            sum_value=total,
        )


def cgroup_memory_limit(
    root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")
) -> int | None:
    """The memory limit of this process's cgroup in bytes (systemd's ``MemoryMax=``, a
    container's memory limit), the smallest along its path up to the root; None without one.
    cgroup v2 (``memory.max``) or v1 (``memory/memory.limit_in_bytes``).

    >>> cgroup_memory_limit(Path("/nonexistent"), Path("/nonexistent")) is None
    True
    """
    try:
        lines = (proc / "self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    paths: dict[str, str] = {}  # "" (v2) or "memory" (v1) -> the cgroup path, from the root
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    found: list[int] = []
    for base, name, key in (
        (root, "memory.max", ""),
        (root / "memory", "memory.limit_in_bytes", "memory"),
    ):
        # in a container the cgroup's own directory is mounted at the root: the path that
        # /proc names (the host's) is not there, and the root's files are its own
        rel = Path(paths.get(key, "/").lstrip("/"))
        for d in [base / rel, *(base / p for p in rel.parents), base]:
            try:
                text = (d / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < _NO_LIMIT:
                found.append(int(text))
        if found:
            break
    return min(found) if found else None


class MemoryLimit(Collector):
    """``streamwatch_memory_limit_bytes``: the cgroup memory limit, read at each scrape (a
    systemd ``MemoryMax=`` may be changed at run time).  The family is always described, with
    no sample where there is no limit: the memory alert then has nothing to compare with.

    >>> registry = CollectorRegistry()
    >>> _ = MemoryLimit(registry, lambda: 2 << 30)
    >>> registry.get_sample_value("streamwatch_memory_limit_bytes")
    2147483648.0
    """

    def __init__(
        self, registry: CollectorRegistry, limit: Callable[[], int | None] = cgroup_memory_limit
    ) -> None:
        self.limit = limit
        registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "streamwatch_memory_limit_bytes",
            "The memory limit of the daemon's cgroup (systemd MemoryMax=, the container's "
            "limit); no sample without one.",
        )
        limit = self.limit()
        if limit is not None:
            family.add_metric([], float(limit))
        yield family


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        memory_limit: Callable[[], int | None] = cgroup_memory_limit,
    ) -> None:
        ns = "streamwatch"
        self.registry = registry
        ProcessCollector(registry=registry)  # process_*: restarts, memory, descriptors
        PlatformCollector(registry=registry)  # python_info
        MemoryLimit(registry, memory_limit)
        self.consumed = Counter(
            "records_consumed",
            "Records polled from the input topics.",
            namespace=ns,
            registry=registry,
        )
        self.produced = Counter(
            "records_produced",
            "Records produced and acknowledged, by kind of output.",
            ["kind"],
            namespace=ns,
            registry=registry,
        )
        self.dead_letters = Counter(
            "dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        self.anomalies = Counter(
            "anomalies", "Readings flagged as anomalous.", namespace=ns, registry=registry
        )
        self.evictions = Counter(
            "stream_evictions",
            "Stream states dropped, by reason (idle, capacity or revoked: handed to a checkpoint).",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        self.active_streams = Gauge(
            "active_streams", "Streams with state held.", namespace=ns, registry=registry
        )
        self.state_bytes = Gauge(
            "state_memory_bytes",
            "Bytes held by per-stream state arrays.",
            namespace=ns,
            registry=registry,
        )
        self.batch_size = Histogram(
            "batch_size_records",
            "Records per poll batch.",
            namespace=ns,
            buckets=_SIZES,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "batch_seconds",
            "Time to process one batch, decode to commit.",
            namespace=ns,
            buckets=_SECONDS,
            registry=registry,
        )
        self.model_step_seconds = Histogram(
            "model_step_seconds",
            "Time in ONNX Runtime per batch.",
            namespace=ns,
            buckets=_SECONDS,
            registry=registry,
        )
        self.end_to_end_seconds = BatchHistogram(
            f"{ns}_end_to_end_seconds",
            "Record timestamp to verdict, for every record.",
            _LATENCY,
            registry,
        )
        self.retries = Counter(
            "broker_retries",
            "Polls or batches the broker failed, each waited out and tried again.",
            namespace=ns,
            registry=registry,
        )
        self.last_poll = Gauge(
            "last_poll_timestamp_seconds",
            "Unix time of the last successful poll.",
            namespace=ns,
            registry=registry,
        )
        self.kafka_patch_active = Gauge(
            "kafka_patch_active",
            "1 where a patch of kafka-python's internals is installed, 0 where it stood down "
            "(kafka-python outside the versions it knows): fast_records, join_fix.",
            ["patch"],
            namespace=ns,
            registry=registry,
        )
        self.model_info = Info("model", "The model being served.", namespace=ns, registry=registry)
        self.build_info = Info("build", "streamwatch build.", namespace=ns, registry=registry)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        for reason in REASONS:  # export zeros, so that rate() works from the first error
            self.dead_letters.labels(reason=reason)
        for kind in ("anomaly", "dead_letter", "score"):
            self.produced.labels(kind=kind)
        self.lag = Gauge(
            "consumer_lag_records",
            "Records behind the end of each assigned partition.",
            ["topic", "partition"],
            namespace=ns,
            registry=registry,
        )
        for reason in ("idle", "capacity", "revoked"):
            self.evictions.labels(reason=reason)
        self.restored = Counter(
            "state_restored_streams",
            "Streams whose state was restored from a checkpoint when their partition was assigned.",
            namespace=ns,
            registry=registry,
        )
        self.cold_starts = Counter(
            "state_cold_starts",
            "Partitions assigned without state to restore, by reason (none: no checkpoint; "
            "damaged; other_model; gap: the records after the checkpoint are gone; "
            "unreadable: the changelog could not be read).",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        for reason in ("none", "damaged", "other_model", "gap", "unreadable"):
            self.cold_starts.labels(reason=reason)
        self.rebuilt = Counter(
            "state_rebuilt_records",
            "Records read again after a restore to bring state up to the committed offset, "
            "without output (their verdicts were sent before).",
            namespace=ns,
            registry=registry,
        )
        self.checkpoint_bytes = Counter(
            "checkpoint_written_bytes",
            "Bytes of state checkpoint segments written.",
            namespace=ns,
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "checkpoint_seconds",
            "Time to write one round of checkpoints (every partition held), on the writer's "
            "thread.",
            namespace=ns,
            buckets=_SECONDS,
            registry=registry,
        )
        self.checkpoint_failures = Counter(
            "checkpoint_failures",
            "Checkpoint segments that could not be written (a full disk, permissions).",
            namespace=ns,
            registry=registry,
        )
        self.changelog_failures = Counter(
            "changelog_failures",
            "Partitions' changelog rounds the broker did not take (each makes the partition's "
            "next round full).",
            namespace=ns,
            registry=registry,
        )
        self.changelog_records = Counter(
            "changelog_restored_records",
            "Changelog records read to restore partitions assigned to this member.",
            namespace=ns,
            registry=registry,
        )
        self.restore_remaining = Gauge(
            "changelog_restore_remaining_records",
            "Changelog records still to read for the partition being restored (0: none).",
            namespace=ns,
            registry=registry,
        )
        self.partition_conflicts = Counter(
            "stream_partition_conflicts",
            "Readings of a stream whose state was held for another partition.  A stream's "
            "readings must all arrive on one partition (keyed by stream id): its state moves "
            "with each such reading, and its checkpoints no longer follow one partition.",
            namespace=ns,
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "assigned_partitions",
            "Input partitions this member reads (0: none, a replica beyond the partition count "
            "or one left out of the group).",
            namespace=ns,
            registry=registry,
        )
        self.ready = Gauge(
            "ready",
            "1 while /readyz says ready (model loaded, partitions assigned, state ready, broker "
            "answering), else 0.",
            namespace=ns,
            registry=registry,
        )
        self.state_pending = Gauge(
            "state_pending_partitions",
            "Assigned partitions whose state is not caught up yet: being restored from their "
            "checkpoint, or reading again up to the committed offset without output.",
            namespace=ns,
            registry=registry,
        )
        self.commit_failures = Counter(
            "offset_commit_failures",
            "Offset commits the broker failed (each covered by the next that succeeds).",
            namespace=ns,
            registry=registry,
        )
        self.reloads = Counter(
            "model_reloads",
            "Model reloads (SIGHUP), by outcome: ok (now served) or failed (the old one kept).",
            ["outcome"],
            namespace=ns,
            registry=registry,
        )
        for outcome in ("ok", "failed"):
            self.reloads.labels(outcome=outcome)
        # outputs.remote_write (sinks/remote_write.py): exported, at zero, without it too
        self.rw_sent = Counter(
            "remote_write_samples",
            "Per-stream samples the remote-write receiver accepted.",
            namespace=ns,
            registry=registry,
        )
        self.rw_dropped = Counter(
            "remote_write_dropped_samples",
            "Per-stream samples not sent, by reason: max_streams (the stream found no place), "
            "out_of_order (not after the stream's last sample sent), queue_full, rejected (a "
            "4xx answer), failed (no success within retry_seconds), shutdown (still queued at "
            "the stop), error (a bug, logged).",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        for reason in REMOTE_WRITE_DROPS:
            self.rw_dropped.labels(reason=reason)
        self.rw_failures = Counter(
            "remote_write_failures",
            "Remote-write requests that failed: an error answer, a timeout or no connection "
            "(each try counted, retried or not).",
            namespace=ns,
            registry=registry,
        )
        self.rw_queue = Gauge(
            "remote_write_queue_samples",
            "Per-stream samples waiting to be sent.",
            namespace=ns,
            registry=registry,
        )
        self.rw_streams = Gauge(
            "remote_write_streams",
            "Streams whose samples are sent (at most outputs.remote_write.max_streams).",
            namespace=ns,
            registry=registry,
        )

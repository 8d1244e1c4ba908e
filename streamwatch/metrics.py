"""One bundle of Prometheus metrics, built against an injected registry.

Base units, ``_total`` counters, ``_seconds`` histograms, bounded labels only: never a stream id.
Updated once per batch by the daemon, not per message.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from streamwatch import __version__
from streamwatch.codec import REASONS

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "streamwatch"
        self.registry = registry
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
            "Stream states dropped, by reason (idle, capacity or revoked).",
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
        self.end_to_end_seconds = Histogram(
            "end_to_end_seconds",
            "Record timestamp to verdict, for the oldest record of each batch.",
            namespace=ns,
            buckets=(*_SECONDS, 30.0, 60.0, 300.0),
            registry=registry,
        )
        self.last_poll = Gauge(
            "last_poll_timestamp_seconds",
            "Unix time of the last successful poll.",
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

"""YAML -> a frozen, validated Config; every error names its key path.

Unknown keys are errors: a typo must not silently fall back to a default.

>>> cfg = parse({"kafka": {"bootstrap_servers": "k:9092", "input_topics": ["in"]}})
>>> cfg.kafka.group_id, cfg.scoring.threshold
('streamwatch', 0.5)
>>> parse({"kafka": {"bootstrap_servers": "k:9092", "input_topics": ["in"], "grup_id": "x"}})
Traceback (most recent call last):
...
streamwatch.errors.ConfigError: kafka.grup_id: unknown key
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
import ssl
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from streamwatch.engine import TimePolicy
from streamwatch.errors import ConfigError, InvalidSetting
from streamwatch.events import MIN_DEAD_LETTER_BYTES
from streamwatch.scoring import Scorer

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Settings that carry streamwatch's guarantees (no auto-commit, acks from all replicas) or
# have their own keys above.
# keys of earlier releases -> what a user should write instead
RENAMED = {
    "state.checkpoint_path": "now state.checkpoint_dir, a directory of per-partition "
    "checkpoints written every state.checkpoint_interval_seconds",
}
ASSIGNMENTS = ("cooperative-sticky", "range", "roundrobin")
CONSUMER_RESERVED = frozenset(
    {
        "bootstrap_servers",
        "group_id",
        "client_id",
        "enable_auto_commit",
        "auto_offset_reset",
        "max_poll_records",
        "group_instance_id",
        "partition_assignment_strategy",
        "key_deserializer",
        "value_deserializer",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "ssl_password",
    }
)
PRODUCER_RESERVED = frozenset(
    {
        "bootstrap_servers",
        "client_id",
        "acks",
        "key_serializer",
        "value_serializer",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "ssl_password",
    }
)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str  # comma-separated host:port list
    input_topics: tuple[str, ...]  # the topics of readings to consume
    group_id: str = "streamwatch"  # replicas in one group share the partitions
    client_id: str = "streamwatch"  # names this client in the broker's logs and quotas
    auto_offset_reset: str = "earliest"  # where a group without offsets starts: or "latest"
    max_poll_records: int = 2000  # records per poll, and so per engine batch
    poll_timeout_ms: int = 500  # the longest a poll waits for records
    security_protocol: str = "PLAINTEXT"  # or SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username: str | None = None  # required with SASL_*
    sasl_password_env: str | None = None  # the *name* of the variable holding the password
    ssl_cafile: str | None = None  # PEM file of the CA to trust (SSL, SASL_SSL)
    ssl_certfile: str | None = None  # client certificate (PEM), for brokers that ask for one
    ssl_keyfile: str | None = None  # its private key (PEM)
    ssl_key_password_env: str | None = None  # the *name* of the variable holding its password
    ssl_check_hostname: bool = True  # the broker's certificate must name its host
    # how partitions are shared out: cooperative-sticky moves only what must move in a
    # rebalance; range or roundrobin (eager: every member gives up every partition) only to
    # move a group over from replicas that use them (kafka-python cannot mix the two)
    partition_assignment: str = "cooperative-sticky"
    # static membership: a member that comes back under the same id within the session
    # timeout gets its partitions back with no rebalance; from the environment (a pod's name)
    group_instance_id: str | None = None
    group_instance_id_env: str | None = None  # or the *name* of a variable holding it
    consumer: dict[str, Any] = field(default_factory=dict)  # more kafka-python consumer settings
    producer: dict[str, Any] = field(default_factory=dict)  # more kafka-python producer settings

    def check(self, path: str) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"{path}.security_protocol", f"must be one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"{path}.sasl_mechanism",
                f"{self.security_protocol} needs one of {', '.join(SASL_MECHANISMS)}",
            )
        if sasl and not (self.sasl_username and self.sasl_password_env):
            raise ConfigError(
                f"{path}.sasl_username" if not self.sasl_username else f"{path}.sasl_password_env",
                f"{self.security_protocol} needs sasl_username and sasl_password_env",
            )
        for section, reserved in (
            ("consumer", CONSUMER_RESERVED),
            ("producer", PRODUCER_RESERVED),
        ):
            for key in getattr(self, section):
                if key in reserved:
                    raise ConfigError(
                        f"{path}.{section}.{key}", "set by streamwatch itself; not configurable"
                    )
        if not self.input_topics:
            raise ConfigError(f"{path}.input_topics", "at least one topic is required")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError(f"{path}.auto_offset_reset", "must be 'earliest' or 'latest'")
        _positive(path, "max_poll_records", self.max_poll_records)
        _positive(path, "poll_timeout_ms", self.poll_timeout_ms)
        if self.partition_assignment not in ASSIGNMENTS:
            raise ConfigError(
                f"{path}.partition_assignment", f"must be one of {', '.join(ASSIGNMENTS)}"
            )
        if self.group_instance_id is not None and self.group_instance_id_env is not None:
            raise ConfigError(
                f"{path}.group_instance_id_env", "set group_instance_id or this, not both"
            )
        if self.group_instance_id == "":
            raise ConfigError(f"{path}.group_instance_id", "must not be empty")

    def instance_id(self, environ: Mapping[str, str]) -> str | None:
        """The static group member id, if one is configured."""
        if self.group_instance_id_env is None:
            return self.group_instance_id
        found = environ.get(self.group_instance_id_env, "")
        if not found:
            raise ConfigError(
                "kafka.group_instance_id_env",
                f"environment variable {self.group_instance_id_env!r} is not set or empty",
            )
        return found

    def client_settings(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """kafka-python settings shared by consumer and producer, secrets read from
        ``environ`` (never stored in the config, never logged)."""
        out: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL_"):
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = _secret(
                environ, self.sasl_password_env, "kafka.sasl_password_env"
            )
        if self.security_protocol.endswith("SSL"):
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, key):
                    out[key] = getattr(self, key)
            out["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_key_password_env:
                out["ssl_password"] = _secret(
                    environ, self.ssl_key_password_env, "kafka.ssl_key_password_env"
                )
        return out


def _secret(environ: Mapping[str, str], name: str | None, path: str) -> str:
    if not name or name not in environ:
        raise ConfigError(path, f"environment variable {name!r} is not set")
    return environ[name]


@dataclass(frozen=True)
class InputConfig:
    source: str = "kafka"  # or "file": JSON lines from ``path`` ("-": standard input)
    path: str = "-"  # file source: the file to read
    batch_size: int = 2000  # file source: lines per engine batch
    stream_field: str = "stream"  # the message field that holds the stream id
    timestamp_field: str = "ts"  # epoch seconds; the record's timestamp where absent
    value_fields: tuple[str, ...] = ("value",)  # one per model target, in the model's order
    covariate_fields: tuple[str, ...] = ()  # one per model covariate, in the model's order
    stream_from_key: bool = False  # true: the record key is the stream id
    max_message_bytes: int = 65536  # larger messages are dead-lettered (too_large)
    max_stream_id_length: int = 256  # characters; longer ids are dead-lettered (bad_stream)
    # a reading dated more than this after the daemon's clock is dead-lettered
    # (future_timestamp) rather than stepped; null accepts any date
    max_future_seconds: float | None = 3600.0

    def check(self, path: str) -> None:
        if self.source not in ("kafka", "file"):
            raise ConfigError(f"{path}.source", "must be 'kafka' or 'file'")
        if not self.value_fields:
            raise ConfigError(f"{path}.value_fields", "at least one field is required")
        _positive(path, "batch_size", self.batch_size)
        _positive(path, "max_message_bytes", self.max_message_bytes)
        _positive(path, "max_stream_id_length", self.max_stream_id_length)
        if self.max_future_seconds is not None and self.max_future_seconds < 0:
            raise ConfigError(f"{path}.max_future_seconds", "must be >= 0 (or null: no limit)")


@dataclass(frozen=True)
class ModelConfig:
    path: str = "models/example"  # the model artifact directory (model.onnx, model.json)
    threads: int = 1  # ONNX Runtime intra-op threads
    max_rows: int = 512  # rows per ONNX call

    def check(self, path: str) -> None:
        _positive(path, "threads", self.threads)
        _positive(path, "max_rows", self.max_rows)


# remote write's own headers, and Authorization: a secret never written in the config
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "content-encoding",
        "content-length",
        "content-type",
        "host",
        "user-agent",
        "x-prometheus-remote-write-version",
    }
)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class RemoteWriteConfig:
    url: str  # the receiver's remote-write endpoint, e.g. http://prometheus:9090/api/v1/write
    # the stream ids to send, each an id or a glob pattern (host-*.cpu); none: every stream
    streams: tuple[str, ...] = ()
    every: int = 1  # send every n-th reading of each stream (1: all), and every one flagged
    # streams sent at most: past it, the readings of streams not yet sent are dropped and
    # counted; a stream silent for an hour gives its place up
    max_streams: int = 1000
    # the forecast band sent: the central interval of this probability that the served
    # scale implies (Gaussian)
    band: float = 0.99
    labels: dict[str, Any] = field(default_factory=dict)  # added to every series: job, cluster
    headers: dict[str, Any] = field(default_factory=dict)  # sent with every request: X-Scope-OrgID
    bearer_token_file: str | None = None  # a file holding the bearer token, read at each send
    ca_file: str | None = None  # PEM file of the CA to trust (https); default: the system's
    timeout_seconds: float = 10.0  # one request's limit
    flush_seconds: float = 5.0  # samples wait at most this long before they are sent ...
    max_samples_per_send: int = 2000  # ... or until this many are waiting
    queue_samples: int = 100000  # samples waiting at most; past it new ones are dropped
    # a request refused with a 5xx or 429, or not answered, is tried again with backoff for
    # this long, then dropped; other 4xx are dropped at once
    retry_seconds: float = 30.0

    def check(self, path: str) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{path}.url", "must be an http:// or https:// URL")
        for i, pattern in enumerate(self.streams):
            if not pattern:
                raise ConfigError(f"{path}.streams[{i}]", "must not be empty")
        _positive(path, "every", self.every)
        _positive(path, "max_streams", self.max_streams)
        if not 0 < self.band < 1:
            raise ConfigError(f"{path}.band", "must be a probability between 0 and 1 (0.99)")
        for name, value in self.labels.items():
            where = key_path(f"{path}.labels", name)
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ConfigError(where, "not a label name ([a-zA-Z_][a-zA-Z0-9_]*, no __)")
            if name in ("stream", "field"):
                raise ConfigError(where, "set by streamwatch itself on every series")
            if not isinstance(value, str) or not value:
                raise ConfigError(where, f"expected a non-empty string, got {_shown(value)}")
        for name, value in self.headers.items():
            where = key_path(f"{path}.headers", name)
            if name.lower() == "authorization":
                raise ConfigError(where, "a secret: write it to a file, named by bearer_token_file")
            if name.lower() in _RESERVED_HEADERS:
                raise ConfigError(where, "set by streamwatch itself; not configurable")
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ConfigError(where, "not an HTTP header name")
            if not isinstance(value, str) or any(c in value for c in "\r\n"):
                raise ConfigError(where, f"expected a string on one line, got {_shown(value)}")
        _positive(path, "timeout_seconds", self.timeout_seconds)
        _positive(path, "flush_seconds", self.flush_seconds)
        _positive(path, "max_samples_per_send", self.max_samples_per_send)
        _positive(path, "queue_samples", self.queue_samples)
        if self.retry_seconds < 0:
            raise ConfigError(f"{path}.retry_seconds", "must be >= 0 (0: never retried)")

    def check_paths(self, path: str) -> None:
        """The files it names are readable here (checked as the daemon starts)."""
        if self.bearer_token_file is not None:
            try:
                with open(self.bearer_token_file, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(
                    f"{path}.bearer_token_file",
                    f"cannot read {self.bearer_token_file!r}: {exc.strerror or exc}",
                ) from None
        try:
            self.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{path}.ca_file", f"cannot use {self.ca_file!r}: {_one_line(str(exc), 100)}"
            ) from None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings for an https URL with ``ca_file``; None: urllib's defaults."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None


@dataclass(frozen=True)
class OutputsConfig:
    anomalies_topic: str = "anomalies"  # flagged verdicts, keyed by stream id
    dead_letter_topic: str = "streamwatch-dead-letters"  # messages that are not readings
    scores_topic: str | None = None  # every verdict, not only anomalies
    path: str = "-"  # file source: anomaly (and score) lines go here ("-": standard output)
    dead_letter_path: str = "-"  # file source: dead letters go here ("-": standard error)
    # a dead letter (key, value and headers) is cut to this size, saying so in its headers,
    # so that it always fits the producer's max_request_size and the topic's max.message.bytes
    dead_letter_max_bytes: int = 524288
    # per-stream readings, forecasts and scores to a Prometheus remote-write receiver (the
    # keys below); null: none sent
    remote_write: RemoteWriteConfig | None = None

    def check_paths(self) -> None:
        """What only the daemon's own machine can tell (see StateConfig.check_paths)."""
        if self.remote_write is not None:
            self.remote_write.check_paths("outputs.remote_write")

    def check(self, path: str) -> None:
        if self.dead_letter_max_bytes < MIN_DEAD_LETTER_BYTES:
            raise ConfigError(
                f"{path}.dead_letter_max_bytes", f"must be >= {MIN_DEAD_LETTER_BYTES}"
            )


@dataclass(frozen=True)
class StateConfig:
    max_streams: int = 1_000_000  # past it the least recently seen streams are evicted
    idle_ttl_seconds: float = 86400.0  # a stream silent this long is forgotten
    out_of_order: str = "skip"  # a reading older than its stream's last: skip (dead letter), accept
    max_gap_seconds: float | None = None  # a longer silence is a gap ...
    on_gap: str = "reset"  # ... which resets the stream's LSTM state, or carry on
    # per-partition checkpoints of every stream's state (checkpoint.py); None: none kept
    checkpoint_dir: str | None = None
    checkpoint_interval_seconds: float = 60.0  # and at every revocation and clean stop
    # a compacted topic the checkpoints also go to, so that a partition's state follows it to
    # another member (changelog.py); None: state stays on the member that wrote it
    changelog_topic: str | None = None

    def policy(self) -> TimePolicy:
        return TimePolicy(self.out_of_order, self.max_gap_seconds, self.on_gap)

    def check_paths(self) -> None:
        """What only the daemon's own machine can tell, checked as it starts rather than with
        the rest (``check-config`` runs where the config is written, not where it runs)."""
        if self.checkpoint_dir is None:
            return
        where = Path(self.checkpoint_dir)
        if not where.exists():
            try:
                where.mkdir(parents=True)
            except OSError as exc:
                raise ConfigError(
                    "state.checkpoint_dir", f"cannot create {str(where)!r}: {exc}"
                ) from exc
        if not where.is_dir():
            raise ConfigError("state.checkpoint_dir", f"{str(where)!r} is not a directory")
        if not os.access(where, os.W_OK):
            raise ConfigError("state.checkpoint_dir", f"directory {str(where)!r} is not writable")

    def check(self, path: str) -> None:
        self.policy()  # its ValueErrors name the key; build() turns them into ConfigErrors
        _positive(path, "max_streams", self.max_streams)
        _positive(path, "idle_ttl_seconds", self.idle_ttl_seconds)
        _positive(path, "checkpoint_interval_seconds", self.checkpoint_interval_seconds)
        if self.changelog_topic is not None:
            if self.checkpoint_dir is None:
                raise ConfigError(
                    f"{path}.changelog_topic",
                    "needs state.checkpoint_dir: the changelog is written with the checkpoints",
                )
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", self.changelog_topic):
                raise ConfigError(
                    f"{path}.changelog_topic",
                    "not a Kafka topic name (letters, digits, '.', '_' and '-', at most 249)",
                )


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "0.0.0.0"  # where /metrics, /healthz and /readyz are served
    port: int = 9108  # 0: any free port
    liveness_seconds: float = 60.0  # /healthz fails when the loop has not run for this long

    def check(self, path: str) -> None:
        _positive(path, "liveness_seconds", self.liveness_seconds)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{path}.port", "must be in 0..65535 (0: any free port)")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"  # DEBUG, INFO, WARNING or ERROR
    format: str = "text"  # or json: one JSON object a line (for Kubernetes)

    def check(self, path: str) -> None:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"{path}.level", "must be DEBUG, INFO, WARNING or ERROR")
        if self.format not in ("text", "json"):
            raise ConfigError(f"{path}.format", "must be 'text' or 'json'")


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig | None = None  # required when input.source is kafka
    input: InputConfig = field(default_factory=InputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # the scorer is its own config section: its fields, defaults and checks are the one source
    scoring: Scorer = field(default_factory=Scorer)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def check(self, path: str) -> None:
        if self.input.source == "kafka" and self.kafka is None:
            raise ConfigError("kafka", "required key is missing (input.source is kafka)")
        if self.input.source != "kafka" and self.state.checkpoint_dir is not None:
            raise ConfigError(
                "state.checkpoint_dir",
                "needs input.source kafka: a file has no committed offsets to resume from",
            )
        changelog = self.state.changelog_topic
        if changelog is not None:
            if self.input.source != "kafka":
                raise ConfigError("state.changelog_topic", "needs input.source kafka")
            o = self.outputs
            taken = {o.anomalies_topic, o.scores_topic, o.dead_letter_topic}
            taken |= set(self.kafka.input_topics) if self.kafka else set()
            if changelog in taken:
                raise ConfigError(
                    "state.changelog_topic",
                    f"{changelog!r} is also an input or output topic: the changelog needs its own",
                )
        limit = self.kafka.producer.get("max_request_size", 1048576) if self.kafka else None
        # the record batch around a dead letter takes a few dozen bytes more than its contents
        if isinstance(limit, int) and self.outputs.dead_letter_max_bytes > limit - 1024:
            raise ConfigError(
                "outputs.dead_letter_max_bytes",
                f"must be at most kafka.producer.max_request_size - 1024 ({limit - 1024}): a "
                "larger dead letter could not be sent",
            )


def _positive(path: str, key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{path}.{key}", "must be > 0")


# -- turning user values into messages ---------------------------------------------------------
# Every user value or key that goes into a message passes through _shown or _label: the message
# stays one short line whatever the file holds (an alias bomb once put 3 GB into one).

_SHOWN_CHARS = 60
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,59}")
_INT64 = 2**63  # no int setting means anything beyond what numpy and Kafka can hold


class _BoundedRepr(reprlib.Repr):
    """reprlib's repr (a few items of a few levels), also for ints too long for ``str()``,
    which Python refuses past 4300 digits with a ValueError."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxdict = 4
        self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxstring = self.maxlong = self.maxother = _SHOWN_CHARS

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:
            return f"<{x.bit_length()}-bit int>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str, limit: int) -> str:
    """A message from a library, on one line and cut to ``limit`` characters."""
    return _clip(" ".join(text.split()), limit)


def _shown(value: Any) -> str:
    """``value``'s repr, cut to a few dozen characters, never expanded in full."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a repr that fails must not hide the config error being reported
        text = f"<{type(value).__name__}>"
    return _clip(text, _SHOWN_CHARS)  # a str's repr escapes line breaks: one line already


def _label(key: Any) -> str:
    """A mapping key as a component of a key path: a plain name as it is, anything else
    quoted (a key with a dot or a space must not read as two components)."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return _shown(key)


def key_path(path: str, key: Any) -> str:
    return f"{path}.{_label(key)}" if path else _label(key)


def _check_key(path: str, key: Any) -> None:
    if isinstance(key, str):
        return
    kind = {bool: "a boolean", int: "an integer", float: "a number", type(None): "null"}
    hint = " (YAML reads unquoted yes, no, on and off as booleans)" if isinstance(key, bool) else ""
    raise ConfigError(
        key_path(path, key),
        f"a key must be a string, not {kind.get(type(key), type(key).__name__)}; quote it{hint}",
    )


# -- validation --------------------------------------------------------------------------------


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; dataclasses recurse."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)  # type: ignore[arg-type]
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            _check_key(path, key)
        return dict(value)
    if origin is tuple:
        if isinstance(value, str):  # a single topic may be written without a list
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(path, f"expected {tp.__name__}, got a boolean")
    if tp is float and isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # past 1e308
            raise ConfigError(path, f"out of range: {_shown(value)}") from None
    if not isinstance(value, tp):
        raise ConfigError(
            path, f"expected {tp.__name__}, got {type(value).__name__} {_shown(value)}"
        )
    if tp is float and math.isnan(value):  # it would pass every "must be > 0" check
        raise ConfigError(path, "expected a number, got nan")
    if tp is int and not -_INT64 <= value < _INT64:
        raise ConfigError(path, f"out of range: {_shown(value)}")
    return value


def build(cls: type, data: Any, path: str) -> Any:
    """A frozen dataclass ``cls`` from a mapping, strictly: unknown keys, missing required
    keys and wrong types raise ConfigError naming the key path under ``path``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        _check_key(path, key)
        if key not in fields:
            now = RENAMED.get(f"{path}.{key}")
            raise ConfigError(key_path(path, key), f"unknown key{f' ({now})' if now else ''}")
    kwargs = {}
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(where, "required key is missing")
    try:
        obj = cls(**kwargs)
        check = getattr(obj, "check", None)
        if check is not None:
            check(path)
    except (TypeError, ValueError) as exc:  # validation by the objects a section builds
        raise _config_error(path, exc) from None
    return obj


def _config_error(path: str, exc: Exception) -> ConfigError:
    """A section's own validation -> a ConfigError: at the setting's key path under ``path``
    where the core names its setting (InvalidSetting: "scoring.threshold"), else at ``path``."""
    if isinstance(exc, InvalidSetting):
        key = exc.key.split(".", 1)[-1]  # the setting within its section
        # the message may quote the refused value (TrainConfig's does): cut it, as _shown would
        return ConfigError(f"{path}.{key}" if path else key, _one_line(exc.message, 200))
    return ConfigError(path, _one_line(str(exc), 200))


def parse(data: Any) -> Config:
    result: Config = build(Config, data, "")
    return result


def load(path: Path | str) -> Config:
    """Read and validate a YAML config file."""
    return parse(read_yaml(path))


# -- reading YAML ------------------------------------------------------------------------------
# Bounds that no real config comes near (the example is 5 kB and some 150 values) but that keep
# a hostile file to a second or two and little memory: pure-Python PyYAML takes some 30 s and
# 350 MB for a 1 MiB flow list of numbers, so the node count bounds the work, not the size.
MAX_CONFIG_BYTES = 1 << 20
_MAX_NODES = 10_000
_MAX_DEPTH = 32
_MAX_NUMBER_CHARS = 100  # int() of a long base-60 number (1:0:0:...) is quadratic
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that a streamwatch config may not hold."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, too many or too deeply nested nodes, and overlong
    numbers, each at its line, and reports a constructor's own errors (a date of month 13,
    ``!!bool maybe``) at their line rather than as tracebacks.

    Aliases are refused where the composer meets them, before anything is copied: an alias
    bomb is turned down at its first ``*`` in milliseconds.  Anchors (``&name``) alone are
    allowed: they copy nothing, and tools only write them for the aliases that then fail, so
    the error points at the line that would expand."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        mark: Any = event.start_mark  # the stubs allow libyaml's Mark too; this is the Python one
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                problem=f"YAML aliases (*{_clip(str(event.anchor), 40)}) are not supported in "
                "a streamwatch config; write the value out",
                problem_mark=mark,
            )
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _Refused(
                problem=f"more than {_MAX_NODES} values; a streamwatch config has far fewer",
                problem_mark=mark,
            )
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise _Refused(
                    problem=f"nested more than {_MAX_DEPTH} levels deep",
                    problem_mark=mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        what = str(node.tag).rsplit(":", 1)[-1]
        if (
            isinstance(node, yaml.ScalarNode)
            and node.tag in _NUMBER_TAGS
            and len(node.value) > _MAX_NUMBER_CHARS
        ):
            raise _Refused(
                problem=f"{what} of {len(node.value)} characters; too long for a setting",
                problem_mark=node.start_mark,
            )
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # PyYAML's constructors raise ValueError, KeyError, ...
            shown = _shown(node.value) if isinstance(node, yaml.ScalarNode) else "this"
            # a ValueError says what is wrong (month must be in 1..12); the others do not
            why = f" ({_one_line(str(exc), 80)})" if isinstance(exc, ValueError) else ""
            raise _Refused(
                problem=f"cannot read {shown} as {_clip(what, 30)}{why}",
                problem_mark=node.start_mark,
            ) from None


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """PyYAML's error as one line: where, then what (its own text spans several lines and
    quotes the offending line)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = _one_line(exc.problem or exc.context or "", 150)
        if isinstance(exc, _Refused):
            return where + problem
        context = ""
        if exc.context and exc.problem and exc.context_mark:
            context = f" ({_one_line(exc.context, 60)} at line {exc.context_mark.line + 1})"
        return f"{where}not valid YAML: {problem}{context}"
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        line = text.count("\n", 0, exc.position) + 1
        return f"line {line}: not valid YAML: character #x{exc.character:04x} is not allowed"
    return f"not valid YAML: {_one_line(str(exc), 150)}"


def read_yaml(path: Path | str) -> Any:
    """The YAML document in ``path``, within the bounds above; anything else is a ConfigError
    naming the file and, where there is one, the line."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # never the whole of a huge file (or /dev/zero)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read config ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        what = f"{size} bytes" if size > MAX_CONFIG_BYTES else "larger"
        raise ConfigError(
            "",
            f"{path}: a config may be at most {MAX_CONFIG_BYTES} bytes (1 MiB); this one is {what}",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            "", f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})"
        ) from None
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader, bounded
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: {_yaml_problem(exc, text)}") from None
    except RecursionError:  # the depth bound should come first; this keeps it a ConfigError
        raise ConfigError("", f"{path}: nested too deeply") from None

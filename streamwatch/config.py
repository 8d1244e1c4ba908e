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
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from streamwatch.engine import TimePolicy
from streamwatch.errors import ConfigError
from streamwatch.scoring import Scorer

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Settings that carry streamwatch's guarantees (no auto-commit, acks from all replicas) or
# have their own keys above.
CONSUMER_RESERVED = frozenset(
    {
        "bootstrap_servers",
        "group_id",
        "client_id",
        "enable_auto_commit",
        "auto_offset_reset",
        "max_poll_records",
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
    bootstrap_servers: str
    input_topics: tuple[str, ...]
    group_id: str = "streamwatch"
    client_id: str = "streamwatch"
    auto_offset_reset: str = "earliest"
    max_poll_records: int = 2000
    poll_timeout_ms: int = 500
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password_env: str | None = None  # the *name* of the variable holding the password
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password_env: str | None = None
    ssl_check_hostname: bool = True
    consumer: dict[str, Any] = field(default_factory=dict)  # more kafka-python settings
    producer: dict[str, Any] = field(default_factory=dict)

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
    path: str = "-"
    batch_size: int = 2000  # file source: lines per engine batch
    stream_field: str = "stream"
    timestamp_field: str = "ts"
    value_fields: tuple[str, ...] = ("value",)  # one per model target, in the model's order
    covariate_fields: tuple[str, ...] = ()  # one per model covariate, in the model's order
    stream_from_key: bool = False
    max_message_bytes: int = 65536
    max_stream_id_length: int = 256

    def check(self, path: str) -> None:
        if self.source not in ("kafka", "file"):
            raise ConfigError(f"{path}.source", "must be 'kafka' or 'file'")
        if not self.value_fields:
            raise ConfigError(f"{path}.value_fields", "at least one field is required")
        _positive(path, "batch_size", self.batch_size)
        _positive(path, "max_message_bytes", self.max_message_bytes)
        _positive(path, "max_stream_id_length", self.max_stream_id_length)


@dataclass(frozen=True)
class ModelConfig:
    path: str = "models/example"
    threads: int = 1
    max_rows: int = 512  # rows per ONNX call

    def check(self, path: str) -> None:
        _positive(path, "threads", self.threads)
        _positive(path, "max_rows", self.max_rows)


@dataclass(frozen=True)
class ScoringConfig:
    threshold: float = 0.5  # score in [0, 1]; 0.5 = a one-in-100,000 deviation
    warmup: int = 600  # readings per stream before it can be flagged
    short_alpha: float = 0.1
    long_window: int = 2000
    learn_anomalies: bool = False
    hold: int = 0  # readings an episode stays flagged after its last trigger
    novelty: float | None = 0.13  # null: flag on the score alone
    envelope: float | None = None  # e.g. 0.05: flag readings 5 % beyond the trained range
    window: int | None = None  # e.g. 2100: the nonparametric threshold over that many misses

    def scorer(self) -> Scorer:
        return Scorer(
            self.threshold,
            self.warmup,
            self.short_alpha,
            self.long_window,
            self.learn_anomalies,
            self.hold,
            self.novelty,
            self.envelope,
            self.window,
        )

    def check(self, path: str) -> None:
        self.scorer()  # its ValueErrors name the key; build() turns them into ConfigErrors


@dataclass(frozen=True)
class OutputsConfig:
    anomalies_topic: str = "anomalies"
    dead_letter_topic: str = "streamwatch-dead-letters"
    scores_topic: str | None = None  # every verdict, not only anomalies
    path: str = "-"  # file source: anomaly (and score) lines go here ("-": standard output)
    dead_letter_path: str = "-"  # file source: dead letters go here ("-": standard error)


@dataclass(frozen=True)
class StateConfig:
    max_streams: int = 1_000_000
    idle_ttl_seconds: float = 86400.0
    out_of_order: str = "skip"  # a reading older than its stream's last: skip (dead letter)
    max_gap_seconds: float | None = None  # a longer silence is a gap ...
    on_gap: str = "reset"  # ... which resets the stream's LSTM state, or carry on
    checkpoint_path: str | None = None  # state written here at shutdown, restored at start

    def policy(self) -> TimePolicy:
        return TimePolicy(self.out_of_order, self.max_gap_seconds, self.on_gap)

    def check_paths(self) -> None:
        """What only the daemon's own machine can tell, checked as it starts rather than with
        the rest (``check-config`` runs where the config is written, not where it runs)."""
        if self.checkpoint_path is None:
            return
        where = Path(self.checkpoint_path).parent
        if not where.is_dir():
            raise ConfigError("state.checkpoint_path", f"no directory {str(where)!r}")
        if not os.access(where, os.W_OK):
            raise ConfigError("state.checkpoint_path", f"directory {str(where)!r} is not writable")

    def check(self, path: str) -> None:
        self.policy()  # its ValueErrors name the key; build() turns them into ConfigErrors
        _positive(path, "max_streams", self.max_streams)
        _positive(path, "idle_ttl_seconds", self.idle_ttl_seconds)


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "0.0.0.0"
    port: int = 9108
    liveness_seconds: float = 60.0  # /healthz fails when the loop has not run for this long

    def check(self, path: str) -> None:
        _positive(path, "liveness_seconds", self.liveness_seconds)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{path}.port", "must be in 0..65535 (0: any free port)")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"

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
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def check(self, path: str) -> None:
        if self.input.source == "kafka" and self.kafka is None:
            raise ConfigError("kafka", "required key is missing (input.source is kafka)")


def _positive(path: str, key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{path}.{key}", "must be > 0")


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
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if origin is tuple:
        if isinstance(value, str):  # a single topic may be written without a list
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(path, f"expected {tp.__name__}, got a boolean")
    if not isinstance(value, tp):
        raise ConfigError(path, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
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
        if key not in fields:
            raise ConfigError(f"{path}.{key}" if path else str(key), "unknown key")
    kwargs = {}
    for name, f in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key_path, "required key is missing")
    try:
        obj = cls(**kwargs)
        check = getattr(obj, "check", None)
        if check is not None:
            check(path)
    except (TypeError, ValueError) as exc:  # validation by the objects a section builds
        raise _config_error(path, exc) from None
    return obj


def _config_error(path: str, exc: Exception) -> ConfigError:
    """Validation messages of the core read "section.key what is wrong" (Scorer, TimePolicy,
    Normalizer, TrainConfig): turn that into the key path under ``path``."""
    first, _, rest = str(exc).partition(" ")
    if "." in first and rest:
        key = first.rstrip(":").split(".", 1)[1]
        return ConfigError(f"{path}.{key}" if path else key, rest)
    return ConfigError(path, str(exc))


def parse(data: Any) -> Config:
    result: Config = build(Config, data, "")
    return result


def load(path: Path | str) -> Config:
    """Read and validate a YAML config file."""
    return parse(read_yaml(path))


def read_yaml(path: Path | str) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: not valid YAML ({exc})") from None
    return data

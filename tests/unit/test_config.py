from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamwatch.config import load, parse
from streamwatch.errors import ConfigError

BASE = {"kafka": {"bootstrap_servers": "k:9092", "input_topics": ["in"]}}


def test_defaults_are_filled_in() -> None:
    cfg = parse(BASE)
    assert cfg.kafka.input_topics == ("in",)
    assert cfg.outputs.anomalies_topic == "anomalies"
    assert cfg.state.idle_ttl_seconds == 86400.0
    assert cfg.scoring.scorer().novelty == 0.13
    assert parse({**BASE, "scoring": {"novelty": None}}).scoring.scorer().novelty is None
    assert cfg.scoring.scorer().envelope is None  # off unless asked for
    assert parse({**BASE, "scoring": {"envelope": 0.05}}).scoring.scorer().envelope == 0.05


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({}, "kafka"),
        ({"kafka": {"input_topics": ["in"]}}, "kafka.bootstrap_servers"),
        ({**BASE, "extra": 1}, "extra"),
        ({**BASE, "model": {"threads": "two"}}, "model.threads"),
        ({**BASE, "model": {"threads": 0}}, "model.threads"),
        ({**BASE, "scoring": {"threshold": True}}, "scoring.threshold"),
        ({**BASE, "scoring": {"novelty": -1}}, "scoring.novelty"),
        ({**BASE, "scoring": {"envelope": -0.1}}, "scoring.envelope"),
        ({**BASE, "metrics": {"port": 70000}}, "metrics.port"),
        ({**BASE, "logging": {"format": "xml"}}, "logging.format"),
        ({"kafka": {"bootstrap_servers": "k", "input_topics": [1]}}, "kafka.input_topics[0]"),
        ({"kafka": {"bootstrap_servers": "k", "input_topics": []}}, "kafka.input_topics"),
        ({**BASE, "state": []}, "state"),
    ],
)
def test_errors_name_the_key_path(data: dict, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert err.value.path == path
    assert str(err.value).startswith(path)


def test_load_reports_bad_yaml(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(p)


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamwatch", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "kafka:\n  bootstrap_servers: k:9092\n  input_topics: [in]\nscoring:\n  threshhold: 3\n"
    )
    proc = _check_config(p)
    assert proc.returncode == 78
    assert "scoring.threshhold: unknown key" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_run_with_bad_config_exits_78(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "kafka:\n  bootstrap_servers: k:9092\n  input_topics: [in]\nmodel:\n  max_rows: -1\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "streamwatch", "run", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "model.max_rows: must be > 0" in proc.stderr


def _kafka(**extra: object) -> dict:
    return {"kafka": {"bootstrap_servers": "a:1,b:2", "input_topics": ["in"], **extra}}


def test_sasl_ssl_settings_with_secrets_from_the_environment() -> None:
    cfg = parse(
        _kafka(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="svc",
            sasl_password_env="KAFKA_PW",
            ssl_cafile="/etc/ca.pem",
        )
    )
    assert cfg.kafka is not None
    settings = cfg.kafka.client_settings({"KAFKA_PW": "s3cret"})
    assert settings["bootstrap_servers"] == ["a:1", "b:2"]
    assert settings["sasl_plain_password"] == "s3cret"
    assert settings["sasl_mechanism"] == "SCRAM-SHA-512" and settings["ssl_cafile"] == "/etc/ca.pem"
    assert "s3cret" not in repr(cfg)  # the config holds the variable's name, not the secret
    with pytest.raises(ConfigError) as err:
        cfg.kafka.client_settings({})
    assert err.value.path == "kafka.sasl_password_env"


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"security_protocol": "TLS"}, "kafka.security_protocol"),
        ({"security_protocol": "SASL_PLAINTEXT"}, "kafka.sasl_mechanism"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}, "kafka.sasl_username"),
        ({"consumer": {"enable_auto_commit": True}}, "kafka.consumer.enable_auto_commit"),
        ({"producer": {"acks": 1}}, "kafka.producer.acks"),
        ({"consumer": [1]}, "kafka.consumer"),
    ],
)
def test_security_and_tuning_errors_name_the_key(extra: dict, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(_kafka(**extra))
    assert err.value.path == path


def test_check_config_knows_kafka_python_settings(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "kafka:\n  bootstrap_servers: k:9092\n  input_topics: [in]\n  consumer:\n"
        "    fetch_max_bytes: 1048576\n    fetch_max_byts: 1\n"
    )
    proc = _check_config(p)
    assert proc.returncode == 78
    assert "kafka.consumer.fetch_max_byts: not a kafka-python setting" in proc.stderr


def test_file_source_needs_no_kafka_section_but_kafka_does() -> None:
    assert parse({"input": {"source": "file"}}).kafka is None
    with pytest.raises(ConfigError) as err:
        parse({"input": {"source": "kafka"}})
    assert err.value.path == "kafka"

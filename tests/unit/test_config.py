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


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({}, "kafka"),
        ({"kafka": {"input_topics": ["in"]}}, "kafka.bootstrap_servers"),
        ({**BASE, "extra": 1}, "extra"),
        ({**BASE, "model": {"threads": "two"}}, "model.threads"),
        ({**BASE, "model": {"threads": 0}}, "model.threads"),
        ({**BASE, "scoring": {"threshold": True}}, "scoring.threshold"),
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


def test_check_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "kafka:\n  bootstrap_servers: k:9092\n  input_topics: [in]\nscoring:\n  threshhold: 3\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "streamwatch", "check-config", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
    )
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

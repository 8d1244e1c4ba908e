"""The patches of kafka-python's internals: the versions they know, and what an operator sees
when one stands down.  No broker: a consumer twin holds the internals the patches reach for (a
real KafkaConsumer dials its bootstrap servers at once); tests/integration patch real ones."""

from __future__ import annotations

import logging
import re
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kafka
import pytest
import tomllib
from kafka.consumer.fetcher import Fetcher
from prometheus_client import CollectorRegistry

from streamwatch.metrics import Metrics
from streamwatch.sources import kafka as kafka_source
from streamwatch.sources import kafka_compat

ROOT = Path(__file__).resolve().parents[2]
ACTIVE = "streamwatch_kafka_patch_active"


def test_pyproject_pins_kafka_python_to_the_range_the_patches_know() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(r"kafka-python\s*[<>=!~;\[]", d)]
    assert len(pins) == 1, deps
    assert re.sub(r"\s", "", pins[0]) == f"kafka-python{kafka_compat.REQUIREMENT}"


def test_the_installed_kafka_python_is_one_the_patches_know() -> None:
    installed = version("kafka-python")
    assert kafka_compat.known(installed), (
        f"kafka-python {installed} is installed, but the patches of its internals know "
        f"{kafka_compat.REQUIREMENT} only (streamwatch/sources/kafka_compat.py): the daemon would "
        "run without them; install a known version, or check the patches and widen the range"
    )
    assert kafka.__version__ == installed  # what the patches check at run time


def _consumer() -> Any:
    """kafka-python's own Fetcher class (the record path reads only its config) and a
    coordinator with the join methods, as a KafkaConsumer holds them."""
    fetcher = Fetcher.__new__(Fetcher)
    fetcher.config = {}

    async def join_group_async(timeout_ms: int | None = None) -> bool:
        return True

    coordinator = SimpleNamespace(
        join_group_async=join_group_async, need_rejoin=lambda: False, _join_task=None
    )
    return SimpleNamespace(_fetcher=fetcher, _coordinator=coordinator)


@pytest.fixture
def logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> pytest.LogCaptureFixture:
    monkeypatch.setattr(kafka_source, "_warned", set())  # a fresh process, as far as "once" goes
    # the CLI, run in-process by other tests, stops streamwatch's logger propagating to caplog
    monkeypatch.setattr(logging.getLogger("streamwatch"), "propagate", True)
    caplog.set_level(logging.INFO, logger="streamwatch")
    return caplog


def _warnings(logs: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in logs.records if r.levelno >= logging.WARNING]


def test_both_patches_install_on_the_kafka_python_they_know(
    logs: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    assert kafka_source.install_patches(_consumer(), Metrics(registry)) == {
        "fast_records": True,
        "join_fix": True,
    }
    for patch in ("fast_records", "join_fix"):
        assert registry.get_sample_value(ACTIVE, {"patch": patch}) == 1
    assert _warnings(logs) == []


def test_a_patch_on_an_unknown_version_warns_once_and_reads_0(
    monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kafka, "__version__", "3.1.0")  # what the version check reads
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for _ in range(2):  # two consumers in one process
        assert kafka_source.install_patches(_consumer(), metrics) == {
            "fast_records": False,
            "join_fix": False,
        }
    for patch in ("fast_records", "join_fix"):
        assert registry.get_sample_value(ACTIVE, {"patch": patch}) == 0
    seen = _warnings(logs)
    assert len(seen) == 2, seen  # one per patch, not one per consumer
    for line, patch in zip(sorted(seen), ("fast_records", "join_fix"), strict=True):
        assert f"patch {patch} not installed" in line
        assert "kafka-python 3.1.0" in line and kafka_compat.REQUIREMENT in line


def test_a_patch_whose_internals_are_missing_warns_and_reads_0(
    logs: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    active = kafka_source.install_patches(SimpleNamespace(), Metrics(registry))  # type: ignore[arg-type]
    assert active == {"fast_records": False, "join_fix": False}
    for patch in ("fast_records", "join_fix"):
        assert registry.get_sample_value(ACTIVE, {"patch": patch}) == 0
    seen = _warnings(logs)
    assert len(seen) == 2, seen
    assert all(f"kafka-python {kafka.__version__}" in s and "internals" in s for s in seen)


def test_without_metrics_a_patch_still_warns(
    monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kafka_compat, "known", lambda _version: False)
    assert kafka_source.install_patches(_consumer()) == {
        "fast_records": False,
        "join_fix": False,
    }
    assert len(_warnings(logs)) == 2

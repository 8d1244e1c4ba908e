"""Shared fixtures: a real local Kafka broker and a really trained model, once per session."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_localkafka():  # deploy/kafka/localkafka.py is a script, not part of the package
    spec = importlib.util.spec_from_file_location("localkafka", ROOT / "deploy/kafka/localkafka.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real broker: the one STREAMWATCH_KAFKA_BOOTSTRAP (and _SASL_BOOTSTRAP, a
    SASL_PLAINTEXT listener with PLAIN and SCRAM-SHA-256 for user streamwatch /
    streamwatch-secret) name, or one we start with both listeners."""
    given = os.environ.get("STREAMWATCH_KAFKA_BOOTSTRAP")
    if given:
        yield {"plain": given, "sasl": os.environ.get("STREAMWATCH_KAFKA_SASL_BOOTSTRAP", "")}
        return
    broker = _load_localkafka().LocalKafka(tmp_path_factory.mktemp("kafka"))
    bootstrap = broker.start()
    try:
        yield {"plain": bootstrap, "sasl": broker.sasl_bootstrap_file.read_text().strip()}
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: dict[str, str]) -> str:
    return kafka_broker["plain"]


@pytest.fixture(scope="session")
def kafka_sasl_bootstrap(kafka_broker: dict[str, str]) -> str:
    assert kafka_broker["sasl"], "set STREAMWATCH_KAFKA_SASL_BOOTSTRAP with an external broker"
    return kafka_broker["sasl"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model really trained with PyTorch on synthetic data, exported to ONNX."""
    from streamwatch import synth
    from streamwatch.train.fit import TrainConfig, train_artifact

    data = synth.generate(
        synth.SynthSpec(n_streams=24, length=2016, anomalies_per_stream=0, seed=11)
    )
    series = {s: data.values[i] for i, s in enumerate(data.stream_ids)}
    out = tmp_path_factory.mktemp("model") / "model"
    train_artifact(series, TrainConfig(hidden_size=16, epochs=8, seed=3), out)
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"kafka_bootstrap", "kafka_sasl_bootstrap"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """Say how many tests ran against the real broker; a skipped one fails the run, so that a
    broker that could not start never passes as green."""
    stats = terminalreporter.stats
    kafka = {
        outcome: [r for r in stats.get(outcome, []) if "kafka" in getattr(r, "keywords", {})]
        for outcome in ("passed", "failed", "skipped", "error")
    }
    terminalreporter.write_line(
        f"real-Kafka tests: {len(kafka['passed'])} passed, {len(kafka['failed'])} failed, "
        f"{len(kafka['skipped'])} skipped"
    )
    if kafka["skipped"]:
        terminalreporter.write_line("real-Kafka tests were skipped: failing the run")
        terminalreporter._session.exitstatus = pytest.ExitCode.TESTS_FAILED

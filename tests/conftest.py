"""Shared fixtures: a real local Kafka broker and a really trained model, once per session."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_localkafka():  # deploy/kafka/localkafka.py is a script, not part of the package
    spec = importlib.util.spec_from_file_location("localkafka", ROOT / "deploy/kafka/localkafka.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["localkafka"] = module
    spec.loader.exec_module(module)
    return module


# kafka_broker's keys beside "plain", with the variables that name them for an external broker
_LISTENER_ENV = {
    "sasl": "STREAMWATCH_KAFKA_SASL_BOOTSTRAP",
    "ssl": "STREAMWATCH_KAFKA_SSL_BOOTSTRAP",
    "sasl_ssl": "STREAMWATCH_KAFKA_SASL_SSL_BOOTSTRAP",
    "mtls": "STREAMWATCH_KAFKA_MTLS_BOOTSTRAP",
    "cafile": "STREAMWATCH_KAFKA_SSL_CAFILE",
}


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real broker: the one STREAMWATCH_KAFKA_BOOTSTRAP names, or one we start with all the
    listeners of deploy/kafka/localkafka.py.  An external broker's other listeners come from
    the variables in _LISTENER_ENV: SASL_PLAINTEXT and SASL_SSL with PLAIN and SCRAM-SHA-256
    for user streamwatch / streamwatch-secret, SSL, SSL requiring a client certificate (mTLS),
    and the CA certificate file that the TLS ones chain to, with client.pem, client-key.pem and
    client-key-encrypted.pem (password streamwatch-key-secret) beside it."""
    given = os.environ.get("STREAMWATCH_KAFKA_BOOTSTRAP")
    if given:
        yield {"plain": given, **{k: os.environ.get(v, "") for k, v in _LISTENER_ENV.items()}}
        return
    broker = _load_localkafka().LocalKafka(tmp_path_factory.mktemp("kafka"))
    bootstrap = broker.start()
    try:
        yield {
            "plain": bootstrap,
            "sasl": broker.sasl_bootstrap_file.read_text().strip(),
            "ssl": broker.ssl_bootstrap_file.read_text().strip(),
            "sasl_ssl": broker.sasl_ssl_bootstrap_file.read_text().strip(),
            "mtls": broker.mtls_bootstrap_file.read_text().strip(),
            "cafile": str(broker.ca_file),
        }
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_strict_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The plain listener of a second local broker that, like many production ones, does not
    create topics on first use (auto.create.topics.enable=false).  Started (about 7 s) only
    for the tests that ask for it, even when STREAMWATCH_KAFKA_BOOTSTRAP names the main one."""
    broker = _load_localkafka().LocalKafka(tmp_path_factory.mktemp("kafka-strict"))
    bootstrap = broker.start(overrides={"auto.create.topics.enable": "false"})
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A third local broker that enforces ACLs (KRaft's StandardAuthorizer, nothing allowed
    without an ACL): its plain listener is a super user (anonymous) for setting ACLs up, its
    SASL_PLAINTEXT listener (``sasl``) authenticates user streamwatch, whom the ACLs govern.
    Started (about 7 s) only for the tests that ask for it."""
    broker = _load_localkafka().LocalKafka(tmp_path_factory.mktemp("kafka-acl"))
    plain = broker.start(
        overrides={
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }
    )
    try:
        yield {"plain": plain, "sasl": broker.sasl_bootstrap_file.read_text().strip()}
    finally:
        broker.stop()


@pytest.fixture
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker of the test's own (LocalKafka, started: about 7 s), for tests that stop, kill
    and start it again on the same data and port; stopped at the end."""
    broker = _load_localkafka().LocalKafka(tmp_path_factory.mktemp("kafka-own"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _listener(broker: dict[str, str], key: str) -> str:
    assert broker[key], f"set {_LISTENER_ENV[key]} with an external broker"
    return broker[key]


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: dict[str, str]) -> str:
    return kafka_broker["plain"]


@pytest.fixture(scope="session")
def kafka_sasl_bootstrap(kafka_broker: dict[str, str]) -> str:
    return _listener(kafka_broker, "sasl")


@pytest.fixture(scope="session")
def kafka_ssl_bootstrap(kafka_broker: dict[str, str]) -> str:
    return _listener(kafka_broker, "ssl")


@pytest.fixture(scope="session")
def kafka_sasl_ssl_bootstrap(kafka_broker: dict[str, str]) -> str:
    return _listener(kafka_broker, "sasl_ssl")


@pytest.fixture(scope="session")
def kafka_mtls_bootstrap(kafka_broker: dict[str, str]) -> str:
    return _listener(kafka_broker, "mtls")


@pytest.fixture(scope="session")
def kafka_ssl_cafile(kafka_broker: dict[str, str]) -> str:
    """The CA certificate (PEM) that the broker's TLS listeners chain to."""
    return _listener(kafka_broker, "cafile")


@pytest.fixture(scope="session")
def kafka_client_cert(kafka_ssl_cafile: str) -> dict[str, str]:
    """A client certificate for the mTLS listener, its key, and the key encrypted with
    streamwatch-key-secret: PEM files beside the CA certificate."""
    tls = Path(kafka_ssl_cafile).parent
    files = {
        "certfile": str(tls / "client.pem"),
        "keyfile": str(tls / "client-key.pem"),
        "encrypted_keyfile": str(tls / "client-key-encrypted.pem"),
    }
    missing = [f for f in files.values() if not Path(f).exists()]
    assert not missing, f"no {missing}: localkafka.py needs the openssl command to make them"
    return files


@pytest.fixture(scope="session")
def stranger_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA certificate (PEM) that did not sign the broker's: a client trusting only it must
    refuse the broker."""
    keytool = _load_localkafka().keytool()
    out = tmp_path_factory.mktemp("stranger")
    store = ["-keystore", str(out / "ca.p12"), "-storetype", "PKCS12", "-storepass", "stranger"]
    for args in (
        ["-genkeypair", "-alias", "ca", "-keyalg", "EC", "-dname", "CN=stranger", "-ext", "bc:c"],
        ["-exportcert", "-rfc", "-alias", "ca", "-file", str(out / "ca.pem")],
    ):
        subprocess.run([keytool, *args, *store], check=True, capture_output=True, timeout=60)
    return str(out / "ca.pem")


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
        names = getattr(item, "fixturenames", ())  # directly or through another fixture
        if {"kafka_broker", "kafka_strict_bootstrap", "kafka_acl_broker", "own_kafka"} & set(names):
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

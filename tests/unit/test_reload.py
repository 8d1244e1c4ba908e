"""SIGHUP reloads the model when the new one fits the running state, and keeps the old one,
saying why, when it does not."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry
from support import Daemon as Process
from support import metric, wait_metric

from streamwatch.codec import MessageFormat
from streamwatch.config import parse
from streamwatch.daemon import Daemon
from streamwatch.engine import Engine
from streamwatch.metrics import Metrics
from streamwatch.model import load_model
from streamwatch.model.artifact import ModelSpec, sha256_bytes, write_artifact
from streamwatch.normalize import Normalizer
from streamwatch.records import Record
from streamwatch.sinks.memory import MemorySink
from streamwatch.sources.memory import MemorySource
from streamwatch.state import StateStore
from streamwatch.train.export import export_onnx
from streamwatch.train.module import Forecaster


def _version_of(path: Path) -> str:
    return str(json.loads((path / "model.json").read_text())["version"])


def _version(path: Path, version: str) -> None:
    meta = json.loads((path / "model.json").read_text())
    meta["version"] = version
    (path / "model.json").write_text(json.dumps(meta))


@pytest.fixture
def served(model_dir: Path, tmp_path: Path) -> tuple[Daemon, Path, CollectorRegistry]:
    live = Path(shutil.copytree(model_dir, tmp_path / "live"))
    model = load_model(live)
    cfg = parse(
        {"kafka": {"bootstrap_servers": "x", "input_topics": ["in"]}, "model": {"path": str(live)}}
    )
    fmt = MessageFormat()
    records = [
        Record("in", 0, i, 0, None, fmt.encode("a", float(i), float(np.sin(i / 9))))
        for i in range(50)
    ]
    registry = CollectorRegistry()
    daemon = Daemon(
        cfg,
        MemorySource(records),
        MemorySink(),
        Engine(model, StateStore.for_model(model.spec), cfg.scoring),
        model.spec,
        Metrics(registry),
    )
    daemon.run_once()
    return daemon, live, registry


def test_compatible_model_is_swapped_in_and_state_kept(
    served: tuple[Daemon, Path, CollectorRegistry],
) -> None:
    daemon, live, registry = served
    state_before = daemon.engine.store.state.copy()
    _version(live, "v2")
    assert daemon.reload()
    assert daemon.spec.version == "v2" and daemon.engine.model.spec.version == "v2"
    assert np.array_equal(daemon.engine.store.state, state_before)  # streams keep their state
    assert (
        registry.get_sample_value("streamwatch_model_info", {"name": "lstm", "version": "v2"})
        == 1.0
    )
    reloads = "streamwatch_model_reloads_total"
    assert registry.get_sample_value(reloads, {"outcome": "ok"}) == 1.0
    assert registry.get_sample_value(reloads, {"outcome": "failed"}) == 0.0


def test_incompatible_model_is_refused_with_the_reason(
    served: tuple[Daemon, Path, CollectorRegistry], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, live, registry = served
    old = daemon.spec.version
    torch.manual_seed(0)
    data = export_onnx(Forecaster(1, 1, 8, 1).eval())
    write_artifact(
        live,
        ModelSpec("lstm", "small", ("value",), ("value",), 1, 8, Normalizer(), sha256_bytes(data)),
        data,
    )
    with caplog.at_level("WARNING", logger="streamwatch"):
        assert not daemon.reload()
    assert daemon.spec.version == old
    assert "hidden size 8 != 16" in caplog.text
    (live / "model.onnx").write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="streamwatch"):
        assert not daemon.reload()
    assert "sha256 mismatch" in caplog.text
    assert daemon.run_once() == 0  # still serving
    reloads = "streamwatch_model_reloads_total"
    assert registry.get_sample_value(reloads, {"outcome": "failed"}) == 2.0  # both refusals
    assert registry.get_sample_value(reloads, {"outcome": "ok"}) == 0.0


def test_sighup_reloads_a_running_daemon(model_dir: Path, tmp_path: Path) -> None:
    """SIGHUP, sent once the daemon serves and has taken a reading: the next turn of its loop
    (an idle file source turns it every poll timeout) serves the new model, said in its log
    and its metrics; the end of its input then stops it cleanly."""
    live = Path(shutil.copytree(model_dir, tmp_path / "live"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f'input: {{source: file}}\nmodel: {{path: "{live}"}}\n'
        "metrics: {host: 127.0.0.1, port: 0}\n"
    )
    daemon = Process(cfg, tmp_path / "daemon.log", stdin=subprocess.PIPE)
    stdin = daemon.proc.stdin
    assert stdin is not None
    try:
        fmt = MessageFormat()
        stdin.write(fmt.encode("a", 1.0, 1.0) + b"\n")
        stdin.flush()
        port = daemon.port()
        # the loop runs (its signal handlers are in place) and has served the old model
        wait_metric(port, "streamwatch_records_consumed_total", 1, timeout=60)
        old = metric(port, "streamwatch_model_info", f'name="lstm",version="{_version_of(live)}"')
        assert old == 1.0
        _version(live, "hup")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_output("reload: now serving model lstm version hup", timeout=30)
        assert metric(port, "streamwatch_model_reloads_total", 'outcome="ok"') == 1.0
        assert metric(port, "streamwatch_model_info", 'name="lstm",version="hup"') == 1.0
        stdin.close()  # the end of the input stops the daemon
        code = daemon.exit_code(timeout=60)
    finally:
        if daemon.proc.poll() is None:
            daemon.terminate()
    output = daemon.output()
    assert code == 0, output
    assert "SIGHUP: reloading the model after this batch" in output, output

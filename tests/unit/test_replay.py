"""replay and evaluate: the daemon's engine over files, and the scores judged against labels."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamwatch import synth
from streamwatch.codec import MessageFormat
from streamwatch.config import parse
from streamwatch.daemon import Daemon
from streamwatch.data import read_rows
from streamwatch.engine import Engine
from streamwatch.labels import LabelError, read_labels
from streamwatch.metrics import Metrics
from streamwatch.model import load_model
from streamwatch.records import Record
from streamwatch.replay import read_scores, replay, write_scores
from streamwatch.scoring import Scorer
from streamwatch.sinks.memory import MemorySink
from streamwatch.sources.memory import MemorySource
from streamwatch.state import StateStore

EXAMPLE = Path(__file__).resolve().parents[2] / "models/example"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("synth")
    spec = synth.SynthSpec(n_streams=6, length=1500, anomalies_per_stream=2, warmup=600, seed=4)
    data = synth.generate(spec)
    synth.write_csv(data, d / "data.csv")
    synth.write_labels(data, spec, d / "labels.json")
    return d / "data.csv", d / "labels.json"


def _engine(window: int | None = None) -> Engine:
    model = load_model(EXAMPLE)
    return Engine(model, StateStore(model.spec.state_size), Scorer(warmup=300, window=window))


@pytest.mark.parametrize("window", [None, 200])
def test_replay_gives_what_the_daemon_gives(
    labelled: tuple[Path, Path], window: int | None
) -> None:
    rows = read_rows([labelled[0]])
    verdicts = replay(_engine(window), rows, batch_size=333)
    fmt = MessageFormat()
    records = [
        Record("in", 0, i, 0, None, fmt.encode(s, float(t), float(v)))
        for i, (s, t, v) in enumerate(zip(rows.streams, rows.timestamps, rows.values, strict=True))
    ]
    cfg = parse({"kafka": {"bootstrap_servers": "x", "input_topics": ["in"]}})
    sink = MemorySink()
    daemon = Daemon(
        cfg,
        MemorySource(records, batch_size=500),
        sink,
        _engine(window),
        load_model(EXAMPLE).spec,
        Metrics(CollectorRegistry()),
    )
    while daemon.run_once():
        pass
    from_daemon = sorted(json.loads(m.value)["offset"] for m in sink.topic("anomalies"))
    assert from_daemon == np.flatnonzero(verdicts.anomaly).tolist()
    assert len(from_daemon) > 0


def test_scores_file_round_trip_and_warmup_rows_score_zero(
    labelled: tuple[Path, Path], tmp_path: Path
) -> None:
    rows = read_rows([labelled[0]])
    verdicts = replay(_engine(), rows)
    write_scores(tmp_path / "s.csv", rows, verdicts)
    read = read_scores(tmp_path / "s.csv")
    back, scores, flags = read.rows, read.score, read.anomaly
    np.testing.assert_array_equal(read.prediction, verdicts.prediction[:, 0])
    np.testing.assert_array_equal(read.scale, verdicts.scale[:, 0])
    assert back.streams == rows.streams
    np.testing.assert_array_equal(back.values, rows.values)
    np.testing.assert_allclose(scores, verdicts.score, atol=1e-6)
    np.testing.assert_array_equal(flags, verdicts.anomaly)
    first = {s: i for i, s in reversed(list(enumerate(rows.streams)))}
    per_stream = np.asarray(rows.streams, dtype=object)
    for s in first:
        assert scores[per_stream == s][:300].max() == 0.0
    with (tmp_path / "s.csv").open() as f:
        assert next(csv.reader(f)) == [
            "index",
            "timestamp",
            "stream",
            "value",
            "prediction",
            "scale",
            "score",
            "anomaly",
        ]


def test_labels_from_timestamp_windows_and_msl_layout(
    labelled: tuple[Path, Path], tmp_path: Path
) -> None:
    rows = read_rows([labelled[0]])
    spans = read_labels(labelled[1], rows)
    truth = synth.read_labels(labelled[1])
    assert sum(len(v) for v in spans.values()) == len(truth)
    lengths = {k: len(v) for k, v in rows.by_stream().items()}
    for a in truth:  # the windows' timestamps map back to row indices: altered rows + return
        assert a.window(lengths[a.stream]) in spans[a.stream]
    msl = tmp_path / "labeled_anomalies.csv"
    msl.write_text('chan_id,anomaly_sequences\ns0001,"[[10, 20], [1400, 1600]]"\n')
    got = read_labels(msl, rows)
    assert got["s0001"] == [(10, 20), (1400, 1499)] and got["s0000"] == []
    other = tmp_path / "other.csv"
    other.write_text('chan_id,anomaly_sequences\nC-1,"[[10, 20]]"\n')
    with pytest.raises(LabelError, match="no chan_id names a stream in the scores"):
        read_labels(other, rows)
    bad = tmp_path / "bad.json"
    bad.write_text('{"anomalies": [{"stream": "s0001"}]}')
    with pytest.raises(LabelError, match=r"anomalies\[0\]"):
        read_labels(bad, rows)


def test_msl_labels_find_the_stream_replay_names_after_the_test_file(tmp_path: Path) -> None:
    """``replay --data C-1_test.npy`` names its stream C-1_test; the labels say C-1."""
    arr = np.zeros((50, 3))
    npy = tmp_path / "C-1_test.npy"
    np.save(npy, arr)
    rows = read_rows([npy], target=0)
    msl = tmp_path / "labeled_anomalies.csv"
    msl.write_text('chan_id,anomaly_sequences\nC-1,"[[10, 20]]"\nC-2,"[[1, 2]]"\n')
    assert read_labels(msl, rows) == {"C-1_test": [(10, 20)]}


def test_cli_replay_then_evaluate(labelled: tuple[Path, Path], tmp_path: Path) -> None:
    data, labels = labelled
    sw = [sys.executable, "-m", "streamwatch"]
    scores, report, png = tmp_path / "scores.csv", tmp_path / "report.json", tmp_path / "s.png"
    r = subprocess.run(
        [
            *sw,
            "replay",
            "--model",
            str(EXAMPLE),
            "--data",
            str(data),
            "--out",
            str(scores),
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 10_000
    r = subprocess.run(
        [*sw, "evaluate", "--scores", str(scores), "--labels", str(labels), "--out", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(report.read_text())
    ev = result["event"]
    assert ev["tp"] + ev["fn"] == len(synth.read_labels(labels))
    assert ev["tp"] >= 0.5 * (ev["tp"] + ev["fn"])  # the example model finds most of them
    assert "row level:" in r.stdout
    rows = result["rows"]
    assert rows["rows"] == len(scores.read_text().splitlines()) - 1  # all rows, no header
    assert 0 < rows["flagged"] < 0.05 * rows["rows"]
    assert 0 < rows["precision"] <= 1 and 0 < rows["recall"] <= 1
    assert set(result["nab"]) == {"standard", "reward_low_fp", "reward_low_fn"}
    assert result["nab"]["standard"]["score"] > 0  # better than flagging nothing
    assert "event level: TP" in r.stdout

"""Forecast diagnostics on cases whose answers are known by construction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamwatch.forecast import seasonal_lag, skill_report, stream_skill


def test_persistence_itself_has_no_skill_and_no_bias() -> None:
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=500))
    p = np.r_[np.nan, y[:-1]]  # the forecast of reading t is reading t-1
    s = stream_skill(y, p, np.ones(500), np.arange(500.0))
    assert s.rows == 499 and s.skill == pytest.approx(0.0) and s.mae == s.persistence_mae
    assert abs(s.bias) < 0.1


def test_an_offset_forecast_shows_its_bias_and_sign() -> None:
    y = np.sin(np.arange(400) / 10.0)
    s = stream_skill(y, y + 0.1, np.full(400, 0.1), np.arange(400.0))
    assert s.mae == pytest.approx(0.1) and s.bias == pytest.approx(1.0)  # always over
    s = stream_skill(y, y - 0.1, np.full(400, 0.1), np.arange(400.0))
    assert s.bias == pytest.approx(-1.0)


def test_coverage_of_a_calibrated_gaussian_forecast_is_nominal() -> None:
    rng = np.random.default_rng(1)
    n = 200_000
    scale = rng.uniform(0.5, 2.0, n)
    y = rng.normal(0.0, scale)
    s = stream_skill(y, np.zeros(n), scale, np.arange(n) * 60.0)
    for level, got in s.coverage.items():
        assert got == pytest.approx(level, abs=0.005)
    # a scale twice too small covers far less
    s = stream_skill(y, np.zeros(n), scale / 2, np.arange(n) * 60.0)
    assert s.coverage[0.9] == pytest.approx(0.59, abs=0.01)


def test_seasonal_naive_where_the_timestamps_show_a_day() -> None:
    t = np.arange(0, 4 * 86400, 300.0)
    y = np.sin(2 * np.pi * t / 86400.0)  # exactly daily: seasonal naive is perfect
    s = stream_skill(y, y + 0.01, np.full(len(t), 0.01), t)
    assert s.period == 288 and s.seasonal_mae == pytest.approx(0.0, abs=1e-9)
    assert seasonal_lag(t[: 288 + 10]) is None  # under two days: no cycle to trust
    jitter = t + np.random.default_rng(2).uniform(0, 100, len(t))
    assert seasonal_lag(jitter) is None  # irregular steps


def test_the_summary_counts_streams_that_beat_persistence() -> None:
    t = np.arange(300.0)
    y = np.sin(t / 5.0)
    good = (y, np.r_[np.nan, y[1:] + 0.001], np.full(300, 0.01), t)  # nearly perfect
    bad = (y, np.r_[np.nan, y[:-1] + 0.5], np.full(300, 0.01), t)  # persistence + offset
    report = skill_report({"good": good, "bad": bad, "empty": (y[:1], y[:1], y[:1], t[:1])})
    summary = report["summary"]
    assert summary["streams"] == 3 and summary["judged"] == 2
    assert summary["beats_persistence"] == 0.5
    assert report["streams"]["good"]["skill"] > 0.9 > 0 > report["streams"]["bad"]["skill"]


def test_training_records_its_validation_forecast_and_model_show_prints_it(
    model_dir: Path,
) -> None:
    from streamwatch.model import load_model

    f = load_model(model_dir).spec.training["validation"]["forecast"]
    assert f["rows"] > 1000 and f["streams"] == 24
    assert f["mae"] > 0 and f["naive_mae"] > 0
    assert f["skill"] == pytest.approx(1 - f["mae"] / f["naive_mae"])
    assert all(0.0 <= f["coverage"][q] <= 1.0 for q in ("0.5", "0.9", "0.99"))
    assert f["coverage"]["0.5"] <= f["coverage"]["0.9"] <= f["coverage"]["0.99"]
    assert 0.0 <= f["beats_persistence"] <= 1.0
    shown = subprocess.run(
        [sys.executable, "-m", "streamwatch", "model", "show", str(model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("forecast"))
    assert f"MAE {f['mae']:.4f} vs persistence {f['naive_mae']:.4f}" in line


def test_replay_prints_and_evaluate_reports_the_forecast(model_dir: Path, tmp_path: Path) -> None:
    from streamwatch import synth

    data = synth.generate(synth.SynthSpec(n_streams=3, length=700, anomalies_per_stream=0))
    synth.write_csv(data, tmp_path / "d.csv")
    scores, report = tmp_path / "s.csv", tmp_path / "r.json"
    replayed = subprocess.run(
        [sys.executable, "-m", "streamwatch", "replay", "--model", str(model_dir), "--data",
         str(tmp_path / "d.csv"), "--out", str(scores)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert "forecast over 3 stream(s): MAE / persistence MAE median" in replayed.stdout
    evaluated = subprocess.run(
        [sys.executable, "-m", "streamwatch", "evaluate", "--scores", str(scores), "--out",
         str(report)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    got = json.loads(report.read_text())["forecast"]
    assert set(got["streams"]) == set(data.stream_ids)
    assert got["summary"]["judged"] == 3
    for name in data.stream_ids:
        assert f"\n{name} " in "\n" + evaluated.stdout  # one row per stream
    assert replayed.stdout.strip() in evaluated.stdout  # the same summary from the file

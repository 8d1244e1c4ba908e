from __future__ import annotations

import csv
import dataclasses
import doctest
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamwatch import synth
from streamwatch.synth import KINDS, Anomaly, SynthData, SynthSpec, generate

SMALL = SynthSpec(n_streams=6, length=1500, warmup=300, seed=3)
# Many anomalies, so that every kind shows up several times.
RICH = SynthSpec(n_streams=40, length=4032, anomalies_per_stream=4.0, seed=11)


@pytest.fixture(scope="module")
def rich() -> SynthData:
    return generate(RICH)


@pytest.fixture(scope="module")
def clean() -> SynthData:
    return generate(dataclasses.replace(RICH, anomalies_per_stream=0.0))


def test_same_seed_is_bitwise_identical() -> None:
    a, b = generate(SMALL), generate(SMALL)
    assert a.stream_ids == b.stream_ids
    assert a.values.tobytes() == b.values.tobytes()
    assert a.timestamps.tobytes() == b.timestamps.tobytes()
    assert a.anomalies == b.anomalies


def test_other_seed_differs() -> None:
    a, b = generate(SMALL), generate(dataclasses.replace(SMALL, seed=4))
    assert not np.array_equal(a.values, b.values)
    assert a.anomalies != b.anomalies


def test_shapes_dtypes_and_ids() -> None:
    data = generate(SMALL)
    assert data.values.shape == (6, 1500)
    assert data.values.dtype == np.float64
    assert data.timestamps.shape == (1500,)
    assert data.timestamps.dtype == np.float64
    assert data.stream_ids == tuple(f"s{i:04d}" for i in range(6))
    assert np.isfinite(data.values).all()
    assert data.labels().shape == (6, 1500)
    assert data.labels().dtype == np.bool_
    # Frozen data: nobody downstream mutates the shared arrays by accident.
    with pytest.raises(ValueError):
        data.values[0, 0] = 1.0


def test_ids_widen_past_four_digits_and_stay_sortable() -> None:
    spec = SynthSpec(n_streams=10_001, length=3, warmup=0, anomalies_per_stream=0.0)
    ids = generate(spec).stream_ids
    assert ids[0] == "s00000"
    assert ids[-1] == "s10000"
    assert list(ids) == sorted(ids)


def test_timestamps_are_evenly_spaced_from_start() -> None:
    spec = dataclasses.replace(SMALL, start=1_000.0, step_seconds=60.0)
    ts = generate(spec).timestamps
    assert ts[0] == 1_000.0
    assert np.array_equal(np.diff(ts), np.full(1499, 60.0))


def test_streams_span_orders_of_magnitude_and_have_daily_cycle(clean: SynthData) -> None:
    scale = np.abs(clean.values).mean(axis=1)
    assert scale.max() / scale.min() > 100
    # One day apart (288 steps) the readings agree far better than half a day apart.
    v = clean.values
    same_phase = np.abs(v[:, 288:] - v[:, :-288]).mean(axis=1)
    half_phase = np.abs(v[:, 144:] - v[:, :-144]).mean(axis=1)
    assert (same_phase < half_phase).mean() > 0.9


def test_noise_is_small_against_the_seasonal_swing() -> None:
    base = synth._baseline(RICH)
    swing = base.mean.std(axis=1)
    assert (base.sigma < 0.15 * swing).all()
    assert np.allclose(base.noise.std(axis=1) / base.sigma, 1.0, atol=0.25)


def test_anomalies_within_bounds_and_apart(rich: SynthData) -> None:
    by_stream: dict[str, list[Anomaly]] = {}
    for a in rich.anomalies:
        assert a.kind in KINDS
        assert RICH.warmup <= a.start <= a.end < RICH.length
        by_stream.setdefault(a.stream, []).append(a)
    assert set(by_stream) <= set(rich.stream_ids)
    for anomalies in by_stream.values():
        for prev, nxt in itertools.pairwise(anomalies):
            assert nxt.start - prev.end - 1 >= 100


def test_anomaly_durations_match_kind(rich: SynthData) -> None:
    bounds = {"spike": (1, 3), "level_shift": (50, 300), "variance_burst": (30, 150)}
    bounds |= {"stuck": (50, 300), "drift": (100, 400)}
    for a in rich.anomalies:
        lo, hi = bounds[a.kind]
        assert lo <= a.end - a.start + 1 <= hi


def test_every_kind_appears(rich: SynthData) -> None:
    counts = {k: sum(a.kind == k for a in rich.anomalies) for k in KINDS}
    assert min(counts.values()) >= 5, counts


def test_kinds_restricts_what_is_injected() -> None:
    data = generate(dataclasses.replace(SMALL, kinds=("stuck",), anomalies_per_stream=3.0))
    assert data.anomalies
    assert {a.kind for a in data.anomalies} == {"stuck"}


def test_no_anomalies_when_rate_is_zero(clean: SynthData) -> None:
    assert clean.anomalies == ()
    assert not clean.labels().any()


def test_labels_match_anomalies(rich: SynthData) -> None:
    labels = rich.labels()
    expected = np.zeros_like(labels)
    for a in rich.anomalies:
        row = rich.stream_ids.index(a.stream)
        assert not expected[row, a.start : a.end + 1].any()
        expected[row, a.start : a.end + 1] = True
    assert np.array_equal(labels, expected)
    assert labels.sum() == sum(a.end - a.start + 1 for a in rich.anomalies)


def test_only_labelled_readings_differ_from_clean(rich: SynthData, clean: SynthData) -> None:
    labels = rich.labels()
    assert np.array_equal(rich.values[~labels], clean.values[~labels])
    assert (rich.values[labels] != clean.values[labels]).mean() > 0.95


def _windows(
    rich: SynthData, clean: SynthData, kind: str
) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    sigma = synth._baseline(RICH).sigma
    for a in rich.anomalies:
        if a.kind == kind:
            row = rich.stream_ids.index(a.stream)
            got = rich.values[row, a.start : a.end + 1]
            ref = clean.values[row, a.start : a.end + 1]
            yield got, ref, float(sigma[row])


def test_spikes_are_large(rich: SynthData, clean: SynthData) -> None:
    for got, ref, sigma in _windows(rich, clean, "spike"):
        assert (np.abs(got - ref) >= 7.9 * sigma).all()


def test_level_shifts_are_large_and_constant(rich: SynthData, clean: SynthData) -> None:
    for got, ref, sigma in _windows(rich, clean, "level_shift"):
        res = got - ref
        assert abs(res.mean()) >= 5.9 * sigma
        assert np.ptp(res) < 1e-6 * (1 + np.abs(ref).max())


def test_variance_bursts_are_noisy(rich: SynthData, clean: SynthData) -> None:
    for got, ref, sigma in _windows(rich, clean, "variance_burst"):
        res = got - ref
        assert np.std(res) >= 3.5 * sigma
        assert abs(np.mean(res)) < np.std(res)  # noise, not a shift
        assert np.abs(np.diff(res)).mean() >= 3.5 * sigma  # white: it jumps step to step


def test_stuck_values_are_frozen_at_the_start(rich: SynthData, clean: SynthData) -> None:
    for got, ref, sigma in _windows(rich, clean, "stuck"):
        assert (got == ref[0]).all()
        assert np.ptp(ref) > 3 * sigma


def test_drifts_ramp_up(rich: SynthData, clean: SynthData) -> None:
    for got, ref, sigma in _windows(rich, clean, "drift"):
        res = got - ref
        assert abs(res[-1]) >= 9.9 * sigma
        assert abs(res[0]) < abs(res[-1]) / 50
        steps = np.diff(res) * np.sign(res[-1])
        assert (steps > 0).all()


def test_count_like_streams_never_go_negative() -> None:
    spec = SynthSpec(n_streams=60, length=3000, anomalies_per_stream=4.0, seed=5)
    base = synth._baseline(spec)
    assert base.count_like.any()
    data = generate(spec)
    assert (data.values[base.count_like] >= 0).all()


def test_iter_rows_interleaves_streams_in_time_order() -> None:
    data = generate(SMALL)
    rows = list(synth.iter_rows(data))
    assert len(rows) == 6 * 1500
    assert rows[:6] == [
        (sid, data.timestamps[0], data.values[i, 0]) for i, sid in enumerate(data.stream_ids)
    ]
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert rows[6 * 7 + 2] == ("s0002", data.timestamps[7], data.values[2, 7])
    assert all(type(ts) is float and type(v) is float for _, ts, v in rows[:20])


def test_csv_round_trip_is_exact(tmp_path: Path) -> None:
    data = generate(SMALL)
    path = tmp_path / "synth.csv"
    synth.write_csv(data, path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        assert next(reader) == ["timestamp", "stream", "value"]
        rows = [(s, float(ts), float(v)) for ts, s, v in reader]
    assert rows == list(synth.iter_rows(data))


def test_jsonl_round_trip_is_exact(tmp_path: Path) -> None:
    data = generate(SMALL)
    path = tmp_path / "synth.jsonl"
    synth.write_jsonl(data, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    objs = [json.loads(line) for line in lines]
    assert set(objs[0]) == {"stream", "ts", "value"}
    rows = [(o["stream"], o["ts"], o["value"]) for o in objs]
    assert rows == list(synth.iter_rows(data))


def test_labels_round_trip(tmp_path: Path, rich: SynthData) -> None:
    path = tmp_path / "labels.json"
    synth.write_labels(rich, RICH, path)
    assert synth.read_labels(path) == rich.anomalies
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert SynthSpec(**{**doc["spec"], "kinds": tuple(doc["spec"]["kinds"])}) == RICH
    first = doc["anomalies"][0]
    assert first["start_ts"] == rich.timestamps[first["start"]]
    # the event window ends on the reading after the altered ones: the return to normal
    assert first["end_ts"] == rich.timestamps[first["end"] + 1]


def test_read_labels_rejects_malformed_entries(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"anomalies": [{"stream": "s0000", "kind": "spike"}]}))
    with pytest.raises(ValueError, match=r"anomalies\[0\]"):
        synth.read_labels(path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"n_streams": 0}, "n_streams"),
        ({"length": 1}, "length"),
        ({"step_seconds": 0.0}, "step_seconds"),
        ({"step_seconds": float("nan")}, "step_seconds"),
        ({"start": float("inf")}, "start"),
        ({"anomalies_per_stream": -1.0}, "anomalies_per_stream"),
        ({"kinds": ("spike", "foo")}, "unknown anomaly kind 'foo' in kinds"),
        ({"kinds": ("spike", "spike")}, "kinds"),
        ({"kinds": ()}, "kinds"),
        ({"warmup": -1}, "warmup"),
        ({"warmup": 4032}, "warmup"),
        ({"warmup": 3990}, "length - warmup"),
        ({"seed": -1}, "seed"),
    ],
)
def test_spec_validation_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("(", r"\(")):
        generate(dataclasses.replace(SynthSpec(), **change))  # type: ignore[arg-type]


def test_no_kinds_is_fine_without_anomalies() -> None:
    spec = SynthSpec(n_streams=2, length=100, warmup=0, kinds=(), anomalies_per_stream=0.0)
    assert generate(spec).anomalies == ()


def test_is_fast_enough() -> None:
    t0 = time.perf_counter()
    data = generate(SynthSpec(n_streams=200, length=5000))
    assert data.values.shape == (200, 5000)
    assert time.perf_counter() - t0 < 3.0


def test_doctests_pass() -> None:
    result = doctest.testmod(synth)
    assert result.attempted > 0
    assert result.failed == 0

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamwatch.engine import Engine, waves
from streamwatch.model import load_model
from streamwatch.normalize import Normalizer
from streamwatch.scoring import Scorer
from streamwatch.state import StateStore


def _engine(model_dir: Path, max_rows: int = 512, max_streams: int = 10_000) -> Engine:
    model = load_model(model_dir)
    return Engine(
        model,
        StateStore(model.spec.state_size, capacity=4, max_streams=max_streams),
        Scorer(threshold=0.5, warmup=20),
        max_rows=max_rows,
    )


def test_waves_keep_each_streams_order() -> None:
    rng = np.random.default_rng(0)
    slots = rng.integers(0, 30, 500)
    seen: dict[int, list[int]] = {}
    for wave in waves(slots):
        assert len(set(slots[wave].tolist())) == len(wave)  # a slot at most once per wave
        for pos in wave.tolist():
            seen.setdefault(int(slots[pos]), []).append(pos)
    assert sorted(p for ps in seen.values() for p in ps) == list(range(500))
    assert all(ps == sorted(ps) for ps in seen.values())


def test_batched_equals_one_reading_at_a_time(model_dir: Path) -> None:
    """Any batching of the same readings gives the same verdicts: waves lose no step."""
    rng = np.random.default_rng(1)
    streams = [f"s{i}" for i in rng.integers(0, 7, 400)]
    values = rng.normal(100.0, 5.0, 400)
    one = _engine(model_dir)
    single = [
        one.process([s], np.array([v]), now=0.0) for s, v in zip(streams, values, strict=True)
    ]
    batched = _engine(model_dir, max_rows=3).process(streams, values, now=0.0)
    np.testing.assert_allclose(
        batched.prediction[1:], [v.prediction[0] for v in single][1:], rtol=1e-12, equal_nan=True
    )
    np.testing.assert_allclose(batched.score, [v.score[0] for v in single], rtol=1e-12)


def test_flags_a_spike_after_warmup(model_dir: Path) -> None:
    engine = _engine(model_dir)
    t = np.arange(600)
    x = 50.0 + 10.0 * np.sin(2 * np.pi * t / 288) + np.random.default_rng(2).normal(0, 0.2, 600)
    x[500] += 40.0
    flags = np.array([engine.process(["a"], x[i : i + 1], 0.0).anomaly[0] for i in range(600)])
    assert flags[500]
    assert flags[:21].sum() == 0  # warm-up


def test_state_store_evicts_least_recent_at_capacity(model_dir: Path) -> None:
    engine = _engine(model_dir, max_streams=100)
    for i in range(250):
        engine.process([f"s{i}"], np.array([1.0]), now=float(i))
    assert len(engine.store) <= 100
    assert engine.store.evicted_lru >= 150
    assert "s249" in engine.store and "s0" not in engine.store


def test_idle_streams_are_evicted() -> None:
    store = StateStore(state_size=2)
    store.assign(["a", "b"], now=0.0)
    store.assign(["b"], now=50.0)
    assert store.evict_idle(now=100.0, ttl=60.0) == 1
    assert "b" in store and "a" not in store and len(store) == 1


def test_normalizer_resists_outliers() -> None:
    norm = Normalizer(window=100, clip=4.0, warmup=10)
    stats = norm.new_stats(1)
    for x in np.random.default_rng(3).normal(10.0, 1.0, 300):
        norm.update(stats, np.array([x]))
    mean_before = stats[0, 1]
    norm.update(stats, np.array([1e9]))
    assert abs(stats[0, 1] - mean_before) < 0.1  # one huge outlier moves it by <= clip*std/W


def test_normalizer_sequence_matches_online_updates() -> None:
    norm = Normalizer(window=50, warmup=5)
    x = np.random.default_rng(4).normal(0, 3, (3, 120))
    inputs, targets = norm.sequence(x)
    stats = norm.new_stats(3)
    for t in range(120):
        np.testing.assert_allclose(inputs[:, t], norm.update(stats, x[:, t]), rtol=1e-6)
    assert np.isnan(targets[:, -1]).all()


@pytest.mark.parametrize("bad", [{"window": 1}, {"clip": 0}, {"warmup": 1}])
def test_normalizer_validates(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="normalization"):
        Normalizer(**bad)  # type: ignore[arg-type]


def test_out_of_order_readings_are_skipped_and_gaps_reset(model_dir: Path) -> None:
    from streamwatch.engine import TimePolicy

    model = load_model(model_dir)
    engine = Engine(
        model,
        StateStore.for_model(model.spec),
        Scorer(warmup=20),
        policy=TimePolicy(out_of_order="skip", max_gap_seconds=3600),
    )
    values = 10.0 + np.sin(np.arange(60) / 5.0)
    ts = np.arange(60) * 60.0
    engine.process(["a"] * 60, values, 0.0, timestamps=ts)
    state = engine.store.state[engine.store.slot("a")].copy()
    late = engine.process(
        ["a", "a"], np.array([10.0, 10.5]), 0.0, timestamps=np.array([30.0, 3600.0])
    )
    assert late.skipped.tolist() == [True, False]  # the first is older than the last reading
    gap = engine.process(["a"], np.array([10.0]), 0.0, timestamps=np.array([20000.0]))
    assert np.isnan(gap.prediction[0, 0]) and gap.score[0] == 0.0  # no forecast across a gap
    assert not np.array_equal(engine.store.state[engine.store.slot("a")], state)
    accept = Engine(
        model,
        StateStore.for_model(model.spec),
        Scorer(warmup=20),
        policy=TimePolicy(out_of_order="accept"),
    )
    out = accept.process(["b", "b"], np.array([1.0, 2.0]), 0.0, timestamps=np.array([9.0, 1.0]))
    assert not out.skipped.any()


def test_time_policy_is_validated_at_config() -> None:
    from streamwatch.config import parse
    from streamwatch.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse({"input": {"source": "file"}, "state": {"on_gap": "forget"}})
    assert err.value.path == "state.on_gap"


def test_streams_the_model_was_trained_on_start_with_their_envelope(model_dir: Path) -> None:
    model = load_model(model_dir)
    trained = model.spec.envelopes()
    known = sorted(trained)[0]
    lo, hi = trained[known][:, 0]
    values = np.full(40, hi + 0.2 * (hi - lo))  # steady, but beyond anything seen in training
    flags = {}
    for envelope in (0.05, None):
        store = StateStore.for_model(model.spec)
        engine = Engine(model, store, Scorer(warmup=5, envelope=envelope))
        out = engine.process([known] * 40, values, now=0.0, timestamps=np.arange(40.0))
        flags[envelope] = out.anomaly
    assert store.envelope[store.slot(known)].tolist() == trained[known].tolist()
    assert flags[0.05][-10:].all() and not flags[None][-10:].any()
    store = StateStore.for_model(model.spec)
    engine = Engine(model, store, Scorer(warmup=5, envelope=0.05))
    engine.process(["never-trained"], np.array([1e12]), now=1.0)
    assert np.isnan(store.envelope[store.slot("never-trained")]).all()


def test_a_reloaded_model_brings_its_trained_ranges_to_live_streams(
    model_dir: Path, tmp_path: Path
) -> None:
    model = load_model(model_dir)
    trained = model.spec.envelopes()
    moved, dropped, later = sorted(trained)[:3]
    store = StateStore.for_model(model.spec)
    engine = Engine(model, store, Scorer(warmup=5, envelope=0.05))
    engine.process([moved, dropped, "never-trained"], np.zeros(3), now=0.0)
    # the same network, retrained ranges: one stream's range moves, one has none any more
    meta = json.loads((model_dir / "model.json").read_text())
    table = meta["calibration"]["envelopes"]
    table[moved] = [[v + 100.0 for v in row] for row in table[moved]]
    del table[dropped]
    shutil.copytree(model_dir, tmp_path / "v2")
    (tmp_path / "v2" / "model.json").write_text(json.dumps(meta))
    engine.replace_model(load_model(tmp_path / "v2"))
    assert store.envelope[store.slot(moved)].tolist() == (trained[moved] + 100.0).tolist()
    assert np.isnan(store.envelope[store.slot(dropped)]).all()
    assert np.isnan(store.envelope[store.slot("never-trained")]).all()
    inside = trained[later].mean(axis=0)  # inside its range, which so stays where it is
    engine.process([later], inside, now=1.0)  # a stream that starts after the reload
    assert store.envelope[store.slot(later)].tolist() == trained[later].tolist()


def test_a_change_target_is_the_step_in_units_of_the_spread() -> None:
    norm = Normalizer(window=50, warmup=5)
    x = np.cumsum(np.random.default_rng(5).normal(0, 1, (2, 200)), axis=1)
    x[:, 150] += 40.0  # a step far beyond the clip
    inputs, targets = norm.sequence(x)
    stats = norm.new_stats(2)
    for t in range(199):
        norm.update(stats, x[:, t])
        change = np.clip((x[:, t + 1] - x[:, t]) / norm.std(stats), -20, 20)
        np.testing.assert_allclose(targets[:, t] - inputs[:, t], change, rtol=1e-5, atol=1e-5)


class _NoChange:
    """A model that predicts no change: mu is its input."""

    def __init__(self, spec: object) -> None:
        self.spec = spec

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, ...]:
        return x[:, :1].copy(), np.ones((len(x), 1), np.float32), state


@pytest.mark.parametrize("base", ["reading", "mean"])
def test_no_change_is_persistence_only_when_the_base_is_the_reading(base: str) -> None:
    """With base "reading" a model that predicts no change forecasts the last reading, even
    after a step far outside the stream's spread; the old "mean" base trailed such a step by
    the part beyond the clip (MSL's piecewise-constant channels)."""
    from streamwatch.model.artifact import ModelSpec

    spec = ModelSpec("m", "1", ("value",), ("value",), 1, 4, Normalizer(base=base), "")
    engine = Engine(_NoChange(spec), StateStore.for_model(spec), Scorer())  # type: ignore[arg-type]
    from streamwatch import serve

    x = np.r_[np.full(100, 1.0) + 0.001 * np.sin(np.arange(100)), np.full(20, 5.0)]
    model = []  # the model's own forecast of the next reading (before any fallback)
    for v in x:
        engine.process(["a"], np.array([v]), 0.0)
        model.append(engine.store.serve[engine.store.slot("a"), serve.MODEL, 0])
    if base == "reading":
        np.testing.assert_allclose(model, x, rtol=1e-5)
    else:
        assert abs(model[100] - x[100]) > 1.0  # right after the step: far behind it


def test_old_artifacts_keep_the_mean_base() -> None:
    d = Normalizer().to_dict()
    assert d["base"] == "reading"
    del d["base"]
    assert Normalizer.from_dict(d).base == "mean"
    with pytest.raises(ValueError, match=r"normalization\.base"):
        Normalizer(base="median")

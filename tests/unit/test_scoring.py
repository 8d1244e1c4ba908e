from __future__ import annotations

import numpy as np
import pytest

from streamwatch.scoring import CALM_MEAN, Scorer, surprise, to_score, window_threshold


def _run(scorer: Scorer, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """errors: (time, streams) -> scores and flags of the same shape."""
    stats = scorer.new_stats(errors.shape[1])
    out = [scorer.update(stats, row) for row in errors]
    return np.array([s for s, _ in out]), np.array([f for _, f in out])


def test_surprise_matches_known_gaussian_tails() -> None:
    # Q(3.090) = 1e-3, Q(4.265) = 1e-5, Q(6.361) = 1e-10, Q(10) = 7.6e-24
    z = np.array([3.090, 4.265, 6.361, 10.0])
    np.testing.assert_allclose(surprise(z), [3.0, 5.0, 10.0, 23.12], atol=0.01)
    np.testing.assert_allclose(surprise(z, two_sided=True), surprise(z) - np.log10(2.0))
    np.testing.assert_allclose(
        to_score(surprise(z)), [3 / 8, 0.5, 2 / 3, 23.12 / 28.12], atol=0.001
    )
    assert np.all(np.diff(to_score(surprise(np.linspace(0, 40, 50)))) > 0)  # never saturates


def test_false_alarm_rate_on_gaussian_errors_is_calibrated() -> None:
    # Two tests, each about 1e-5 per reading at score 0.5: expect ~2e-5, certainly < 1e-4.
    rng = np.random.default_rng(0)
    scores, flags = _run(Scorer(warmup=300), np.abs(rng.standard_normal((2300, 500))))
    rate = flags[300:].mean()
    assert rate < 1e-4
    assert scores[:300].max() == 0.0  # warm-up scores are 0


def test_streams_are_scored_independently() -> None:
    rng = np.random.default_rng(1)
    errors = np.abs(rng.standard_normal((600, 3)))
    errors[:, 1] *= 50.0  # a stream with much larger errors: its own scale applies
    errors[500, 0] = 12.0
    scores, flags = _run(Scorer(warmup=100), errors)
    assert flags[500, 0] and not flags[500, 1:].any()
    alone, _ = _run(Scorer(warmup=100), errors[:, :1])
    np.testing.assert_array_equal(alone[:, 0], scores[:, 0])


def test_sustained_misfit_is_flagged_by_the_collective_test() -> None:
    rng = np.random.default_rng(2)
    errors = np.abs(rng.standard_normal((1200, 1)))
    errors[1000:1100] = 2.2  # no single error is extreme (a 3 % event alone); the run is
    scores, flags = _run(Scorer(warmup=300), errors)
    assert flags[1000:1100].any()
    assert scores[1000, 0] < 0.5  # the first of them is not flagged: it takes the run


def test_learning_anomalies_is_an_explicit_choice() -> None:
    errors = np.abs(np.random.default_rng(3).standard_normal((1000, 1)))
    errors[400:900] = 20.0  # a long anomaly
    # the novelty gate would stop the flags after the onset either way; this is about stats
    _, kept = _run(Scorer(warmup=100, long_window=200, novelty=None), errors)
    _, learned = _run(
        Scorer(warmup=100, long_window=200, learn_anomalies=True, novelty=None), errors
    )
    assert kept[400:900].sum() == 500  # statistics not poisoned: flagged throughout
    assert learned[400:900].sum() < 400  # the statistics adapt and flags stop


def test_novelty_gate_flags_a_recurring_miss_once_until_it_is_beaten_or_forgotten() -> None:
    errors = np.abs(np.random.default_rng(4).standard_normal((3000, 1)))
    at = [400, 550, 700, 850]
    errors[at] = 30.0  # the same unforeseen miss, again and again (a command, a reset)
    errors[1000] = 45.0  # a larger one: news
    errors[2900] = 30.0  # long after: the peak decays with an e-folding time of long_window
    scores, flags = _run(Scorer(warmup=100, long_window=2000), errors)
    assert flags[400, 0] and not flags[at[1:], 0].any()
    assert scores[550, 0] < scores[400, 0]  # a miss that is not news scores lower too
    assert flags[1000, 0] and flags[2900, 0]
    assert flags.sum() == 3  # nothing else in plain Gaussian noise
    _, ungated = _run(Scorer(warmup=100, long_window=2000, novelty=None), errors)
    assert ungated[at, 0].all()


def test_novelty_gate_uses_the_raw_misses_when_given() -> None:
    # standardised errors look alike, but in the stream's own units the second miss is 10x
    stats = Scorer.new_stats(1)
    scorer = Scorer(warmup=10)
    rng = np.random.default_rng(5)
    for e in np.abs(rng.standard_normal(50)):
        scorer.update(stats, np.array([e]), np.array([e]))
    calm = np.abs(rng.standard_normal(30))
    flags = []
    for raw in (20.0, 20.0, 200.0):
        flags.append(bool(scorer.update(stats, np.array([20.0]), np.array([raw]))[1][0]))
        for e in calm:
            scorer.update(stats, np.array([e]), np.array([e]))
    assert flags == [True, False, True]


def test_a_stuck_stream_is_flagged_by_the_calm_test() -> None:
    # The model's scale shrinks with a frozen input, so standardised errors look normal; in
    # the stream's own units the misses all but vanish.
    rng = np.random.default_rng(6)
    error = np.abs(rng.standard_normal(1500))
    raw = error * 3.0
    raw[1000:1200] = np.abs(rng.standard_normal(200)) * 0.03  # stuck: 1 % of the usual miss
    runs, usual = {}, []
    for hold in (0, 50):
        scorer, stats = Scorer(warmup=300, hold=hold), Scorer.new_stats(1)
        flags = []
        for t in range(1500):
            flags.append(scorer.update(stats, error[t : t + 1], raw[t : t + 1])[1][0])
            if hold == 0 and t in (1050, 1199):
                usual.append(stats[0, CALM_MEAN])
        runs[hold] = np.array(flags)
        assert not runs[hold][:1000].any()
        assert not runs[hold][1000:1005].any()  # one small miss is not calm yet
    # flagged where it begins, as misses are where they are news, not on every reading
    assert 1 <= runs[0][1000:1200].sum() <= 3
    assert runs[50][1000:1200].sum() >= 50  # hold keeps the episode flagged
    # nor are the stuck readings learned once calm: the stream's usual misses stay its own
    assert usual[0] == usual[1]


def test_piecewise_constant_telemetry_is_not_calm_between_its_steps() -> None:
    # Exact forecasts most of the time, a jump now and then: quiet stretches are its normal.
    rng = np.random.default_rng(7)
    raw = np.where(rng.random(5000) < 0.03, rng.uniform(0.5, 2.0, 5000), 0.0)
    raw[3000:3400] = 0.0  # a long quiet stretch
    scorer, stats = Scorer(warmup=300), Scorer.new_stats(1)
    for t in range(5000):
        _, flag = scorer.update(stats, np.array([1.0]), raw[t : t + 1])
        assert not flag[0] or raw[t] > 0, t  # flags, if any, come from misses, not calm


def test_no_forecast_means_no_score() -> None:
    stats = Scorer.new_stats(2)
    score, flag = Scorer(warmup=0).update(stats, np.array([np.nan, 1.0]))
    assert score.tolist() == [0.0, 0.0] and not flag.any()  # nothing scored from no history
    assert stats[0, 0] == 0 and stats[1, 0] == 1  # only real errors are learned


@pytest.mark.parametrize(
    "bad",
    [
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"short_alpha": 0},
        {"long_window": 1},
        {"warmup": -1},
        {"novelty": -0.1},
        {"envelope": -0.01},
    ],
)
def test_scorer_validates(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="scoring"):
        Scorer(**bad)  # type: ignore[arg-type]


def test_flat_stretches_do_not_make_blips_news() -> None:
    """Near-zero errors for a long time (piecewise-constant telemetry) must not make a small
    miss look extreme: the model's own scale bounds the sensitivity."""
    errors = np.full((1000, 1), 1e-4)
    errors[900] = 2.0  # two model-scale units: ordinary
    errors[950] = 9.0  # nine: not ordinary
    _, flags = _run(Scorer(warmup=100), errors)
    assert not flags[900] and flags[950]


def test_hold_keeps_an_episode_flagged() -> None:
    errors = np.abs(np.random.default_rng(4).standard_normal((600, 1)))
    errors[400] = 15.0
    _, plain = _run(Scorer(warmup=100), errors)
    _, held = _run(Scorer(warmup=100, hold=20), errors)
    assert plain[400:421, 0].sum() < 21
    assert held[400:421, 0].all() and not held[421:450, 0].any()


def test_large_misses_in_warm_up_set_the_bar() -> None:
    """A miss that already happened in warm-up (where nothing can be flagged) is not news when
    it recurs; the same miss seen first after warm-up is."""
    errors = np.abs(np.random.default_rng(5).standard_normal((1200, 2)))
    errors[250, 0] = 25.0  # stream 0: in warm-up, after the model's first steps
    errors[400, :] = 25.0  # both: the same miss after warm-up, before the bar fades
    _, flags = _run(Scorer(warmup=300), errors)
    assert flags[400].tolist() == [False, True]


def test_the_models_first_steps_do_not_set_the_bar() -> None:
    """Misses while the model starts from an empty state say nothing about the stream."""
    errors = np.abs(np.random.default_rng(6).standard_normal((1200, 1)))
    errors[5] = 25.0
    errors[160] = 25.0  # soon enough that a bar set at 5 would still stand
    _, flags = _run(Scorer(warmup=150), errors)
    assert flags[160, 0]


def test_a_slow_rise_does_not_drag_the_bar_along() -> None:
    """The short average of a sustained misfit rises by under the novelty margin a step; were
    each step allowed to set the bar, the rise would never be news."""
    rng = np.random.default_rng(7)
    errors = np.abs(rng.standard_normal((1600, 1)))
    errors[1200:1400] = 2.0 + 0.1 * np.abs(rng.standard_normal((200, 1)))
    _, flags = _run(Scorer(warmup=300, novelty=0.13), errors)
    assert flags[1200:1400].any()


def _envelope_scorer(**kw: object) -> Scorer:
    return Scorer(warmup=10, envelope=0.05, **kw)  # type: ignore[arg-type]


def test_envelope_flags_readings_beyond_the_trained_range() -> None:
    scorer = _envelope_scorer()
    # three streams trained on [0, 10] (one target); the last has no envelope
    bounds = np.array([[[0.0], [10.0]]] * 3 + [[[np.nan], [np.nan]]], np.float32)
    x = np.array([[10.4], [10.6], [-0.6], [1e9]])  # margin 0.05 x 10 = 0.5
    assert scorer.outside(x, bounds).tolist() == [False, True, True, False]
    assert np.isnan(bounds[3]).all()
    # readings outside pull the bound toward them at the pace of long_window
    assert bounds[1, 1, 0] == pytest.approx(10.0 + 0.6 / scorer.long_window, rel=1e-5)
    assert bounds[0, 1, 0] == pytest.approx(10.0 + 0.4 / scorer.long_window, rel=1e-5)
    assert bounds[2, 0, 0] == pytest.approx(-0.6 / scorer.long_window, rel=1e-4)


def test_a_range_of_width_zero_makes_any_change_news() -> None:
    bounds = np.array([[[-1.0], [-1.0]]], np.float32)
    assert _envelope_scorer().outside(np.array([[-0.99]]), bounds).tolist() == [True]


def test_envelope_off_flags_nothing() -> None:
    bounds = np.array([[[0.0], [1.0]]], np.float32)
    assert not Scorer().outside(np.array([[100.0]]), bounds).any()
    assert bounds.tolist() == [[[0.0], [1.0]]]  # and leaves the bounds alone


def test_envelope_trigger_waits_for_warm_up_and_skips_the_gate() -> None:
    scorer = _envelope_scorer()
    stats = scorer.new_stats(1)
    ok, out = np.array([False]), np.array([True])
    early, _ = scorer.update(stats, np.array([0.5]), outside=out)
    assert early[0] == 0.0  # in warm-up: nothing is flagged
    for _ in range(50):
        scorer.update(stats, np.array([0.5]), outside=ok)
    scorer.update(stats, np.array([40.0]))  # a big miss: the gate's bar is now high
    score, flag = scorer.update(stats, np.array([0.5]), outside=out)
    assert flag[0] and score[0] >= scorer.threshold  # a rule: exempt from the gate


def test_a_lasting_excursion_stops_being_flagged() -> None:
    """A stream that stays beyond its range pulls it along: a new regime, not an endless
    alert."""
    scorer = _envelope_scorer(long_window=100)
    bounds = np.array([[[0.0], [10.0]]], np.float32)
    flags = [bool(scorer.outside(np.array([[12.0]]), bounds)[0]) for _ in range(2000)]
    assert flags[0] and not flags[-1]
    assert 100 < flags.index(False) < 1000


# -- the window test: Hundman et al.'s nonparametric threshold, causal ------------------------


def test_window_threshold_separates_a_burst_from_the_noise_by_hand() -> None:
    # 90 values alternating 1 and 2 (mean 1.5, sd 0.5), then 10 values of 10 (one sequence)
    w = np.r_[np.tile([1.0, 2.0], 45), np.full(10, 10.0)][None, :]
    eps, top = window_threshold(w)
    # all z from 2.5 to 12 put mean + z sd (mean 2.35, sd 2.55) between 2 and 10 except
    # where it passes 10 (z >= 3.0): z 2.5 removes the burst, one sequence of 10 values
    mean, sd = w.mean(), w.std()
    assert eps[0] == pytest.approx(mean + 2.5 * sd)
    assert top[0] == 2.0
    # 15 % of the window high: mean + 2.5 sd (3.1 + 2.5 x 3.6) passes 10 already, so no z
    # separates anything and the threshold is the ceiling, mean + 12 sd
    w2 = w.copy()
    w2[0, 40:45] = 10.0
    eps2, _ = window_threshold(w2)
    assert eps2[0] == pytest.approx(w2.mean() + 12.0 * w2.std())


def test_window_threshold_sets_none_on_a_flat_or_empty_window() -> None:
    flat = np.full((1, 50), 3.0)
    empty = np.full((1, 50), np.nan)
    eps, _ = window_threshold(np.r_[flat, empty])
    assert np.isinf(eps).all()


def test_window_test_flags_a_sustained_rise_once_it_beats_the_window() -> None:
    rng = np.random.default_rng(3)
    scorer = Scorer(warmup=200, window=300)
    win = np.full((2, 300), np.nan, np.float32)
    ws = np.zeros((2, 4))
    misses = np.abs(rng.standard_normal((900, 2)))
    misses[700:760, 0] += 4.0  # stream 0: a sustained misfit; stream 1: noise only
    at = np.arange(2)
    hits = np.array([scorer.window_test(win, at, ws, m) for m in misses])
    assert not hits[:700].any()
    assert hits[700:760, 0].any() and not hits[:, 1].any()
    # the first readings are the model's start: smoothed, but not in the window
    assert np.isfinite(win).sum(axis=1).tolist() == [300, 300]


def test_window_test_writes_the_store_rows_it_is_given_in_place() -> None:
    # the engine passes the store's whole ring array and the batch's rows, not a gathered copy
    scorer = Scorer(warmup=0, window=60)
    win = np.full((5, 60), np.nan, np.float32)
    ws = np.zeros((2, 4))
    at = np.array([3, 1])
    for i in range(200):
        scorer.window_test(win, at, ws, np.array([1.0 + i % 3, 2.0]))
    assert np.isnan(win[[0, 2, 4]]).all()
    assert np.isfinite(win[[1, 3]]).all()
    assert win[3].std() > 0 and win[1].std() == 0  # row 3 holds stream 0's varied misses
    assert np.isfinite(ws[0, 2]) and np.isinf(ws[1, 2])  # a flat window sets no threshold


def test_window_test_is_not_armed_before_its_first_threshold_even_without_warmup() -> None:
    scorer = Scorer(warmup=0, window=100)
    win = np.full((1, 100), np.nan, np.float32)
    ws = np.zeros((1, 4))
    hits = [scorer.window_test(win, np.arange(1), ws, np.array([1.0]))[0] for _ in range(300)]
    assert not any(hits)  # a steady miss: nothing to flag, also before a threshold exists


def test_window_streams_take_turns_choosing_their_thresholds() -> None:
    # 40 streams that start together: each wave re-chooses the thresholds of a tenth of them,
    # not of all of them every tenth wave
    rng = np.random.default_rng(1)
    scorer = Scorer(warmup=0, window=100)
    win = np.full((40, 100), np.nan, np.float32)
    ws = np.zeros((40, 4))
    at = np.arange(40)
    chosen = []
    for _ in range(400):
        before = ws[:, 2].copy()
        scorer.window_test(win, at, ws, np.abs(rng.standard_normal(40)))
        chosen.append(int((ws[:, 2] != before).sum()))
    assert chosen[-100:] == [4] * 100


def test_window_trigger_is_a_rule_exempt_from_the_novelty_gate() -> None:
    stats = Scorer(window=100, warmup=0).new_stats(1)
    scorer = Scorer(window=100, warmup=0, threshold=0.9)
    for _ in range(50):
        scorer.update(stats, np.array([1.0]))
    score, flag = scorer.update(stats, np.array([1.0]), outside=np.array([True]))
    assert flag[0] and score[0] >= 0.9


@pytest.mark.parametrize("bad", [0, 49, -1])
def test_window_must_be_long_enough(bad: int) -> None:
    with pytest.raises(ValueError, match=r"scoring\.window"):
        Scorer(window=bad)


def _window_threshold_by_definition(win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition, one candidate z at a time over the whole window (slow, plain)."""
    eps_all, top_all = [], []
    for row in win.astype(np.float64):
        filled = np.isfinite(row)
        v = np.where(filled, row, 0.0)
        m = filled.sum()
        mean = v[filled].mean() if m else np.nan
        sd = v[filled].std() if m else np.nan
        best, eps = -np.inf, mean + 12.0 * sd
        for z in np.arange(2.5, 12.01, 0.5):
            e = mean + z * sd
            above = filled & (v >= e)
            na = above.sum()
            if not 0 < na < 0.5 * m:
                continue
            seqs = int((above & ~np.roll(above, 1)).sum())
            if seqs > 5:
                continue
            rest = v[filled & ~above]
            score = ((mean - rest.mean()) / mean + (sd - rest.std()) / sd) / (seqs**2 + na)
            if score > best:
                best, eps = score, e
        under = filled & (v < eps)
        top_all.append(v[under].max() if under.any() else 0.0)
        eps_all.append(eps if m >= 2 and sd > 0 else np.inf)
    return np.array(eps_all), np.array(top_all)


def test_window_threshold_matches_its_definition_on_random_windows() -> None:
    rng = np.random.default_rng(7)
    win = np.abs(rng.standard_normal((60, 400))).astype(np.float32)
    for i in range(60):  # bursts of varied size and number, some across the ring's seam
        for _ in range(i % 4):
            at, size = rng.integers(0, 400), rng.integers(1, 30)
            win[i, np.arange(at, at + size) % 400] += rng.uniform(1, 8)
    win[50:, 300:] = np.nan  # windows not yet full
    win[59] = 2.0  # no spread
    eps, top = window_threshold(win)
    want_eps, want_top = _window_threshold_by_definition(win)
    np.testing.assert_allclose(eps, want_eps, rtol=1e-9)
    finite = np.isfinite(want_eps)
    np.testing.assert_allclose(top[finite], want_top[finite], rtol=1e-9)
    assert len({round(float(e), 6) for e in eps[finite]}) > 30  # varied cases, not one


def test_the_window_is_configured_by_its_key() -> None:
    from streamwatch.config import parse
    from streamwatch.errors import ConfigError

    base = {"model": {"path": "m"}, "input": {"source": "file"}}
    assert parse({**base, "scoring": {"window": 2100}}).scoring.window == 2100
    assert parse(base).scoring.window is None  # off by default
    with pytest.raises(ConfigError, match=r"^scoring\.window: must be >= 50 or null$"):
        parse({**base, "scoring": {"window": 10}})

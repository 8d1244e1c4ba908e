"""Event counts and NAB scoring against hand-computed numbers.

NAB arithmetic below uses sigma(y) = 2 / (1 + exp(5y)) - 1 = tanh(-2.5 y), so
sigma(-1) = tanh(2.5) = 0.986614, and an in-window detection is worth A_TP * sigma(y) / sigma(-1).
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import streamwatch.evaluate
from streamwatch.evaluate import (
    PROFILES,
    EventCounts,
    NabRaw,
    Profile,
    event_counts,
    nab_raw,
    nab_score,
    nab_sweep,
    nab_windows,
    runs,
    scaled_sigmoid,
)

STANDARD = PROFILES["standard"]
SIGMA_M1 = math.tanh(2.5)  # sigma(-1) = 0.9866143


def _flags(length: int, *rows: int | range) -> np.ndarray:
    f = np.zeros(length, dtype=bool)
    for r in rows:
        f[r if isinstance(r, int) else list(r)] = True
    return f


def test_doctests() -> None:
    assert doctest.testmod(streamwatch.evaluate).failed == 0


# --- runs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], []),
        ([False, False], []),
        ([True], [(0, 0)]),
        ([True, True, True], [(0, 2)]),
        ([True, False, False, True], [(0, 0), (3, 3)]),  # runs at both ends
        ([False, True, True, False, True, False], [(1, 2), (4, 4)]),
    ],
)
def test_runs(flags: list[bool], expected: list[tuple[int, int]]) -> None:
    assert runs(np.array(flags, dtype=bool)) == expected


def test_runs_accepts_ints_and_rejects_2d() -> None:
    assert runs(np.array([0, 1, 1, 0, 2])) == [(1, 2), (4, 4)]
    with pytest.raises(ValueError, match="1-D"):
        runs(np.zeros((2, 2), dtype=bool))


# --- event counts ----------------------------------------------------------------------------

LABELS = [(2, 5), (10, 12)]


def test_hit_and_miss() -> None:
    # (3, 3) overlaps (2, 5): TP; (10, 12) has no prediction: FN.
    assert event_counts(_flags(20, 3), LABELS) == EventCounts(tp=1, fp=0, fn=1)


def test_second_prediction_in_a_detected_label_counts_as_neither() -> None:
    # Runs (2, 3) and (5, 5) both sit in (2, 5): one TP, the second run is not an FP.
    assert event_counts(_flags(20, 2, 3, 5), LABELS) == EventCounts(tp=1, fp=0, fn=1)


def test_prediction_spanning_two_labels_detects_both() -> None:
    # One run (4, 11) overlaps (2, 5) and (10, 12).
    assert event_counts(_flags(20, range(4, 12)), LABELS) == EventCounts(tp=2, fp=0, fn=0)


def test_one_shared_row_is_enough_and_adjacent_is_not() -> None:
    # (12, 15) shares row 12 with (10, 12): TP. (0, 1) ends next to (2, 5) without sharing a
    # row: FP, and (2, 5) is missed: FN.
    flags = _flags(20, 0, 1, range(12, 16))
    assert event_counts(flags, LABELS) == EventCounts(tp=1, fp=1, fn=1)


def test_prediction_far_from_labels_is_a_false_positive() -> None:
    flags = _flags(20, 3, 11, range(17, 19))
    assert event_counts(flags, LABELS) == EventCounts(tp=2, fp=1, fn=0)


def test_nothing_flagged_nothing_labelled() -> None:
    none = event_counts(np.zeros(20, dtype=bool), LABELS)
    assert none == EventCounts(tp=0, fp=0, fn=2)
    # precision is 0/0 here: defined as 0.0, as are recall and F1 of an empty count.
    assert (none.precision, none.recall, none.f1) == (0.0, 0.0, 0.0)
    assert event_counts(np.zeros(5, dtype=bool), []) == EventCounts()
    assert (EventCounts().precision, EventCounts().recall, EventCounts().f1) == (0.0, 0.0, 0.0)


def test_labels_out_of_range_are_rejected() -> None:
    with pytest.raises(ValueError, match="label"):
        event_counts(np.zeros(10, dtype=bool), [(8, 10)])
    with pytest.raises(ValueError, match="label"):
        event_counts(np.zeros(10, dtype=bool), [(5, 4)])


def test_counts_sum_over_channels_then_ratios() -> None:
    total = EventCounts(2, 1, 0) + EventCounts(1, 0, 2)
    assert total == EventCounts(tp=3, fp=1, fn=2)
    assert total.precision == pytest.approx(0.75)  # 3 / (3 + 1)
    assert total.recall == pytest.approx(0.6)  # 3 / (3 + 2)
    # 2PR/(P+R) = 2 * 0.45 / 1.35 = 0.6667 = 2*3 / (2*3 + 1 + 2)
    assert total.f1 == pytest.approx(2 / 3)
    assert sum([EventCounts(2, 1, 0), EventCounts(1, 0, 2)], EventCounts()) == total


def test_msl_reference_row() -> None:
    # Telemanom re-run on MSL: TP 25, FP 1, FN 11 -> 25/26 = 0.9615, 25/36 = 0.6944,
    # F1 = 50/62 = 0.8065.
    c = EventCounts(tp=25, fp=1, fn=11)
    assert (round(c.precision, 3), round(c.recall, 3), round(c.f1, 3)) == (0.962, 0.694, 0.806)


# --- scaled sigmoid --------------------------------------------------------------------------


def test_scaled_sigmoid_values() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)  # tanh(1.25)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == -1.0
    assert scaled_sigmoid(3.5) == -1.0
    assert isinstance(scaled_sigmoid(0.5), float)


def test_scaled_sigmoid_vectorised_without_overflow() -> None:
    out = scaled_sigmoid(np.array([-1.0, 0.0, 2.9, 1e6]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [SIGMA_M1, 0.0, math.tanh(-7.25), -1.0])


# --- NAB windows -----------------------------------------------------------------------------


def test_nab_windows_size_and_centre() -> None:
    # 0.1 * 100 / 2 labels = 5 rows each, 5 // 2 = 2 on each side.
    assert nab_windows(100, [(50, 52), (10, 10)]) == [(8, 12), (48, 54)]
    # 0.1 * 1000 / 1 = 100 rows, 50 each side of a 10-row label: (450, 559).
    assert nab_windows(1000, [(500, 509)]) == [(450, 559)]
    assert nab_windows(1000, [(500, 509)], window_fraction=0.2) == [(400, 609)]
    assert nab_windows(100, []) == []


def test_nab_windows_merge_only_when_sharing_a_row() -> None:
    # (8, 12) and (12, 16) share row 12: one window.
    assert nab_windows(100, [(10, 10), (14, 14)]) == [(8, 16)]
    # (8, 12) and (13, 17) only touch: two windows.
    assert nab_windows(100, [(10, 10), (15, 15)]) == [(8, 12), (13, 17)]


def test_nab_windows_clip_to_the_series() -> None:
    assert nab_windows(100, [(0, 1), (99, 99)]) == [(0, 3), (97, 99)]


# --- NAB raw scores --------------------------------------------------------------------------

# One window of width 5 in a series of 40 rows.
W = [(5, 9)]


def test_perfect_and_null_detectors() -> None:
    perfect = nab_raw(_flags(40, 5), W, STANDARD)
    # Row 5 is the first row: y = -(9 - 5 + 1) / 5 = -1, worth sigma(-1) / sigma(-1) = A_TP.
    assert perfect == NabRaw(score=1.0, null=-1.0, perfect=1.0, tp=1, fp=0, fn=0)
    assert perfect.normalised == 100.0
    null = nab_raw(np.zeros(40, dtype=bool), W, STANDARD)
    assert null == NabRaw(score=-1.0, null=-1.0, perfect=1.0, tp=0, fp=0, fn=1)
    assert null.normalised == 0.0


def test_detection_at_the_last_row_of_the_window() -> None:
    # y = -(9 - 9 + 1) / 5 = -0.2; sigma(-0.2) = tanh(0.5) = 0.462117; / 0.986614 = 0.468387.
    # normalised = 100 * (0.468387 + 1) / (1 + 1) = 73.419.
    raw = nab_raw(_flags(40, 9), W, STANDARD)
    assert raw.score == pytest.approx(0.468387, abs=1e-6)
    assert raw.normalised == pytest.approx(73.4193, abs=1e-4)


def test_only_the_first_detection_in_a_window_counts() -> None:
    # Row 7: y = -(9 - 7 + 1) / 5 = -0.6; tanh(1.5) / tanh(2.5) = 0.905148 / 0.986614 = 0.917429.
    assert nab_raw(_flags(40, 7), W, STANDARD).score == pytest.approx(0.917429, abs=1e-6)
    # Rows 5 and 7: row 7 adds nothing, and is not a false positive either.
    assert nab_raw(_flags(40, 5, 7, 8, 9), W, STANDARD) == nab_raw(_flags(40, 5), W, STANDARD)


def test_false_positives_cost_more_the_later_they_come() -> None:
    # Past the window, y = (i - 9) / (width - 1) = (i - 9) / 4.
    # Row 10: y = 0.25, sigma = tanh(-0.625) = -0.554600, * 0.11 = -0.061006 -> 1 - 0.061006.
    near = nab_raw(_flags(40, 5, 10), W, STANDARD)
    assert near.score == pytest.approx(0.938994, abs=1e-6)
    assert near.normalised == pytest.approx(96.9497, abs=1e-4)  # 100 * 1.938994 / 2
    assert (near.tp, near.fp, near.fn) == (1, 1, 0)
    # Row 13: y = 1, sigma = tanh(-2.5) = -0.986614, * 0.11 = -0.108528.
    mid = nab_raw(_flags(40, 5, 13), W, STANDARD)
    assert mid.score == pytest.approx(1 - 0.108528, abs=1e-6)
    # Row 30: y = 21 / 4 = 5.25 >= 3: capped at -1, so exactly -A_FP = -0.11.
    far = nab_raw(_flags(40, 5, 30), W, STANDARD)
    assert far.score == pytest.approx(0.89)
    assert near.score > mid.score > far.score


def test_false_positive_before_any_window_costs_the_full_weight() -> None:
    # Row 2 precedes every window: -A_FP = -0.11; the window is missed: -1.
    # normalised = 100 * (-1.11 + 1) / 2 = -5.5.
    raw = nab_raw(_flags(40, 2), W, STANDARD)
    assert raw.score == pytest.approx(-1.11)
    assert raw.normalised == pytest.approx(-5.5)


def test_false_positive_after_a_one_row_window() -> None:
    # Width 1, so width - 1 = 0: the distance unit is taken as 1 row.
    # Row 11: y = (11 - 10) / 1 = 1, sigma = -0.986614, * 0.11 = -0.108528.
    raw = nab_raw(_flags(20, 10, 11), [(10, 10)], STANDARD)
    assert raw.score == pytest.approx(1 - 0.108528, abs=1e-6)


def test_profiles_weigh_misses_and_false_alarms() -> None:
    # Windows (5, 9) and (25, 29); row 5 detects the first, row 2 is a false alarm before it,
    # the second window is missed.
    windows = [(5, 9), (25, 29)]
    flags = _flags(40, 2, 5)
    std = nab_raw(flags, windows, PROFILES["standard"])
    low_fp = nab_raw(flags, windows, PROFILES["reward_low_fp"])
    low_fn = nab_raw(flags, windows, PROFILES["reward_low_fn"])
    assert std.score == pytest.approx(1 - 1 - 0.11)  # -0.11
    assert low_fp.score == pytest.approx(1 - 1 - 0.22)  # the false alarm costs twice as much
    assert low_fn.score == pytest.approx(1 - 2 - 0.11)  # the miss costs twice as much
    assert (std.null, low_fn.null) == (-2.0, -4.0)
    assert std.normalised == pytest.approx(47.25)  # 100 * (-0.11 + 2) / (2 + 2)
    assert low_fp.normalised == pytest.approx(44.5)  # 100 * (-0.22 + 2) / 4
    assert low_fn.normalised == pytest.approx(48.1667, abs=1e-4)  # 100 * (-1.11 + 4) / (2 + 4)


def test_corpus_scores_are_summed_before_normalising() -> None:
    # One perfect series (1 vs null -1) and one silent series with two windows (-2 vs -2):
    # S = -1, null = -3, perfect = 3 -> 100 * 2 / 6 = 33.33, not the mean of 100 and 0.
    flags = [_flags(40, 5), np.zeros(40, dtype=bool)]
    windows = [W, [(5, 9), (25, 29)]]
    assert nab_score(flags, windows, STANDARD) == pytest.approx(100 / 3)


def test_no_windows_has_no_normalised_score() -> None:
    raw = nab_raw(_flags(10, 3), [], STANDARD)
    assert raw.score == pytest.approx(-0.11)
    assert math.isnan(raw.normalised)


def test_windows_must_be_sorted_disjoint_and_inside() -> None:
    for bad in ([(5, 9), (9, 12)], [(10, 12), (1, 3)], [(35, 40)]):
        with pytest.raises(ValueError, match="window"):
            nab_raw(np.zeros(40, dtype=bool), bad, STANDARD)
    with pytest.raises(ValueError, match="window lists"):
        nab_score([np.zeros(40, dtype=bool)], [], STANDARD)


def _reference_nab(flags: np.ndarray, windows: list[tuple[int, int]], profile: Profile) -> float:
    """Row-by-row restatement of numenta/NAB 1.x (sweeper.calcSweepScore, scored at one
    threshold), kept independent of the vectorised module."""

    def sigma(y: float) -> float:
        return -1.0 if y >= 3.0 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0

    score, detected, prev = 0.0, set(), None
    for i, flag in enumerate(flags.tolist()):
        inside = [k for k, (s, e) in enumerate(windows) if s <= i <= e]
        if inside:
            k = inside[0]
            s, e = windows[k]
            if flag and k not in detected:
                detected.add(k)
                score += profile.tp * sigma(-(e - i + 1) / (e - s + 1)) / sigma(-1.0)
            if i == e:
                prev = (s, e)
        elif flag:
            y = 3.0 if prev is None else (i - prev[1]) / max(prev[1] - prev[0], 1)
            score += profile.fp * sigma(y)
    return score - profile.fn * (len(windows) - len(detected))


@pytest.mark.parametrize("seed", range(6))
def test_nab_raw_matches_a_row_by_row_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    length = 300
    starts = np.sort(rng.choice(length - 10, size=3, replace=False))
    labels = [(int(s), int(s) + int(rng.integers(0, 5))) for s in starts]
    windows = nab_windows(length, labels)
    flags = rng.random(length) < 0.03
    for profile in PROFILES.values():
        assert nab_raw(flags, windows, profile).score == pytest.approx(
            _reference_nab(flags, windows, profile), abs=1e-9
        )


# --- NAB threshold sweep ---------------------------------------------------------------------


def _corpus(seed: int, n: int = 3, length: int = 400) -> tuple[list, list, list]:
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for _ in range(n):
        s = rng.uniform(0.0, 0.5, length)
        start = int(rng.integers(50, length - 50))
        labels.append([(start, start + 3)])
        scores.append(s)
    windows = [nab_windows(length, lab) for lab in labels]
    return scores, labels, windows


def test_sweep_finds_the_threshold_that_separates_anomalies() -> None:
    scores, _, windows = _corpus(1)
    for s, w in zip(scores, windows, strict=True):
        s[w[0][0]] = 0.9  # the first row of each window stands out
    # Threshold 0.9 flags exactly the first row of every window: 100, the maximum; no lower
    # threshold can do better, and ties go to the higher threshold.
    assert nab_sweep(scores, windows, STANDARD) == (0.9, 100.0)


def test_sweep_on_labelled_rows_beats_flagging_them_only() -> None:
    scores, labels, windows = _corpus(2)
    for s, lab in zip(scores, labels, strict=True):
        s[lab[0][0] : lab[0][1] + 1] = 0.9
    best_t, best = nab_sweep(scores, windows, STANDARD)
    at_09 = nab_score([s >= 0.9 for s in scores], windows, STANDARD)
    # At 0.9 each label start sits half a window (20 of 44 rows) into its window:
    # y = -(43 - 20 + 1) / 44 = -0.545, worth 0.8772 / 0.9866 = 0.8891 -> 100 * 1.8891 / 2 = 94.46.
    assert at_09 == pytest.approx(100 * (1 + math.tanh(2.5 * 24 / 44) / SIGMA_M1) / 2)
    assert best >= at_09 > 0.0
    assert best == pytest.approx(nab_score([s >= best_t for s in scores], windows, STANDARD))


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_sweep_equals_brute_force_over_every_threshold(profile: Profile) -> None:
    scores, _, windows = _corpus(3, length=200)
    scores = [np.round(s, 2) for s in scores]  # ties between rows, as real detectors have
    best_t, best = nab_sweep(scores, windows, profile)
    candidates = [*np.unique(np.concatenate(scores)).tolist(), math.inf]
    brute = {t: nab_score([s >= t for s in scores], windows, profile) for t in candidates}
    assert best == pytest.approx(max(brute.values()), abs=1e-9)
    assert brute[best_t] == pytest.approx(best, abs=1e-9)


def test_sweep_on_noise_does_no_worse_than_flagging_nothing() -> None:
    scores, _, windows = _corpus(4)
    best_t, best = nab_sweep(scores, windows, STANDARD)
    # Scored by nab_score itself, not taken from the sweep: what the chosen threshold flags,
    # what flagging nothing earns, and what a careless threshold (every row) costs on noise.
    chosen = nab_score([s >= best_t for s in scores], windows, STANDARD)
    nothing = nab_score([np.zeros(len(s), dtype=bool) for s in scores], windows, STANDARD)
    everything = nab_score([np.ones(len(s), dtype=bool) for s in scores], windows, STANDARD)
    assert nothing == 0.0 and everything < nothing  # here a threshold can do worse than none
    assert chosen == pytest.approx(best, abs=1e-9)  # the sweep reports its choice's own score
    assert chosen >= nothing
    # With no candidate but +inf, nothing is flagged: exactly the null detector.
    assert nab_sweep(scores, windows, STANDARD, thresholds=[]) == (math.inf, 0.0)


def test_sweep_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        nab_sweep([np.array([0.1, np.nan])], [[(0, 1)]], STANDARD)
    with pytest.raises(ValueError, match="nothing to score"):
        nab_sweep([np.array([0.1, 0.2])], [[]], STANDARD)
    with pytest.raises(ValueError, match="window lists"):
        nab_sweep([np.array([0.1, 0.2])], [], STANDARD)

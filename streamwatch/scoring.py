"""Forecast error -> anomaly score in [0, 1] -> flag, per stream, online, vectorised (pure).

The error of a reading is its miss in units of the model's own predicted scale at that step,
``e = |x - prediction| / scale``.  Each stream keeps running statistics of its errors, so the
same model can be loose on a noisy stream and tight on a calm one, and two tests run on them:

- *point*: this reading's error relative to the stream's typical error, read as a two-sided
  Gaussian deviation (spikes, sudden breaks).  The typical error is the geometric mean of past
  errors, scaled to a standard deviation: unlike a root mean square, one large miss barely
  moves it, so an anomaly the threshold missed does not mask the next one;
- *collective*: how far a short exponential average of errors lies from its usual range,
  either way (sustained misfit: level shifts, variance bursts, drift; and errors far *smaller*
  than usual), in the spirit of Numenta's anomaly likelihood, which compares a
  short-window average of raw scores with their long-window distribution.  Errors enter the
  average raised to the power 0.4, which makes the average of Gaussian errors nearly
  symmetric (skew -0.04, where log errors give -0.42 and raw errors +0.5), so both of its
  tails can be read as Gaussian.

A third test, *calm*, reads the misses in the stream's own units (``raw``): when their short
average falls far below its usual range, the stream has stopped moving (a stuck sensor, a
flat-lined feed).  Standardised errors cannot show that, because the model's predicted scale
shrinks with its frozen input.  It is one-sided, and on telemetry whose forecasts are exact
most of the time a quiet stretch is its normal and scores nothing.  It flags where the calm
begins, not every reading while it lasts (``hold`` extends it), and calm readings are not
learned.

Each deviation z becomes a two-sided Gaussian tail probability p, its *surprise*
S = -log10(p), and the score S / (S + 5) of the largest: 0.5 means a
one-in-100,000 event, 0.67 one in 10^10.  Scores are comparable across streams and models,
and do not saturate, so a threshold can be set as high as a noisy domain needs.

All tests use the stream's own error statistics only to become *less* sensitive than the
model's stated uncertainty, never more: on a flat stretch where errors are near zero, the
reference stays at what Gaussian errors of the model's scale would give, so that small blips
on piecewise-constant telemetry are not news.

Scoring is separate from thresholding: a reading is flagged when its score reaches
``threshold`` once the stream has left warm-up, and, for a miss (the point and collective
tests; calm is exempt), the miss is *novel*: the error, or a short exponential average of it,
must exceed the largest such value of the stream's recent past (running maxima that decay over
``long_window`` readings) by the factor ``1 + novelty``.  This is the pruning step of Hundman
et al. (KDD 2018), made causal: real telemetry has recurring large misses (a command the model
cannot foresee), and a miss no larger than one seen lately is not news, however rare it looks
against Gaussian tails.  The point miss is compared in units of the model's scale, the short
average in the stream's own units (``raw``).  A non-novel reading's score is scaled down by how
far it falls short of that bar, so scores stay an honest ranking.  ``novelty=None`` turns the
gate off.  Warm-up readings set the bar too (they cannot trigger), except the first
``_SETTLE``, whose misses are the model's start from an empty state, not the stream's.

A fourth test, the *envelope*, is a rule rather than a probability: where the model was trained
on a stream, the stream's readings then spanned ``[lo, hi]`` (the model records it), and a
reading beyond that range by more than ``envelope`` times its width is something the model has
never seen.  Such a reading is flagged (after warm-up, exempt from the gate) and scores at
least the threshold.  A stream that stays outside pulls its bounds along at the pace of
``long_window``, so a lasting new regime stops being flagged instead of alerting forever.  It
is off by default (``envelope=None``): streams that trend or grow leave their training range
as a matter of course.  Streams the model was not trained on have no envelope.

A fifth test, the *window* (``window``, off by default), is Hundman et al.'s nonparametric
dynamic threshold over the stream's last ``window`` smoothed misses, chosen from the past only
(``Scorer.window_test``, ``window_threshold``): a rule like the envelope, exempt from the gate,
whose ring of misses costs 4 bytes a stream per reading of window.

With ``hold`` > 0 a stream's anomaly episode stays flagged that many readings after
its last trigger (causal, like an alert's keep-firing time), so one event is not reported as a
string of fragments.  Whether flagged readings update the running statistics is an explicit
choice (``learn_anomalies``, off by default: an anomaly must not teach the stream that
anomalies are normal).

>>> scorer = Scorer(threshold=0.5, warmup=50)
>>> stats = scorer.new_stats(1)
>>> rng = np.random.default_rng(0)
>>> errs = np.abs(rng.standard_normal(400))
>>> scores = [scorer.update(stats, np.array([e]))[0][0] for e in errs]
>>> float(max(scores)) < 0.5
True
>>> score, flag = scorer.update(stats, np.array([12.0]))
>>> bool(flag[0]), round(float(score[0]), 2)
(True, 0.86)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from streamwatch.errors import InvalidSetting

# Columns of a stream's scoring statistics: readings learned from, the short average of
# errors ** _POWER, the mean log error, the mean and variance of the short average, readings
# left in a held episode, the short average of raw errors, and the decaying running maxima of
# that average and of the raw error itself.
SEEN, SHORT, MEAN_L, MEAN_S, VAR_S, HOLD, RAW_SHORT, SHORT_PEAK, POINT_PEAK = range(9)
# ... and for the calm test, the short average of raw errors ** _POWER with its mean and variance
CALM_SHORT, CALM_MEAN, CALM_VAR = range(9, 12)
N_STATS = 12

_MIN_SEEN = 10  # errors learned before any score, whatever the warm-up: stats need a few
_SETTLE = 100  # readings before warm-up misses may set the novelty bar (see above)
_POWER = 0.4
# Var(|Z| ** 0.4) for Z ~ N(0, 1): E|Z|^0.8 - (E|Z|^0.4)^2 = 0.7955 - 0.8413^2
_VAR_POWERED = 0.0877
_MEAN_POWERED = 0.8413
_LOG_EPS = 1e-3  # errors below a thousandth of a scale unit are all "perfect"
_LN10 = np.log(10.0)
_LOG10_2 = np.log10(2.0)
_HALF_SCORE_SURPRISE = 5.0  # -log10 tail probability that maps to score 0.5
_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
# E[log |Z|] for Z ~ N(0, 1) is -(gamma + ln 2) / 2: exp(mean log error + this) estimates sigma
_LOG_ABS_NORMAL = 0.5 * (np.euler_gamma + np.log(2.0))


def surprise(z: np.ndarray, two_sided: bool = False) -> np.ndarray:
    """``-log10`` of the standard normal tail probability beyond ``z``: 5 for a one-in-100,000
    deviation.  Borjesson and Sundberg's approximation of the upper tail Q (relative error
    < 0.3 % for z >= 0) keeps its precision far into the tail, where 1 - Phi(z) rounds to 0.

    >>> [round(float(s), 2) for s in surprise(np.array([0.0, 3.090, 4.265, 6.361]))]
    [0.3, 3.0, 5.0, 10.0]
    """
    z = np.maximum(z, 0.0)
    log_q = -0.5 * z * z - _HALF_LOG_2PI - np.log(0.661 * z + 0.339 * np.sqrt(z * z + 5.51))
    bits = -log_q / _LN10
    return np.maximum(bits - np.log10(2.0), 0.0) if two_sided else bits


def to_score(surprise: np.ndarray) -> np.ndarray:
    """Surprise S -> a score in [0, 1): S / (S + 5).  0.5 is a one-in-100,000 event, 0.67 one
    in 10^10, 0.8 one in 10^20; it never saturates, so extreme events still rank.

    >>> to_score(np.array([0.0, 5.0, 20.0])).tolist()
    [0.0, 0.5, 0.8]
    """
    return surprise / (surprise + _HALF_SCORE_SURPRISE)


@functools.lru_cache(maxsize=16)
def _z_at(score: float) -> float:
    """The deviation z whose one-sided surprise scores ``score`` (bisection, once per value).

    >>> round(float(to_score(surprise(np.array([_z_at(0.5)])))[0]), 6)
    0.5
    """
    if score >= 1.0:  # a threshold of 1: no score reaches it
        return float("inf")
    target, lo, hi = _HALF_SCORE_SURPRISE * score / (1.0 - score), 0.0, 100.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if surprise(np.array([mid]))[0] < target else (lo, mid)
    return hi


_WINDOW_SPAN = 105  # EWMA span of the misses the window test keeps (Telemanom: 5 % of 2,100)
_WINDOW_EVERY = 10  # readings between two choices of a stream's window threshold
_WINDOW_Z = np.arange(2.5, 12.01, 0.5)
_WINDOW_MAX_SEQUENCES = 5


def window_threshold(win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``win`` (NaN: empty), the nonparametric threshold and the largest value
    under it: of mean + z sd for z in 2.5..12, the one that maximises
    (drop in mean / mean + drop in sd / sd) / (sequences above ** 2 + values above),
    with at most 5 sequences and under half the values above; mean + 12 sd where none does,
    and no threshold (inf) for a window without spread.
    Sequences are counted around the ring (a run across its seam counts once).

    >>> w = np.full((1, 200), 1.0); w[0, ::2] = 1.2; w[0, 100:104] = 9.0
    >>> eps, top = window_threshold(w)
    >>> bool(1.2 < eps[0] < 9.0), float(top[0])
    (True, 1.2)
    """
    # Only the values above the lowest step move a candidate's counts, and in a window of
    # misses they are few: the dense passes over the window are the moments, one comparison
    # and one max; binning, run counting and the per-candidate sums touch the few alone.
    n, width = win.shape
    n_z = len(_WINDOW_Z)
    w = win.astype(np.float64)
    filled = np.isfinite(w)
    if filled.all():  # the usual case once a stream is past its first window
        m, w0 = np.full(n, width), w  # w is a copy already (astype)
    else:
        m, w0 = filled.sum(axis=1), np.where(filled, w, 0.0)
    total, total_sq = w0.sum(axis=1), (w0 * w0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / m
        sd = np.sqrt(np.maximum(total_sq / m - mean * mean, 0.0))
        # a margin under the lowest step, so that the exact test below decides the edge
        lo = mean + (_WINDOW_Z[0] - 0.01) * sd
        r, c = np.divmod(np.flatnonzero(w > lo[:, None]), width)
        v = w0[r, c]
        steps = np.floor(((v - mean[r]) / sd[r] - _WINDOW_Z[0]) / (_WINDOW_Z[1] - _WINDOW_Z[0])) + 1
        b = np.where(np.isfinite(steps), np.clip(steps, 0, n_z), 0).astype(np.int64)
    keep = b > 0
    r, c, v, b = r[keep], c[keep], v[keep], b[keep]
    flat = r * (n_z + 1) + b
    size = n * (n_z + 1)

    def above(weights: np.ndarray | None) -> np.ndarray:
        per_bin = np.bincount(flat, weights, size).reshape(n, n_z + 1)
        return np.cumsum(per_bin[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (n, z): bins > j

    na, s_a, ss_a = above(None), above(v), above(v * v)
    # runs: a value starts one at each step between its predecessor's bin and its own
    # (around the ring: a run across the seam counts once)
    dense = np.zeros((n, width), np.int8)
    dense[r, c] = b
    prev = dense[r, c - 1].astype(np.int64)  # c - 1 = -1: the ring's last column
    rises = b > prev
    edge = r[rises] * (n_z + 2)
    d = np.bincount(edge + prev[rises], None, n * (n_z + 2)) - np.bincount(
        edge + b[rises], None, n * (n_z + 2)
    )
    seqs = np.cumsum(d.reshape(n, n_z + 2), axis=1)[:, :n_z]
    with np.errstate(invalid="ignore", divide="ignore"):
        nb = m[:, None] - na
        mean_b = (total[:, None] - s_a) / nb
        sd_b = np.sqrt(np.maximum((total_sq[:, None] - ss_a) / nb - mean_b * mean_b, 0.0))
        score = ((mean[:, None] - mean_b) / mean[:, None] + (sd[:, None] - sd_b) / sd[:, None]) / (
            seqs**2 + na
        )
        ok = (na > 0) & (na < 0.5 * m[:, None]) & (seqs <= _WINDOW_MAX_SEQUENCES)
        score = np.where(ok & np.isfinite(score), score, -np.inf)
    # the first z with the best score (strictly better than all before it), else the last
    pick = np.where(np.isfinite(score.max(axis=1)), np.argmax(score, axis=1), n_z - 1)
    eps = mean + _WINDOW_Z[pick] * sd
    # the largest value under the threshold: of those below the lowest step, and of the
    # values above it whose step is at most the one picked
    w0[r, c] = 0.0
    normal_max = w0.max(axis=1, initial=0.0)
    under = b <= pick[r]
    np.maximum.at(normal_max, r[under], v[under])
    # a window without spread (or nearly empty) sets no threshold: any change would cross it
    eps = np.where((m >= 2) & (sd > 0), eps, np.inf)
    return eps, normal_max


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, and 1 where b is 0 (nothing to beat yet: not novel unless a > 0)."""
    return np.divide(a, b, out=np.where(a > 0, np.inf, 1.0), where=b > 0)


@dataclass(frozen=True)
class Scorer:
    threshold: float = 0.5  # on the score; 0.5 = a one-in-100,000 deviation
    warmup: int = 600  # scored readings per stream before it can be flagged
    short_alpha: float = 0.1  # weight of a new log error in the collective test's average
    long_window: int = 2000  # readings of memory for the stream's error statistics
    learn_anomalies: bool = False  # do flagged readings update the statistics?
    hold: int = 0  # readings an episode stays flagged after its last trigger
    novelty: float | None = 0.13  # a trigger's raw misfit must beat the recent peak by this
    envelope: float | None = None  # e.g. 0.05: beyond the trained range by 5 % of its width
    window: int | None = None  # e.g. 2100: the nonparametric threshold over that many errors

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise InvalidSetting("scoring.threshold", "must be in (0, 1]")
        if not 0.0 < self.short_alpha <= 1.0:
            raise InvalidSetting("scoring.short_alpha", "must be in (0, 1]")
        if self.long_window < 2:
            raise InvalidSetting("scoring.long_window", "must be >= 2")
        if self.warmup < 0:
            raise InvalidSetting("scoring.warmup", "must be >= 0")
        if self.hold < 0:
            raise InvalidSetting("scoring.hold", "must be >= 0")
        if self.novelty is not None and not self.novelty >= 0.0:
            raise InvalidSetting("scoring.novelty", "must be >= 0 or null")
        if self.envelope is not None and not self.envelope >= 0.0:
            raise InvalidSetting("scoring.envelope", "must be >= 0 or null")
        if self.window is not None and not self.window >= 50:
            raise InvalidSetting("scoring.window", "must be >= 50 or null")

    @property
    def window_width(self) -> int:
        """Per-stream columns the window test keeps (0: off)."""
        return self.window or 0

    def window_test(
        self, win: np.ndarray, at: np.ndarray, wstats: np.ndarray, raw: np.ndarray
    ) -> np.ndarray:
        """Hundman et al.'s nonparametric dynamic threshold (KDD 2018), made causal.

        Each stream keeps its last ``window`` smoothed raw misses (an EWMA of span
        ``_WINDOW_SPAN``) in row ``at[i]`` of ``win`` (the store's rings, window wide, NaN
        where not yet filled: written in place, never gathered whole) and in ``wstats``
        (n, 4) the count, the smoothed miss, the threshold and the largest miss
        under it.  Every ``_WINDOW_EVERY`` readings (at a phase set by the stream's row, so
        that the streams of a batch take turns) the threshold is chosen anew from the
        window alone: of mean + z x sd for z in 2.5..12, the one whose removal of the errors
        above it cuts the mean and the sd the most, per error and per sequence of errors
        removed (``window_threshold``).  A reading triggers when its smoothed miss is over the
        threshold and beats the largest miss under it by the novelty margin (Telemanom's
        pruning), after warm-up.  ``win`` and ``wstats`` are updated in place (``at`` must not
        repeat a row: one reading per stream per call); returns the triggers."""
        valid = np.isfinite(raw)
        count = wstats[:, 0].copy()
        a = 2.0 / (_WINDOW_SPAN + 1.0)
        smooth = np.where(count == 0, raw, wstats[:, 1] + a * (raw - wstats[:, 1]))
        smooth = np.where(valid, smooth, wstats[:, 1])
        k = 1.0 + (self.novelty or 0.0)
        # armed once warm and once a threshold has been chosen (by _SETTLE + _WINDOW_EVERY
        # readings): before that the stored one is 0, which every miss would beat
        armed = count >= max(self.warmup, _SETTLE + _WINDOW_EVERY)
        with np.errstate(invalid="ignore"):
            hit = valid & armed & (smooth > wstats[:, 2]) & (smooth > k * wstats[:, 3])
        # the first _SETTLE misses are the model's start from an empty state, not the
        # stream's: they are smoothed, but kept out of the window (as from the novelty bars)
        rows = np.flatnonzero(valid & (count >= _SETTLE))
        pos = ((count[rows] - _SETTLE) % win.shape[1]).astype(np.int64)
        win[at[rows], pos] = smooth[rows]
        # the count stays small enough for float32 to keep it exact: past warm-up it wraps
        # by a whole number of rings and of threshold periods, keeping its place in both
        cycle = win.shape[1] * _WINDOW_EVERY
        count = count + valid
        wrap = max(self.warmup, _SETTLE) + 2 * cycle
        wstats[:, 0] = np.where(count >= wrap, count - cycle, count)
        wstats[:, 1] = smooth
        # each store row keeps its own phase, so that streams which started together do not
        # all choose their thresholds in the same batch (the cost stays even across batches)
        due = rows[((count[rows] - _SETTLE + at[rows]) % _WINDOW_EVERY) == 0]
        if len(due):
            eps, normal_max = window_threshold(win[at[due]])
            wstats[due, 2], wstats[due, 3] = eps, normal_max
        return hit

    @staticmethod
    def new_stats(n: int) -> np.ndarray:
        return np.zeros((n, N_STATS), np.float64)

    def outside(self, x: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        """The envelope test: which readings ``x`` (n, targets) lie beyond their stream's
        trained range by more than ``envelope`` of its width, any target.  ``bounds``
        (n, 2, targets): lo and hi, NaN where the model has none; updated in place, pulled
        toward readings outside at the pace of ``long_window``."""
        if self.envelope is None:
            return np.zeros(len(x), bool)
        lo, hi = bounds[:, 0], bounds[:, 1]
        # a range of width 0 (a stream constant in training): any change is new
        width = np.maximum(hi - lo, 1e-6 * np.maximum(np.maximum(np.abs(lo), np.abs(hi)), 1.0))
        margin = self.envelope * width
        with np.errstate(invalid="ignore"):  # NaN: no envelope, or no reading
            out = ((x > hi + margin) | (x < lo - margin)).any(axis=1)
            rate = 1.0 / self.long_window
            bounds[:, 1] = np.where(x > hi, hi + rate * (x - hi), hi)
            bounds[:, 0] = np.where(x < lo, lo + rate * (x - lo), lo)
        return out

    def update(
        self,
        stats: np.ndarray,
        error: np.ndarray,
        raw: np.ndarray | None = None,
        outside: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score standardised errors (NaN: no forecast yet) and fold them into ``stats``
        (one row per error, updated in place).  ``raw`` is the same misses in the readings'
        own units, for the novelty gate (default: ``error``); ``outside`` marks readings
        beyond their envelope (see ``outside``).  Returns (score, flag)."""
        valid = np.isfinite(error)
        e = np.where(valid, error, 0.0)
        r = np.where(valid, np.abs(error if raw is None else raw), 0.0)
        c = stats.T.copy()  # one contiguous row per statistic: column views are strided
        seen = c[SEEN]
        # weight of this reading in the short averages: all of it for a stream's first, none
        # without a forecast (the averages stay as they are)
        a_short = np.where(valid, np.where(seen == 0, 1.0, self.short_alpha), 0.0)
        powered = e**_POWER
        short = c[SHORT] + a_short * (powered - c[SHORT])
        raw_short = c[RAW_SHORT] + a_short * (r - c[RAW_SHORT])
        calm_short = c[CALM_SHORT] + a_short * (r**_POWER - c[CALM_SHORT])
        # a stream's errors may make the tests less sensitive than the model's own scale
        # says, never more: a flat stretch with near-zero errors must not turn every blip
        # into news
        typical = np.maximum(np.exp(c[MEAN_L] + _LOG_ABS_NORMAL), 1.0)
        floor = _VAR_POWERED * self.short_alpha / (2.0 - self.short_alpha)
        calm_floor = (c[CALM_MEAN] / _MEAN_POWERED) ** 2 * floor
        z = np.empty((3, len(e)))
        np.divide(e, typical, out=z[0])  # e is |error|: both signs count
        z[1] = np.abs(short - c[MEAN_S]) / np.sqrt(np.maximum(c[VAR_S], floor))
        # calm, one-sided: the misses' short average far below its usual range; now and at
        # the previous reading (calm flags its onset, not every reading while it lasts)
        calm_sd = np.sqrt(np.maximum(np.maximum(c[CALM_VAR], calm_floor), 1e-300))
        z[2] = (c[CALM_MEAN] - calm_short) / calm_sd
        bits = surprise(z)
        # |N(0,1)| exceeds e with probability 2 Q(e): the two-sided tests lose log10(2)
        miss = np.maximum(np.maximum(bits[0], bits[1]) - _LOG10_2, 0.0)
        warm = seen >= max(self.warmup, _MIN_SEEN)
        ready = valid & warm
        score = np.where(ready, to_score(miss), 0.0)
        trigger = ready & (score >= self.threshold)
        if self.novelty is not None:
            k = 1.0 + self.novelty
            of_short = _ratio(raw_short, k * c[SHORT_PEAK])
            of_point = _ratio(e, k * c[POINT_PEAK])
            short_of = np.maximum(of_short, of_point)
            novel = short_of > 1.0
            score *= np.minimum(short_of, 1.0)
            trigger &= novel
        else:
            of_short = of_point = np.full(len(e), np.inf)
            novel = np.zeros_like(valid)
        # Calm (a stuck sensor, a flat-lined feed) is exempt from the gate: it is never a
        # recurring big miss.  It triggers where it begins, as a miss triggers where it is news.
        calm = np.where(ready, to_score(bits[2]), 0.0)
        was_calm = (seen > max(self.warmup, _MIN_SEEN)) & (
            c[CALM_MEAN] - c[CALM_SHORT] >= _z_at(self.threshold) * calm_sd
        )
        calm_on = ready & (calm >= self.threshold)
        trigger |= calm_on & ~was_calm
        score = np.maximum(score, calm)
        if outside is not None:  # the envelope: a rule, exempt from the gate as well
            beyond = outside & warm  # also readings without a forecast (after a gap)
            trigger |= beyond
            score = np.where(beyond, np.maximum(score, self.threshold), score)
        # What sets the bar: triggers (an anomaly's size is what the next must beat to be news
        # again), misses that are not news (a recurring miss keeps its bar up), and warm-up
        # after the model's first steps, where nothing triggers (else the first recurrence of
        # a large miss seen in warm-up would read as news).  Not a novel miss that is not
        # (yet) anomalous: a slow rise would lift the bar ahead of itself and never trigger.
        # For the same reason the short average sets it only once it falls, to the peak it
        # reached: while it rises by less than the margin a step, it would drag the bar along.
        decay = np.exp(-1.0 / self.long_window)
        always = valid & (trigger | (~warm & (seen >= _SETTLE)))
        falling = raw_short < c[RAW_SHORT]
        for col, v, usual in (
            (SHORT_PEAK, np.where(falling, c[RAW_SHORT], raw_short), falling & (of_short <= 1.0)),
            (POINT_PEAK, e, of_point <= 1.0),
        ):
            c[col] = np.where(always | (valid & usual), np.maximum(v, c[col] * decay), c[col])
        held = c[HOLD] > 0
        c[HOLD] = np.where(trigger, self.hold, np.maximum(c[HOLD] - valid, 0))
        flag = trigger | (held & valid)
        # a stuck stretch is flagged once, but is no more normal for that: not learned either
        learn = valid & (~(trigger | calm_on) | self.learn_anomalies)
        n = seen + learn
        alpha = np.where(learn, 1.0 / np.maximum(np.minimum(n, self.long_window), 1.0), 0.0)
        c[MEAN_L] += alpha * (np.log(e + _LOG_EPS) - c[MEAN_L])
        for col_mean, col_var, v in ((MEAN_S, VAR_S, short), (CALM_MEAN, CALM_VAR, calm_short)):
            d = v - c[col_mean]
            c[col_mean] += alpha * d
            c[col_var] = (1.0 - alpha) * (c[col_var] + alpha * d * d)
        c[SHORT], c[RAW_SHORT], c[CALM_SHORT], c[SEEN] = short, raw_short, calm_short, n
        stats[:] = c.T
        return score, flag

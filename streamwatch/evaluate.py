"""Detection quality against labelled anomalies: event counts and the NAB score (pure).

Both rulers take label ranges as inclusive ``(start, end)`` row indices.

* **Event counts**, the rule of Hundman et al. (KDD 2018) and the Orion benchmark (see
  ``datasets/msl/README.md``): flagged rows merge into predicted sequences; a labelled sequence
  that any of them overlaps is a TP, otherwise an FN; a predicted sequence overlapping no label
  is an FP; further predicted sequences inside an already detected label count as neither.
* **NAB**, Lavin & Ahmad (2015), as numenta/NAB 1.x computes it (``sweeper.py``,
  ``runner.py``): each label gets a window; the first detection in a window earns up to
  ``A_TP``, less the later it comes; a detection outside every window costs up to ``A_FP``, more
  the further it lies past the last window; a window without a detection costs ``A_FN``. Raw
  scores are summed over the corpus and normalised so that flagging nothing scores 0 and
  flagging the first row of every window scores 100.

>>> flags = np.zeros(20, dtype=bool)
>>> flags[[3, 4, 12]] = True
>>> counts = event_counts(flags, [(2, 5), (8, 9)])
>>> counts
EventCounts(tp=1, fp=1, fn=1)
>>> round(counts.f1, 3)
0.5
>>> round(nab_score([flags], [nab_windows(20, [(2, 5), (8, 9)])], PROFILES["standard"]), 1)
46.4
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

Span = tuple[int, int]  # inclusive (start, end) row indices


def runs(flags: np.ndarray) -> list[Span]:
    """Inclusive ``(start, end)`` of every run of True in a 1-D array.

    >>> runs(np.array([True, True, False, False, True]))
    [(0, 1), (4, 4)]
    """
    f = _as_flags(flags).astype(np.int8)
    edges = np.diff(np.concatenate(([0], f, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass(frozen=True)
class EventCounts:
    """Event-level counts; add them to pool channels before taking ratios.

    Each ratio is 0.0 where its denominator is 0 (no detections, no labels), so a detector that
    flags nothing scores 0 rather than being undefined.

    >>> total = sum([EventCounts(2, 1, 0), EventCounts(1, 0, 2)], EventCounts())
    >>> total, round(total.precision, 2), round(total.recall, 2), round(total.f1, 2)
    (EventCounts(tp=3, fp=1, fn=2), 0.75, 0.6, 0.67)
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        # Equal to 2PR / (P + R), and 0 where that is 0/0.
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


def _flags_and_labels(
    flags: np.ndarray, labels: Sequence[Span]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked flags, label spans as an (n, 2) array, and the mask of labelled rows."""
    f = _as_flags(flags)
    lab = _check_spans(labels, len(f), "label")
    labelled = np.zeros(len(f), dtype=bool)
    for s, e in lab.tolist():
        labelled[s : e + 1] = True
    return f, lab, labelled


def event_counts(flags: np.ndarray, labels: Sequence[Span]) -> EventCounts:
    """Count labelled sequences hit or missed and predicted sequences that hit nothing.

    >>> event_counts(np.array([0, 1, 1, 0, 0, 0, 1, 0], dtype=bool), [(2, 3), (5, 5)])
    EventCounts(tp=1, fp=1, fn=1)
    """
    f, lab, labelled = _flags_and_labels(flags, labels)
    # With a leading 0, c[e + 1] - c[s] counts the True rows of [s, e].
    flagged_c = np.concatenate(([0], np.cumsum(f)))
    labelled_c = np.concatenate(([0], np.cumsum(labelled)))
    hit = flagged_c[lab[:, 1] + 1] - flagged_c[lab[:, 0]] > 0
    pred = np.array(runs(f), dtype=np.int64).reshape(-1, 2)
    false = labelled_c[pred[:, 1] + 1] - labelled_c[pred[:, 0]] == 0
    return EventCounts(tp=int(hit.sum()), fp=int(false.sum()), fn=int((~hit).sum()))


@dataclass(frozen=True)
class RowCounts:
    """Row-level tallies beside the event counts.  Event-level F1 cannot see how much is
    flagged (flagging every row of every stream scores F1 = 1), so reports carry these too.

    >>> c = row_counts(np.array([0, 1, 1, 0, 0, 0, 1, 0], dtype=bool), [(2, 3), (5, 5)])
    >>> c, c.flagged_fraction, round(c.precision, 2), round(c.recall, 2)
    (RowCounts(rows=8, flagged=3, labelled=3, both=1), 0.375, 0.33, 0.33)
    """

    rows: int = 0
    flagged: int = 0
    labelled: int = 0
    both: int = 0  # flagged rows inside labelled sequences

    def __add__(self, other: RowCounts) -> RowCounts:
        return RowCounts(
            self.rows + other.rows,
            self.flagged + other.flagged,
            self.labelled + other.labelled,
            self.both + other.both,
        )

    @property
    def flagged_fraction(self) -> float:
        return _ratio(self.flagged, self.rows)

    @property
    def precision(self) -> float:
        return _ratio(self.both, self.flagged)

    @property
    def recall(self) -> float:
        return _ratio(self.both, self.labelled)


def row_counts(flags: np.ndarray, labels: Sequence[Span]) -> RowCounts:
    f, _, labelled = _flags_and_labels(flags, labels)
    return RowCounts(len(f), int(f.sum()), int(labelled.sum()), int((f & labelled).sum()))


@dataclass(frozen=True)
class Profile:
    """NAB application profile: the weights of a detection, a false alarm and a miss.

    NAB's cost matrices also carry a TN weight, but no NAB score uses it.
    """

    name: str
    tp: float
    fp: float
    fn: float


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("standard", tp=1.0, fp=0.11, fn=1.0),
        Profile("reward_low_fp", tp=1.0, fp=0.22, fn=1.0),
        Profile("reward_low_fn", tp=1.0, fp=0.11, fn=2.0),
    )
}


@overload
def scaled_sigmoid(y: float) -> float: ...
@overload
def scaled_sigmoid(y: np.ndarray) -> np.ndarray: ...
def scaled_sigmoid(y: float | np.ndarray) -> float | np.ndarray:
    """NAB's weight of a detection at relative position ``y``: ``2 / (1 + exp(5 y)) - 1``.

    ``y = -1`` is a window's first row, 0 just past its last; positive ``y`` lies after the
    window. From ``y = 3`` on the value is exactly -1, as in NAB's sweeper.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.0, -1.0)
    """
    a = np.asarray(y, dtype=np.float64)
    # Clipping before exp keeps far false positives from overflowing; the cap hides them anyway.
    out = np.where(a >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(a, 3.0))) - 1.0)
    return float(out) if out.ndim == 0 else out


_MAX_TP = scaled_sigmoid(-1.0)


def nab_windows(length: int, labels: Sequence[Span], window_fraction: float = 0.1) -> list[Span]:
    """NAB windows around labelled sequences; overlapping windows merge.

    As in NAB's labeler, ``window_fraction`` of the series is shared evenly among the labels;
    each label is widened by half a share on both sides, clipped to the series.

    >>> nab_windows(100, [(50, 52), (10, 10)])
    [(8, 12), (48, 54)]
    >>> nab_windows(100, [(10, 10), (14, 14)])
    [(8, 16)]
    """
    lab = _check_spans(labels, length, "label")
    if len(lab) == 0:
        return []
    half = int(window_fraction * length / len(lab)) // 2
    merged: list[list[int]] = []
    for s, e in sorted(lab.tolist()):
        lo, hi = max(s - half, 0), min(e + half, length - 1)
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


@dataclass(frozen=True)
class NabRaw:
    """Raw NAB score of one series or, summed, of a corpus, with its two reference scores.

    ``tp`` and ``fn`` count windows; ``fp`` counts flagged rows outside every window.
    ``normalised`` is NaN where there are no windows (nothing to detect, no scale).

    >>> one = nab_raw(np.array([0, 0, 1, 0, 0, 0], dtype=bool), [(2, 3)], PROFILES["standard"])
    >>> one
    NabRaw(score=1.0, null=-1.0, perfect=1.0, tp=1, fp=0, fn=0)
    >>> (one + NabRaw(null=-1.0, perfect=1.0, score=-1.0, fn=1)).normalised
    50.0
    """

    score: float = 0.0
    null: float = 0.0  # a detector that flags nothing
    perfect: float = 0.0  # one that flags exactly the first row of every window
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: NabRaw) -> NabRaw:
        return NabRaw(
            self.score + other.score,
            self.null + other.null,
            self.perfect + other.perfect,
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
        )

    @property
    def normalised(self) -> float:
        span = self.perfect - self.null
        return 100.0 * (self.score - self.null) / span if span else float("nan")


def nab_raw(flags: np.ndarray, windows: Sequence[Span], profile: Profile) -> NabRaw:
    """Raw NAB score of binary detections on one series; ``windows`` sorted and disjoint.

    >>> flags = np.zeros(12, dtype=bool)
    >>> flags[[3, 4, 8]] = True  # late in the window, again (ignored), then a false alarm
    >>> raw = nab_raw(flags, [(0, 4)], PROFILES["standard"])
    >>> round(raw.score, 4), raw.tp, raw.fp, raw.fn
    (0.6634, 1, 1, 0)
    """
    f = _as_flags(flags)
    win, window_of, value = _row_values(len(f), windows, profile)
    hits = f & (window_of >= 0)
    # Only a window's earliest detection counts; np.unique reports first occurrences.
    detected, first = np.unique(window_of[hits], return_index=True)
    tp_score = float(value[np.flatnonzero(hits)[first]].sum())
    false = f & (window_of < 0)
    missed = len(win) - len(detected)
    return NabRaw(
        score=tp_score + float(value[false].sum()) - profile.fn * missed,
        null=-profile.fn * len(win),
        perfect=profile.tp * len(win),
        tp=len(detected),
        fp=int(false.sum()),
        fn=missed,
    )


def nab_score(
    flags_list: Sequence[np.ndarray], windows_list: Sequence[Sequence[Span]], profile: Profile
) -> float:
    """Normalised NAB score of a corpus: raw scores are summed before normalising, as in NAB.

    >>> w = [(2, 3)]
    >>> nab_score([np.array([0, 0, 1, 0], bool), np.zeros(4, bool)], [w, w], PROFILES["standard"])
    50.0
    """
    if len(flags_list) != len(windows_list):
        raise ValueError(f"{len(flags_list)} flag arrays but {len(windows_list)} window lists")
    total = sum(
        (nab_raw(f, w, profile) for f, w in zip(flags_list, windows_list, strict=True)),
        start=NabRaw(),
    )
    return total.normalised


def nab_sweep(
    scores_list: Sequence[np.ndarray],
    windows_list: Sequence[Sequence[Span]],
    profile: Profile,
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> tuple[float, float]:
    """Best ``(threshold, normalised NAB score)`` over the corpus; a row is flagged at ``>=``.

    By default every distinct score is tried, as NAB's sweeper does; ``+inf`` (flag nothing,
    scoring 0) is always among the candidates. Ties go to the highest threshold.

    >>> scores = np.array([0.1, 0.2, 0.9, 0.8, 0.1, 0.3, 0.1, 0.2])
    >>> nab_sweep([scores], [[(2, 4)]], PROFILES["standard"])
    (0.9, 100.0)
    """
    if len(scores_list) != len(windows_list):
        raise ValueError(f"{len(scores_list)} score arrays but {len(windows_list)} window lists")
    series = [np.asarray(s, dtype=np.float64) for s in scores_list]
    for s in series:
        if s.ndim != 1 or not np.isfinite(s).all():
            raise ValueError("scores must be 1-D and finite")
    pool = np.concatenate([*series, [np.inf]])
    cand = np.asarray(pool if thresholds is None else [*thresholds, np.inf], dtype=np.float64)
    if np.isnan(cand).any():
        raise ValueError("thresholds must not be NaN")
    cand = np.unique(cand)[::-1]  # highest first, so argmax breaks ties towards fewer flags

    total = np.zeros(len(cand))
    null = perfect = 0.0
    for s, windows in zip(series, windows_list, strict=True):
        win, window_of, value = _row_values(len(s), windows, profile)
        null -= profile.fn * len(win)
        perfect += profile.tp * len(win)
        outside = window_of < 0
        order = np.argsort(s[outside], kind="stable")
        out_scores, out_values = s[outside][order], value[outside][order]
        # tail[m] is the cost of the false positives at sorted positions m and above.
        tail = np.concatenate((np.cumsum(out_values[::-1])[::-1], [0.0]))
        total += tail[np.searchsorted(out_scores, cand, side="left")]
        for ws, we in win.tolist():
            # A window's first detection at threshold t is the first row whose running max
            # reaches t; past the end means a miss.
            reach = np.maximum.accumulate(s[ws : we + 1])
            worth = np.append(value[ws : we + 1], -profile.fn)
            total += worth[np.searchsorted(reach, cand, side="left")]
    if perfect == null:
        raise ValueError("no windows in the corpus: nothing to score")
    norm = 100.0 * (total - null) / (perfect - null)
    best = int(np.argmax(norm))
    return float(cand[best]), float(norm[best])


def _row_values(
    length: int, windows: Sequence[Span], profile: Profile
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked windows, each row's window (-1 if none), and what a detection there is worth."""
    win = _check_spans(windows, length, "window")
    if np.any(win[1:, 0] <= win[:-1, 1]):
        raise ValueError(f"windows must be sorted and disjoint: {win.tolist()}")
    rows = np.arange(length)
    window_of = np.full(length, -1, dtype=np.int64)
    value = np.empty(length)
    for k, (ws, we) in enumerate(win.tolist()):
        inside = rows[ws : we + 1]
        window_of[ws : we + 1] = k
        # Position runs from -1 (first row) to -1/width (last). Dividing by sigma(-1) makes an
        # on-time detection worth exactly A_TP, as NAB 1.x does; "perfect" relies on it.
        y = -(we - inside + 1) / (we - ws + 1)
        value[ws : we + 1] = profile.tp * scaled_sigmoid(y) / _MAX_TP
    outside = window_of < 0
    if len(win) == 0:
        past = np.full(length, 3.0)
    else:
        # False positives are placed relative to the last window ending before them, in units
        # of that window's width - 1 (NAB's choice; 1 for a one-row window); none: y = 3 (-1).
        prev = np.searchsorted(win[:, 1], rows, side="left") - 1
        end = win[prev, 1]
        scale = np.maximum(win[prev, 1] - win[prev, 0], 1)
        past = np.where(prev < 0, 3.0, (rows - end) / scale)
    value[outside] = profile.fp * scaled_sigmoid(past[outside])
    return win, window_of, value


def _as_flags(flags: np.ndarray) -> np.ndarray:
    arr = np.asarray(flags)
    if arr.ndim != 1:
        raise ValueError(f"flags must be 1-D, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _check_spans(spans: Sequence[Span], length: int, what: str) -> np.ndarray:
    arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    for s, e in arr.tolist():
        if not 0 <= s <= e < length:
            raise ValueError(f"{what} ({s}, {e}) is not an inclusive range inside [0, {length})")
    return arr


def report(
    streams: Sequence[str],
    scores: Sequence[np.ndarray],
    flags: Sequence[np.ndarray],
    labels: Sequence[Sequence[Span]],
) -> dict[str, object]:
    """Event counts of ``flags`` and NAB sweeps of ``scores``, per stream and in total."""
    per_stream = {}
    total = EventCounts()
    rows = RowCounts()
    for name, f, lab in zip(streams, flags, labels, strict=True):
        c = event_counts(f, lab)
        total = total + c
        rows = rows + row_counts(f, lab)
        per_stream[name] = {"labels": len(lab), "tp": c.tp, "fp": c.fp, "fn": c.fn}
    windows = [nab_windows(len(s), lab) for s, lab in zip(scores, labels, strict=True)]
    nab = {}
    if any(windows):
        for key, profile in PROFILES.items():
            threshold, value = nab_sweep(list(scores), windows, profile)
            nab[key] = {"score": round(value, 2), "threshold": threshold}
    return {
        "event": {
            "tp": total.tp,
            "fp": total.fp,
            "fn": total.fn,
            "precision": round(total.precision, 4),
            "recall": round(total.recall, 4),
            "f1": round(total.f1, 4),
        },
        "rows": {
            "rows": rows.rows,
            "flagged": rows.flagged,
            "labelled": rows.labelled,
            "flagged_fraction": round(rows.flagged_fraction, 4),
            "precision": round(rows.precision, 4),
            "recall": round(rows.recall, 4),
        },
        "nab": nab,
        "streams": per_stream,
    }

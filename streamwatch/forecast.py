"""How good a forecast is, before anyone judges the verdicts built on it (pure).

A reading is flagged when it lies far from its forecast, so the forecast must first beat the
simplest forecasts there are: *persistence* (the next reading equals this one) and, where the
timestamps show a daily or weekly cycle, *seasonal naive* (it equals the reading one period
ago).  For one stream, over the rows that have a forecast and a previous reading:

- ``mae``, ``persistence_mae``, ``seasonal_mae`` (None without a cycle) and
  ``skill = 1 - mae / persistence_mae`` (> 0: better than persistence);
- ``bias = mean(prediction - value) / mae`` (0: unbiased; +1: always over by its typical miss);
- ``coverage``: the share of readings inside the central 50, 90 and 99 % intervals that the
  predicted scale implies (a Gaussian, as the model is trained: prediction ± z * scale).

>>> v = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
>>> s = stream_skill(v, v + 0.5, np.full(5, 0.5), np.arange(5) * 60.0)
>>> s.mae, s.persistence_mae, s.skill, s.bias
(0.5, 1.0, 0.5, 1.0)
>>> s.coverage[0.9], s.seasonal_mae is None
(1.0, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVELS = (0.5, 0.9, 0.99)
# Two-sided standard normal quantiles of LEVELS: the half-widths in units of the scale.
_Z = {0.5: 0.6744897501960817, 0.9: 1.6448536269514722, 0.99: 2.5758293035489004}
DAY, WEEK = 86400.0, 7 * 86400.0


@dataclass(frozen=True)
class Skill:
    rows: int  # rows judged: with a forecast and a previous reading
    mae: float
    persistence_mae: float
    seasonal_mae: float | None  # None: no daily or weekly cycle in the timestamps
    period: int | None  # the seasonal lag in readings
    skill: float  # 1 - mae / persistence_mae
    bias: float  # mean(prediction - value) / mae
    coverage: dict[float, float]  # level -> share of readings inside its interval

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["coverage"] = {str(k): v for k, v in self.coverage.items()}
        return d


def seasonal_lag(timestamps: np.ndarray) -> int | None:
    """Readings per day (or per week, where a day is not a whole number of steps or the
    series is too short for two days), from the median step of regular timestamps; None
    when the steps are irregular or the series spans fewer than two periods.

    >>> seasonal_lag(np.arange(0, 3 * 86400, 300.0))
    288
    >>> seasonal_lag(np.arange(1000.0)) is None
    True
    """
    t = np.asarray(timestamps, np.float64)
    if len(t) < 3:
        return None
    steps = np.diff(t)
    step = float(np.median(steps))
    if step <= 0 or np.mean(np.abs(steps - step) <= 1e-6 * step) < 0.9:
        return None
    span = t[-1] - t[0]
    for period in (DAY, WEEK):
        lag = period / step
        if abs(lag - round(lag)) < 1e-6 and lag >= 2 and span >= 2 * period:
            return round(lag)
    return None


def figures(
    values: np.ndarray, predictions: np.ndarray, scales: np.ndarray, naive: np.ndarray
) -> dict[str, Any]:
    """MAE, the naive forecast's MAE, skill, bias and interval coverage of aligned arrays
    (every row judged): what ``stream_skill`` reports, and training for its validation split.

    >>> figures(np.zeros(4), np.full(4, 0.5), np.ones(4), np.ones(4))["skill"]
    0.5
    """
    y = np.asarray(values, np.float64)
    err = np.asarray(predictions, np.float64) - y
    if not err.size:
        nan = float("nan")
        coverage = dict.fromkeys(LEVELS, nan)
        return {
            "rows": 0,
            "mae": nan,
            "naive_mae": nan,
            "skill": nan,
            "bias": nan,
            "coverage": coverage,
        }
    miss = np.abs(err)
    mae = float(np.mean(miss))
    naive_mae = float(np.mean(np.abs(np.asarray(naive, np.float64) - y)))
    return {
        "rows": int(err.size),
        "mae": mae,
        "naive_mae": naive_mae,
        "skill": float(1.0 - mae / naive_mae) if naive_mae > 0 else float("nan"),
        "bias": float(np.mean(err) / mae) if mae > 0 else 0.0,
        "coverage": {q: float(np.mean(miss <= _Z[q] * np.asarray(scales))) for q in LEVELS},
    }


def stream_skill(
    values: np.ndarray, predictions: np.ndarray, scales: np.ndarray, timestamps: np.ndarray
) -> Skill:
    """The figures above for one stream's readings in time order (NaN where no forecast)."""
    y = np.asarray(values, np.float64)
    p = np.asarray(predictions, np.float64)
    s = np.asarray(scales, np.float64)
    ok = np.isfinite(p) & np.isfinite(y)
    ok[0] = False  # persistence needs the previous reading
    at = np.flatnonzero(ok)
    f = figures(y[at], p[at], s[at], y[at - 1])
    lag = seasonal_lag(timestamps)
    seasonal = None
    if lag is not None:
        at = at[at >= lag]
        if at.size:
            seasonal = float(np.mean(np.abs(y[at] - y[at - lag])))
    return Skill(
        f["rows"], f["mae"], f["naive_mae"], seasonal, lag, f["skill"], f["bias"], f["coverage"]
    )


def skill_report(
    streams: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """Per stream (values, predictions, scales, timestamps) -> each stream's figures and a
    summary over streams (``report``)."""
    return report({name: stream_skill(*cols) for name, cols in streams.items()})


def report(per: Mapping[str, Skill]) -> dict[str, Any]:
    """Streams' figures -> those figures and a summary over the streams: medians of the
    ratios, and the share of streams that beat persistence (what a target like "MAE <=
    persistence MAE on 90 % of series" reads).  Pools several models' streams as well."""
    judged = [s for s in per.values() if s.rows and s.persistence_mae > 0]

    def median(xs: list[float]) -> float | None:
        xs = [x for x in xs if np.isfinite(x)]
        return float(np.median(xs)) if xs else None

    summary = {
        "streams": len(per),
        "judged": len(judged),
        "beats_persistence": (
            sum(s.mae <= s.persistence_mae for s in judged) / len(judged) if judged else None
        ),
        "median_mae_ratio": median([s.mae / s.persistence_mae for s in judged]),
        "median_seasonal_ratio": median([s.mae / s.seasonal_mae for s in judged if s.seasonal_mae]),
        "median_skill": median([s.skill for s in judged]),
        "median_abs_bias": median([abs(s.bias) for s in judged]),
        **{f"median_coverage_{q:g}": median([s.coverage[q] for s in judged]) for q in LEVELS},
        "p10_coverage_0.9": (
            float(np.percentile([s.coverage[0.9] for s in judged], 10)) if judged else None
        ),
    }
    return {"summary": summary, "streams": {k: v.to_dict() for k, v in per.items()}}


def format_summary(summary: Mapping[str, Any]) -> str:
    """One line for a log or a terminal."""

    def f(key: str, fmt: str = ".3f") -> str:
        v = summary.get(key)
        return "n/a" if v is None else format(v, fmt)

    return (
        f"forecast over {summary['judged']} stream(s): MAE / persistence MAE median "
        f"{f('median_mae_ratio')} (skill {f('median_skill')}), beats persistence on "
        f"{f('beats_persistence', '.0%')} of streams, MAE / seasonal-naive MAE median "
        f"{f('median_seasonal_ratio')}, |bias| median {f('median_abs_bias')}, interval "
        f"coverage median 50 % {f('median_coverage_0.5')}, 90 % {f('median_coverage_0.9')} "
        f"(p10 {f('p10_coverage_0.9')}), 99 % {f('median_coverage_0.99')}"
    )

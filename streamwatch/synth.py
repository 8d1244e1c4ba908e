"""Reproducible synthetic streams with injected, labelled anomalies.

Each stream is a level on its own scale (0.1 to 10^4), a daily cycle computed from the
timestamps (sometimes with a second harmonic), a weaker weekend dip, a small linear trend and
Gaussian noise, AR(1) on about half the streams.  The noise std is 2-6 % of the daily
amplitude, so normal behaviour is easy to forecast and anomalies, sized in units of that std,
stand out.  Anomalies of one stream never overlap, keep ``_GAP`` normal steps between them and
start no earlier than ``warmup``.  Values outside the altered readings are bit for bit those of
the same spec generated with ``anomalies_per_stream=0``.  An anomaly's event, what labels
count, is its altered readings and the reading where the stream snaps back (``Anomaly.window``).

>>> data = generate(SynthSpec(n_streams=3, length=2016, seed=1))
>>> data.values.shape, data.stream_ids
((3, 2016), ('s0000', 's0001', 's0002'))
>>> float(data.timestamps[1] - data.timestamps[0])
300.0
>>> all(600 <= a.start <= a.end < 2016 for a in data.anomalies)
True
>>> int(data.labels().sum()) == sum(a.end - a.start + 1 for a in data.anomalies)
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("spike", "level_shift", "variance_burst", "stuck", "drift")

# Inclusive ranges of duration (steps) and magnitude (noise stds; the noise multiplier for
# variance bursts).  Stuck values need no magnitude: they freeze the value at the start.
_DURATION = {
    "spike": (1, 3),
    "level_shift": (50, 300),
    "variance_burst": (30, 150),
    "stuck": (50, 300),
    "drift": (100, 400),
}
_MAGNITUDE = {
    "spike": (8.0, 15.0),
    "level_shift": (6.0, 12.0),
    "variance_burst": (5.0, 10.0),
    "drift": (10.0, 20.0),
}
_GAP = 100  # normal steps between two anomalies of one stream, so each can be told apart
_DAY = 86_400.0
_WEEK_ORIGIN_DAYS = 3.0  # 1970-01-01 was a Thursday: days since epoch + 3 = days since a Monday


@dataclass(frozen=True)
class SynthSpec:
    n_streams: int = 20
    length: int = 4032  # readings per stream
    step_seconds: float = 300.0  # 5-minute readings: a day is 288 steps, a week 2016
    start: float = 1_700_006_400.0  # epoch seconds of the first reading (a midnight UTC)
    anomalies_per_stream: float = 2.0  # expected count (Poisson) per stream
    kinds: tuple[str, ...] = KINDS
    warmup: int = 600  # no anomaly starts before this index (models need history)
    seed: int = 0


@dataclass(frozen=True)
class Anomaly:
    stream: str
    kind: str
    start: int  # index into the stream, inclusive
    end: int  # inclusive: the last altered reading

    def window(self, length: int) -> tuple[int, int]:
        """The event to count, inclusive: the altered readings and the first one after them.
        There the stream snaps back to normal, a jump as large as the onset (spike, level
        shift, stuck, drift), so a flag on it has seen the anomaly, late, and is no false
        alarm.  Clamped to a series of ``length`` readings.

        >>> Anomaly("s", "stuck", 700, 799).window(2000)
        (700, 800)
        >>> Anomaly("s", "spike", 1998, 1999).window(2000)  # the series ends
        (1998, 1999)
        """
        return self.start, min(self.end + 1, length - 1)


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare fields explicitly
class SynthData:
    stream_ids: tuple[str, ...]
    timestamps: np.ndarray  # (length,) float64 epoch seconds, shared by all streams
    values: np.ndarray  # (n_streams, length) float64, read-only
    anomalies: tuple[Anomaly, ...]  # sorted by stream, then start

    def labels(self) -> np.ndarray:
        """(n_streams, length) bool, True inside an anomaly."""
        row = {sid: i for i, sid in enumerate(self.stream_ids)}
        out = np.zeros(self.values.shape, dtype=bool)
        for a in self.anomalies:
            out[row[a.stream], a.start : a.end + 1] = True
        return out


def generate(spec: SynthSpec) -> SynthData:
    """Generate ``spec.n_streams`` streams; the same spec gives bitwise-identical data.

    >>> a = generate(SynthSpec(n_streams=2, length=1000, warmup=200, seed=7))
    >>> b = generate(SynthSpec(n_streams=2, length=1000, warmup=200, seed=7))
    >>> bool((a.values == b.values).all()) and a.anomalies == b.anomalies
    True
    >>> generate(SynthSpec(n_streams=0))
    Traceback (most recent call last):
    ...
    ValueError: n_streams must be >= 1
    """
    _validate(spec)
    base = _baseline(spec)
    sigma, count_like = base.sigma, base.count_like
    values = base.mean + base.noise
    width = max(4, len(str(spec.n_streams - 1)))
    stream_ids = tuple(f"s{i:0{width}d}" for i in range(spec.n_streams))

    rng = np.random.default_rng(_seeds(spec)[1])
    anomalies: list[Anomaly] = []
    counts = rng.poisson(spec.anomalies_per_stream, spec.n_streams)
    for s in range(spec.n_streams):
        for kind, start, end in _place(spec, int(counts[s]), rng):
            row = values[s, start : end + 1]  # a view: edits land in values
            # Count-like streams only go up, so clipping at 0 cannot hide an anomaly.
            sign = 1.0 if count_like[s] else float(rng.choice((-1.0, 1.0)))
            if kind == "stuck":
                row[:] = row[0]
            else:
                size = rng.uniform(*_MAGNITUDE[kind])
                if kind in ("spike", "level_shift"):
                    row += sign * size * sigma[s]
                elif kind == "variance_burst":
                    # Extra white noise: the total noise std becomes size * sigma.
                    extra = rng.standard_normal(end - start + 1)
                    row += np.sqrt(size**2 - 1.0) * sigma[s] * extra
                else:  # drift: a ramp from one step's worth up to the full size at the end
                    ramp = np.arange(1, end - start + 2) / (end - start + 1)
                    row += sign * size * sigma[s] * ramp
            anomalies.append(Anomaly(stream_ids[s], kind, start, end))

    values[count_like] = np.maximum(values[count_like], 0.0)
    values.flags.writeable = False
    return SynthData(stream_ids, base.timestamps, values, tuple(anomalies))


def _validate(spec: SynthSpec) -> None:
    def is_int(x: object) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(spec.n_streams) or spec.n_streams < 1:
        raise ValueError("n_streams must be >= 1")
    if not is_int(spec.length) or spec.length < 2:
        raise ValueError("length must be an integer >= 2")
    if not math.isfinite(spec.step_seconds) or spec.step_seconds <= 0:
        raise ValueError("step_seconds must be finite and > 0")
    if not math.isfinite(spec.start):
        raise ValueError("start must be finite")
    if not math.isfinite(spec.anomalies_per_stream) or spec.anomalies_per_stream < 0:
        raise ValueError("anomalies_per_stream must be finite and >= 0")
    for kind in spec.kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r} in kinds (known: {', '.join(KINDS)})")
    if len(set(spec.kinds)) != len(spec.kinds):
        raise ValueError("kinds must not repeat a kind")
    if not is_int(spec.warmup) or not 0 <= spec.warmup < spec.length:
        raise ValueError("warmup must be an integer with 0 <= warmup < length")
    if not is_int(spec.seed) or spec.seed < 0:
        raise ValueError("seed must be an integer >= 0")
    if spec.anomalies_per_stream > 0:
        if not spec.kinds:
            raise ValueError("kinds must not be empty when anomalies_per_stream > 0")
        need = max(_DURATION[k][0] for k in spec.kinds)
        if spec.length - spec.warmup < need:
            raise ValueError(
                f"length - warmup must be >= {need} to fit the shortest anomaly of each kind"
            )


def _seeds(spec: SynthSpec) -> list[np.random.SeedSequence]:
    # Separate streams of randomness: the baseline does not depend on the anomalies drawn.
    return np.random.SeedSequence(spec.seed).spawn(2)


@dataclass(frozen=True, eq=False)
class _Baseline:
    timestamps: np.ndarray  # (length,), read-only
    mean: np.ndarray  # (n_streams, length): level, seasonality and trend
    noise: np.ndarray  # (n_streams, length)
    sigma: np.ndarray  # (n_streams,) stationary std of the noise: the unit of anomaly sizes
    count_like: np.ndarray  # (n_streams,) bool: clipped at 0


def _baseline(spec: SynthSpec) -> _Baseline:
    """Normal behaviour of every stream, before anomalies and clipping."""
    rng = np.random.default_rng(_seeds(spec)[0])
    n, length = spec.n_streams, spec.length
    timestamps = spec.start + spec.step_seconds * np.arange(length, dtype=np.float64)
    timestamps.flags.writeable = False
    col = (n, 1)  # per-stream parameters broadcast against the time axis
    count_like = rng.random(n) < 0.25
    level = 10.0 ** rng.uniform(-1.0, 4.0, n)
    level = np.where(count_like | (rng.random(n) < 0.85), level, -level)
    # Count-like streams keep their worst trough (<= 0.72 level, >= 13 sigma) clear of zero.
    amp = np.abs(level) * np.where(count_like, rng.uniform(0.1, 0.35, n), rng.uniform(0.1, 0.6, n))
    harm2 = amp * rng.uniform(0.2, 0.5, n) * (rng.random(n) < 0.5)
    phase1, phase2 = rng.uniform(0.0, 2 * np.pi, (2, n))
    weekend_dip = amp * rng.uniform(0.1, 0.4, n)  # weekly is weaker than daily
    weekend_calm = rng.uniform(0.0, 0.4, n)  # weekends also swing less
    trend = amp * rng.uniform(-0.3, 0.3, n)  # total change over the whole series
    sigma = amp * rng.uniform(0.02, 0.06, n)
    phi = rng.uniform(0.2, 0.7, n) * (rng.random(n) < 0.5)

    day = 2 * np.pi * (timestamps / _DAY % 1.0)
    daily = amp.reshape(col) * np.sin(day + phase1.reshape(col)) + harm2.reshape(col) * np.sin(
        2 * day + phase2.reshape(col)
    )
    # Weekend weight: 1 from Saturday 00:00 to Monday 00:00, half-day ramps on either side.
    week_day = (timestamps / _DAY + _WEEK_ORIGIN_DAYS) % 7.0
    dist = np.abs(week_day - 6.0)
    dist = np.minimum(dist, 7.0 - dist)  # circular distance in days from Sunday 00:00
    ramp = np.clip((1.5 - dist) / 0.5, 0.0, 1.0)
    weekend = 0.5 - 0.5 * np.cos(np.pi * ramp)  # smoothstep, so the model sees no jumps
    daily = daily * (1.0 - weekend_calm.reshape(col) * weekend)
    mean = (
        level.reshape(col)
        + daily
        - weekend_dip.reshape(col) * weekend
        + trend.reshape(col) * np.linspace(-0.5, 0.5, length)
    )

    # AR(1) noise with stationary std sigma; the loop is over time, vectorised over streams.
    innov = rng.standard_normal((n, length))
    innov[:, 1:] *= np.sqrt(1.0 - phi**2).reshape(col)
    for t in range(1, length):
        innov[:, t] += phi * innov[:, t - 1]
    return _Baseline(timestamps, mean, innov * sigma.reshape(col), sigma, count_like)


def _place(spec: SynthSpec, count: int, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """Kinds and inclusive (start, end) of one stream's anomalies, in time order."""
    room = spec.length - spec.warmup
    kinds = [str(k) for k in rng.choice(spec.kinds, count)] if count else []
    spans = [int(rng.integers(_DURATION[k][0], min(_DURATION[k][1], room) + 1)) for k in kinds]
    # The Poisson draw is capped by what fits; drop from the end until it does.
    while spans and sum(spans) + _GAP * (len(spans) - 1) > room:
        kinds.pop()
        spans.pop()
    if not spans:
        return []
    slack = room - sum(spans) - _GAP * (len(spans) - 1)
    # Stars and bars: sorted offsets share the slack out among the gaps.
    offsets = np.sort(rng.integers(0, slack + 1, len(spans)))
    out, used = [], 0
    for kind, span, offset in zip(kinds, spans, offsets, strict=True):
        start = spec.warmup + int(offset) + used
        out.append((kind, start, start + span - 1))
        used += span + _GAP
    return out


def iter_rows(data: SynthData) -> Iterator[tuple[str, float, float]]:
    """(stream, ts, value) in time order, all streams' reading i before any reading i + 1."""
    for ts, column in zip(data.timestamps.tolist(), data.values.T.tolist(), strict=True):
        for sid, value in zip(data.stream_ids, column, strict=True):
            yield sid, ts, value


def write_csv(data: SynthData, path: Path) -> None:
    """Header ``timestamp,stream,value``; repr floats, so values read back exactly."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("timestamp,stream,value\n")
        f.writelines(f"{ts!r},{sid},{value!r}\n" for sid, ts, value in iter_rows(data))


def write_jsonl(data: SynthData, path: Path) -> None:
    """One ``{"stream", "ts", "value"}`` object per line, in ``iter_rows`` order."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"stream": sid, "ts": ts, "value": value}) + "\n"
            for sid, ts, value in iter_rows(data)
        )


def write_labels(data: SynthData, spec: SynthSpec, path: Path) -> None:
    """The spec and every anomaly: its altered rows (``start``, ``end``) and the timestamps of
    its event window (``start_ts``, ``end_ts``, see ``Anomaly.window``), which is what
    ``streamwatch evaluate`` counts."""
    ts = data.timestamps
    windows = [a.window(len(ts)) for a in data.anomalies]
    doc: dict[str, Any] = {
        "spec": asdict(spec),
        "anomalies": [
            {**asdict(a), "start_ts": float(ts[lo]), "end_ts": float(ts[hi])}
            for a, (lo, hi) in zip(data.anomalies, windows, strict=True)
        ],
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def read_labels(path: Path) -> tuple[Anomaly, ...]:
    """The anomalies of a file written by ``write_labels``."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for i, a in enumerate(doc["anomalies"]):
        try:
            anomaly = Anomaly(str(a["stream"]), str(a["kind"]), int(a["start"]), int(a["end"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: anomalies[{i}] is malformed: {e!r}") from e
        if anomaly.kind not in KINDS or anomaly.start > anomaly.end:
            raise ValueError(f"{path}: anomalies[{i}] is invalid: {anomaly}")
        out.append(anomaly)
    return tuple(out)

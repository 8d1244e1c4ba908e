"""Run the daemon's engine over a file, in order: the offline twin of ``streamwatch run``.

The very Engine the daemon uses scores each row, causally: a row's verdict depends only on
its stream's earlier rows.  ``prime`` rows (e.g. the history a model was trained on) pass
through first, so that streams start the scored part warmed up, as a long-running daemon's
streams would be.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamwatch.data import Rows
from streamwatch.engine import Engine, Verdicts

# With several targets, value, prediction and scale hold one number per target, joined by ';'.
COLUMNS = ("index", "timestamp", "stream", "value", "prediction", "scale", "score", "anomaly")


def replay(engine: Engine, rows: Rows, batch_size: int = 1024) -> Verdicts:
    """Verdicts for ``rows``, fed to the engine in consecutive batches of ``batch_size``."""
    n = len(rows)
    parts: list[Verdicts] = []
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        cov = rows.covariates[sl] if rows.covariates is not None else None
        now = float(rows.timestamps[sl].max()) if sl.stop > sl.start else 0.0
        parts.append(
            engine.process(
                rows.streams[sl],
                rows.values[sl],
                now,
                covariates=cov,
                timestamps=rows.timestamps[sl],
            )
        )
    if not parts:
        empty = np.empty(0)
        return Verdicts(empty, empty, empty, np.empty(0, bool), np.empty(0, bool))
    return Verdicts(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in Verdicts.__dataclass_fields__)
    )


def write_scores(path: Path | str, rows: Rows, verdicts: Verdicts) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        values = rows.values.reshape(len(rows), -1)
        for i in range(len(rows)):
            w.writerow(
                (
                    i,
                    repr(float(rows.timestamps[i])),
                    rows.streams[i],
                    _cell(values[i]),
                    _cell(verdicts.prediction[i]),
                    _cell(verdicts.scale[i]),
                    f"{verdicts.score[i]:.6f}",
                    int(verdicts.anomaly[i]),
                )
            )


def _cell(values: np.ndarray) -> str:
    """One number, or the targets of a multivariate model joined by ';'."""
    return ";".join(repr(float(v)) for v in np.atleast_1d(values))


@dataclass(frozen=True)
class Scores:
    """A scores file read back; prediction and scale are the first target's (NaN where the
    stream had no forecast yet)."""

    rows: Rows
    score: np.ndarray
    anomaly: np.ndarray
    prediction: np.ndarray
    scale: np.ndarray


def read_scores(path: Path | str) -> Scores:
    """What ``write_scores`` wrote."""
    streams: list[str] = []
    ts, values, scores, flags, predictions, scales = [], [], [], [], [], []
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: not a scores file (missing columns {sorted(missing)})")
        for row in reader:
            streams.append(row["stream"])
            ts.append(float(row["timestamp"]))
            values.append(float(row["value"].split(";", 1)[0]))  # the first target
            predictions.append(float(row["prediction"].split(";", 1)[0]))
            scales.append(float(row["scale"].split(";", 1)[0]))
            scores.append(float(row["score"]))
            flags.append(row["anomaly"] == "1")
    rows = Rows(streams, np.asarray(ts), np.asarray(values))
    return Scores(
        rows,
        np.asarray(scores),
        np.asarray(flags, bool),
        np.asarray(predictions),
        np.asarray(scales),
    )


def forecast_columns(
    rows: Rows, prediction: np.ndarray, scale: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per stream, in time order: (values, predictions, scales, timestamps) of the first
    target, what ``forecast.skill_report`` takes."""
    values = rows.values.reshape(len(rows), -1)[:, 0]
    prediction = prediction.reshape(len(rows), -1)[:, 0]
    scale = scale.reshape(len(rows), -1)[:, 0]
    return {
        name: (values[idx], prediction[idx], scale[idx], rows.timestamps[idx])
        for name, idx in rows.by_stream().items()
    }

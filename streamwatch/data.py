"""Reading files of readings, for training and replay: rows in file order, or series per stream.

Formats, chosen by suffix:

- ``.csv`` with a header: a timestamp column (``timestamp``, ``ts`` or ``time``; epoch seconds
  or ISO 8601), an optional ``stream`` column and one or more value columns.  With several
  value columns each becomes its own stream, named ``<stream>/<column>``.  Without a stream
  column the file stem is the stream; without a timestamp column the row number is the time.
- ``.jsonl`` / ``.json``: one message per line, in the same shape the daemon consumes.
- ``.npy``: a (rows, features) array; ``target`` picks the column, or a list of columns for
  a multivariate model; the file stem is the stream and the row number the time.  With
  ``covariates=True`` the other columns come along as covariates (known at each step, as the
  command columns of the MSL telemetry).
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from streamwatch.codec import MessageFormat
from streamwatch.errors import DecodeError

TIMESTAMP_COLUMNS = ("timestamp", "ts", "time")


class DataError(ValueError):
    """A data file cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Rows:
    """Readings in file order: row i is (streams[i], timestamps[i], values[i])."""

    streams: list[str]
    timestamps: np.ndarray  # float64 epoch seconds (or row numbers)
    values: np.ndarray  # float64, (rows,) or (rows, targets)
    covariates: np.ndarray | None = None  # (rows, k) float64 when read with covariates

    def __len__(self) -> int:
        return len(self.streams)

    def by_stream(self) -> dict[str, np.ndarray]:
        """Stream -> its row indices, in order; streams in order of first appearance (one
        pass, however many streams)."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, stream in enumerate(self.streams):
            groups[stream].append(i)
        return {s: np.asarray(ix, np.int64) for s, ix in groups.items()}


def read_rows(
    paths: Iterable[Path | str], target: int | Sequence[int] = 0, covariates: bool = False
) -> Rows:
    targets = [target] if isinstance(target, int) else list(target)
    if not targets or len(set(targets)) != len(targets):
        raise DataError(f"target columns {targets} must be distinct and at least one")
    streams: list[str] = []
    stamps: list[float] = []
    values: list[float] = []
    covs: list[np.ndarray] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if (covariates or len(targets) > 1) and suffix != ".npy":
            raise DataError(f"{path}: covariates and several targets come from .npy files only")
        if suffix == ".csv":
            _read_csv(path, streams, stamps, values)
        elif suffix in (".jsonl", ".json"):
            _read_jsonl(path, streams, stamps, values)
        elif suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 1:
                arr = arr[:, None]
            if arr.ndim != 2 or not all(0 <= t < arr.shape[1] for t in targets):
                raise DataError(f"{path}: shape {arr.shape} has no target column(s) {targets}")
            streams.extend([path.stem] * len(arr))
            stamps.extend(range(len(arr)))
            values.extend(arr[:, targets].astype(np.float64).tolist())
            if covariates:
                covs.append(np.delete(arr, targets, axis=1).astype(np.float64))
        else:
            raise DataError(f"{path}: unknown format {suffix!r} (use .csv, .jsonl or .npy)")
    cov = None
    if covariates:
        widths = {c.shape[1] for c in covs}
        if len(widths) > 1:
            raise DataError(f".npy files disagree on their number of columns: {sorted(widths)}")
        cov = np.concatenate(covs) if covs else np.zeros((0, 0))
    vals = np.asarray(values, np.float64)
    if isinstance(target, int):
        vals = vals.reshape(-1)  # CSV and JSON rows append scalars; .npy rows lists of one
    rows = Rows(streams, np.asarray(stamps, np.float64), vals, cov)
    bad = ~np.isfinite(rows.values.reshape(len(rows), -1)).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"stream {rows.streams[i]!r}: non-finite value at row {i}")
    return rows


def load_series(
    paths: Iterable[Path | str], target: int | Sequence[int] = 0, covariates: bool = False
) -> dict[str, np.ndarray]:
    """Stream -> (time,) readings, or (time, targets + covariates) with several targets or
    with ``covariates``: target columns first."""
    rows = read_rows(paths, target, covariates)
    out = {}
    for stream, idx in rows.by_stream().items():
        values = rows.values[idx]
        if rows.covariates is not None:
            values = np.column_stack([values, rows.covariates[idx]])
        out[stream] = values
    return out


def _timestamp(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"{where}: bad timestamp {text!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.timestamp()


def _read_csv(path: Path, streams: list[str], stamps: list[float], values: list[float]) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty file") from None
        stream_col = header.index("stream") if "stream" in header else None
        ts_cols = [i for i, h in enumerate(header) if h.lower() in TIMESTAMP_COLUMNS]
        ts_col = ts_cols[0] if ts_cols else None
        value_cols = [i for i in range(len(header)) if i != stream_col and i not in ts_cols]
        if not value_cols:
            raise DataError(f"{path}: no value column in header {header}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            where = f"{path}:{lineno}"
            try:
                base = row[stream_col] if stream_col is not None else path.stem
                ts = _timestamp(row[ts_col], where) if ts_col is not None else float(lineno - 2)
                for i in value_cols:
                    streams.append(base if len(value_cols) == 1 else f"{base}/{header[i]}")
                    stamps.append(ts)
                    values.append(float(row[i]))
            except (ValueError, IndexError) as exc:
                if isinstance(exc, DataError):
                    raise
                raise DataError(f"{where}: bad or missing value") from None


def _read_jsonl(path: Path, streams: list[str], stamps: list[float], values: list[float]) -> None:
    fmt = MessageFormat()
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                stream, ts, (value,), _ = fmt.decode(line.strip(), None, float(lineno))
            except DecodeError as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None
            streams.append(stream)
            stamps.append(ts)
            values.append(value)


def summary(series: dict[str, np.ndarray]) -> dict[str, object]:
    """What a model artifact records about its training data, with a content hash."""
    digest = hashlib.sha256()
    for name in sorted(series):
        digest.update(name.encode() + b"\0")
        digest.update(np.ascontiguousarray(series[name], dtype="<f8").tobytes())
    lengths = [len(v) for v in series.values()]
    return {
        "streams": len(series),
        "readings": int(sum(lengths)),
        "min_length": int(min(lengths)) if lengths else 0,
        "max_length": int(max(lengths)) if lengths else 0,
        "sha256": digest.hexdigest(),
    }

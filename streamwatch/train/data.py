"""Training data: files -> one float64 series per stream, in file order.

Formats, chosen by suffix:

- ``.csv`` with a header: a timestamp column (``timestamp``, ``ts`` or ``time``), an optional
  ``stream`` column and one or more value columns.  With several value columns each becomes its
  own stream, named ``<stream>/<column>``.  Without a stream column the file stem is the stream.
- ``.jsonl`` / ``.json``: one message per line, in the same shape the daemon consumes.
- ``.npy``: a (rows, features) array; ``target`` picks the column; the file stem is the stream.
  With ``covariates=True`` the other columns come along as covariates (known at each step,
  as the command columns of the MSL telemetry), giving (rows, 1 + covariates) series.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from streamwatch.codec import MessageFormat
from streamwatch.errors import DecodeError

TIMESTAMP_COLUMNS = ("timestamp", "ts", "time")


class DataError(ValueError):
    """A training file cannot be read; the message names the file and line."""


def load_series(
    paths: Iterable[Path | str], target: int = 0, covariates: bool = False
) -> dict[str, np.ndarray]:
    """Stream -> (time,) readings, or (time, 1 + covariates) with ``covariates``."""
    series: dict[str, list[float]] = defaultdict(list)
    arrays: dict[str, list[np.ndarray]] = defaultdict(list)
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            _read_csv(path, series)
        elif suffix in (".jsonl", ".json"):
            _read_jsonl(path, series)
        elif suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 1:
                arr = arr[:, None]
            if arr.ndim != 2 or not 0 <= target < arr.shape[1]:
                raise DataError(f"{path}: shape {arr.shape} has no target column {target}")
            order = [target] + [c for c in range(arr.shape[1]) if c != target]
            cols = order if covariates else [target]
            arrays[path.stem].append(arr[:, cols].astype(np.float64))
        else:
            raise DataError(f"{path}: unknown format {suffix!r} (use .csv, .jsonl or .npy)")
    if covariates and series:
        raise DataError("covariates come from .npy files only; CSV and JSON lines are univariate")
    out = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
    for k, parts in arrays.items():
        if k in out:
            raise DataError(f"stream {k!r} appears in both .npy and other files")
        widths = {p.shape[1] for p in parts}
        if len(widths) != 1:
            raise DataError(f"stream {k!r}: .npy files disagree on columns {sorted(widths)}")
        joined = np.concatenate(parts)
        out[k] = joined if covariates else joined[:, 0]
    for name, values in out.items():
        if not np.all(np.isfinite(values)):
            raise DataError(f"stream {name!r}: non-finite values in training data")
    return out


def _read_csv(path: Path, series: dict[str, list[float]]) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty file") from None
        stream_col = header.index("stream") if "stream" in header else None
        skip = {stream_col} | {i for i, h in enumerate(header) if h.lower() in TIMESTAMP_COLUMNS}
        value_cols = [i for i in range(len(header)) if i not in skip]
        if not value_cols:
            raise DataError(f"{path}: no value column in header {header}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            base = row[stream_col] if stream_col is not None else path.stem
            for i in value_cols:
                name = base if len(value_cols) == 1 else f"{base}/{header[i]}"
                try:
                    series[name].append(float(row[i]))
                except (ValueError, IndexError):
                    raise DataError(f"{path}:{lineno}: bad value in column {header[i]!r}") from None


def _read_jsonl(path: Path, series: dict[str, list[float]]) -> None:
    fmt = MessageFormat()
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                stream, _ts, value = fmt.decode(line.strip(), key=None, record_ts=0.0)
            except DecodeError as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None
            series[stream].append(value)


def summary(series: dict[str, np.ndarray]) -> dict[str, object]:
    """What the artifact records about its training data, with a content hash."""
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

"""Reading anomaly labels as inclusive row spans per stream, in two layouts.

- The MSL layout: a CSV with ``chan_id`` and ``anomaly_sequences`` (``[[start, end], ...]``
  row indices into that channel's rows).
- JSON windows: ``{"anomalies": [{"stream": ..., "start_ts": ..., "end_ts": ...}, ...]}``
  (or the bare list) with inclusive timestamp bounds, mapped onto the rows of each stream;
  entries may give ``start`` and ``end`` row indices instead.  ``streamwatch generate
  --labels`` writes this layout.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from streamwatch.data import Rows
from streamwatch.evaluate import Span


class LabelError(ValueError):
    """A labels file cannot be read; the message names the file and entry."""


def read_labels(path: Path | str, rows: Rows) -> dict[str, list[Span]]:
    """Stream -> spans of row indices within that stream's rows (in file order)."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: no such file")
    stamps = _stream_timestamps(rows)
    if path.suffix.lower() == ".csv":
        return _read_msl(path, stamps)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelError(f"{path}: not valid JSON ({exc})") from None
    entries = data.get("anomalies") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise LabelError(f"{path}: expected a list of anomalies")
    out: dict[str, list[Span]] = {name: [] for name in stamps}
    for i, e in enumerate(entries):
        where = f"{path}: anomalies[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("stream"), str):
            raise LabelError(f"{where}: needs a 'stream'")
        ts = stamps.get(e["stream"])
        if ts is None:
            continue  # a labelled stream that is not in the scores: nothing to count
        if "start_ts" in e and "end_ts" in e:
            lo = int(np.searchsorted(ts, float(e["start_ts"]), side="left"))
            hi = int(np.searchsorted(ts, float(e["end_ts"]), side="right")) - 1
        elif "start" in e and "end" in e:
            lo, hi = int(e["start"]), min(int(e["end"]), len(ts) - 1)
        else:
            raise LabelError(f"{where}: needs start_ts and end_ts, or start and end")
        if lo <= hi:
            out[e["stream"]].append((lo, hi))
    return {k: sorted(v) for k, v in out.items()}


def _stream_timestamps(rows: Rows) -> dict[str, np.ndarray]:
    return {s: rows.timestamps[ix] for s, ix in rows.by_stream().items()}


def _read_msl(path: Path, stamps: dict[str, np.ndarray]) -> dict[str, list[Span]]:
    """A channel's labels go to the stream of that name, or to ``<chan_id>_test``: the name
    ``replay`` gives the rows of ``<chan_id>_test.npy``, the dataset's own file name."""
    out: dict[str, list[Span]] = {name: [] for name in stamps}
    matched = False
    with path.open(newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.DictReader(f), start=2):
            try:
                chan, seqs = row["chan_id"], json.loads(row["anomaly_sequences"])
            except (KeyError, json.JSONDecodeError):
                raise LabelError(f"{path}:{lineno}: needs chan_id and anomaly_sequences") from None
            for stream in (chan, f"{chan}_test"):
                if stream in out:
                    matched = True
                    n = len(stamps[stream])
                    out[stream] = sorted((int(a), min(int(b), n - 1)) for a, b in seqs if a < n)
    if not matched and out:
        seen = ", ".join(sorted(out)[:5]) + (", ..." if len(out) > 5 else "")
        raise LabelError(
            f"{path}: no chan_id names a stream in the scores ({seen}); streams match a "
            "chan_id C-1 when named C-1 or C-1_test"
        )
    return out

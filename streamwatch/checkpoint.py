"""Per-stream state across restarts: a snapshot written at a clean shutdown, read at start.

Without it every restart (a deploy, a node drain) starts every stream afresh: an empty LSTM
state and ``scoring.warmup`` readings without a verdict.  The snapshot holds the state store's
rows, the model it was written for, and for each partition the offset of the first record its
streams have *not* seen.  The daemon restores only into that model, and keeps a partition's
streams only when the partition's first record after the restart is exactly that offset: then
the state continues where the readings do.  Anything else (the final commit failed, another
replica processed the partition meanwhile, the offsets were reset or expired) means readings
the state has not seen, or has seen twice, so those streams start afresh as before.

The file is an uncompressed ``.npz`` (no pickles), written beside its final name and renamed
into place, so a crash mid-write leaves the previous snapshot whole.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamwatch.errors import StreamwatchError
from streamwatch.model.artifact import ModelSpec
from streamwatch.sources import Offsets, Partition
from streamwatch.state import StateStore

FORMAT = 1


class CheckpointError(StreamwatchError):
    """A snapshot that cannot be used; the message says why."""


@dataclass(frozen=True)
class Snapshot:
    rows: dict[str, np.ndarray]
    model: dict[str, object]
    # partition -> (the owner id its streams carry in ``rows["owner"]``, next offset)
    partitions: dict[Partition, tuple[int, int]]


def model_identity(spec: ModelSpec) -> dict[str, object]:
    """What a snapshot must match to be restored: the very model that wrote it."""
    return {
        "name": spec.name,
        "version": spec.version,
        "state_layout": spec.state_layout,
        "layers": spec.layers,
        "hidden_size": spec.hidden_size,
        "features": list(spec.features),
        "targets": list(spec.targets),
    }


def write(
    path: Path | str,
    store: StateStore,
    spec: ModelSpec,
    owners: dict[Partition, int],
    offsets: Offsets,
) -> int:
    """Write the streams of the partitions in ``offsets`` (partition -> the next offset their
    streams have not seen; ``owners``: partition -> owner id in the store).  Returns how many
    streams went in."""
    path = Path(path)
    ids = {p: owners[p] for p in offsets if p in owners}
    rows = store.export(owners=ids.values())
    meta = {
        "format": FORMAT,
        "model": model_identity(spec),
        "partitions": [[t, p, ids[(t, p)], offsets[(t, p)]] for (t, p) in sorted(ids)],
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            arrays: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
            arrays.update(rows)
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep half a snapshot about
        raise
    return len(rows["key"])


def read(path: Path | str) -> Snapshot:
    """Read a snapshot; ``CheckpointError`` names the file and what is wrong with it."""
    try:
        # our own handle: np.load leaves its own open when the file is not a zip
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: snapshot format {meta.get('format')!r}, not {FORMAT}")
        partitions = {
            (str(t), int(p)): (int(owner), int(offset))
            for t, p, owner, offset in meta["partitions"]
        }
        return Snapshot(arrays, dict(meta["model"]), partitions)
    except (CheckpointError, FileNotFoundError):
        raise  # no file: the first start, not damage
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable state snapshot: {exc}") from exc

"""A model's scoring prior, measured by replaying its training series (pure, no I/O).

A new stream's scoring statistics would otherwise start from nothing and need hundreds of
readings (``scoring.warmup``) before its usual misfit is known.  Here each training series
is replayed through the daemon's own engine, its statistics are started afresh where the
training's validation split begins (readings the model did not learn from), and the
statistics they reach by the series' end become the prior (``scoring.Prior``): the median
over series.  Training stores it in ``model.json``
(``calibration.scoring_prior``), and the engine starts each new stream from it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from streamwatch.data import Rows
from streamwatch.engine import Engine, StepModel
from streamwatch.replay import replay
from streamwatch.scoring import Prior, Scorer
from streamwatch.state import StateStore

MAX_STREAMS = 256  # series replayed at most (evenly spread over the sorted names)


def _rows(series: dict[str, np.ndarray], names: list[str], part: str, cut: dict[str, int]) -> Rows:
    """Readings of ``names`` before (``part`` "head") or from (``part`` "tail") each one's
    cut, interleaved by time step so that each engine call steps many streams at once."""
    chunks = []
    for name in names:
        x = np.asarray(series[name], np.float64)
        x = x.reshape(len(x), -1)
        t = np.arange(len(x), dtype=np.float64)
        sl = slice(0, cut[name]) if part == "head" else slice(cut[name], len(x))
        chunks.append((name, t[sl], x[sl]))
    ts = np.concatenate([c[1] for c in chunks])
    order = np.argsort(ts, kind="stable")
    streams = np.array([c[0] for c in chunks for _ in range(len(c[1]))], dtype=object)[order]
    x = np.concatenate([c[2] for c in chunks])[order]
    return Rows(streams.tolist(), ts[order], x[:, 0], x[:, 1:] if x.shape[1] > 1 else None)


def scoring_prior(
    model: StepModel,
    series: dict[str, np.ndarray],
    val_fraction: float,
    scorer: Scorer | None = None,
    n_targets: int = 1,
) -> Prior:
    """Replay ``series`` (as training took them) through ``model`` and return the prior its
    streams' scoring statistics give over their last ``val_fraction``."""
    if n_targets != 1:
        # several targets: the engine takes values (n, targets); Rows carries one column
        raise NotImplementedError("a scoring prior for several targets")
    scorer = scorer or Scorer()
    # nothing is flagged, so every miss is learned, as the statistics of a normal stream are
    quiet = replace(scorer, warmup=2**62, hold=0, envelope=None, window=None)
    names = sorted(series)
    if len(names) > MAX_STREAMS:
        names = [names[i] for i in np.linspace(0, len(names) - 1, MAX_STREAMS).astype(int)]
    cut = {n: int(np.floor(len(series[n]) * (1.0 - val_fraction))) for n in names}
    store = StateStore(model.spec.state_size, n_targets=n_targets)
    engine = Engine(model, store, quiet)
    engine.prior = None  # measured from nothing: not from an older prior
    replay(engine, _rows(series, names, "head", cut))
    store.scores[:] = 0.0  # the statistics start where the held-out readings do
    tail = _rows(series, names, "tail", cut)
    replay(engine, tail)
    stats = [store.scores[store.slot(name)] for name in tail.by_stream() if name in store]
    return Prior.from_streams(np.array(stats, np.float64), scorer.short_alpha)

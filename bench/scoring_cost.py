#!/usr/bin/env python3
"""Cost of the scoring step per reading beside the model step, at batch 256.

    .venv/bin/python bench/scoring_cost.py [--batch 256] [--hidden 64] [--window 2100]

Times, one thread: the ONNX Runtime step of an LSTM 1 x hidden for a batch; the scorer's
update (all tests, statistics folded in) for the same batch; and the engine's whole wave
(gather, normalise, step, score, scatter), in microseconds per reading, its streams past warm-up
(and past their first window).  With ``--window``, the scorer runs the window test too
(``scoring.window``), timed apart as well over windows of heavy-tailed smoothed misses: a stream's
threshold is chosen anew every 10 of its readings, a tenth of the batch at each call.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from streamwatch.engine import Engine
from streamwatch.model.artifact import ModelSpec, sha256_bytes
from streamwatch.model.runtime import OnnxForecaster
from streamwatch.normalize import Normalizer
from streamwatch.scoring import _WINDOW_SPAN, Scorer
from streamwatch.state import StateStore
from streamwatch.train.export import export_onnx
from streamwatch.train.module import Forecaster


def per_reading(fn, rows: int, seconds: float = 2.0) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n / rows * 1e6


def misses(rng: np.random.Generator, rows: int, width: int) -> np.ndarray:
    """Windows like the daemon's: heavy-tailed misses smoothed as the window test smooths
    them, with a burst in every third row (what the threshold is there to cut off)."""
    raw = np.abs(rng.standard_t(3, (rows, width + 500)))
    a = 2.0 / (_WINDOW_SPAN + 1.0)
    smooth = np.empty_like(raw)
    smooth[:, 0] = raw[:, 0]
    for i in range(1, raw.shape[1]):
        smooth[:, i] = smooth[:, i - 1] + a * (raw[:, i] - smooth[:, i - 1])
    win = smooth[:, 500:]
    for r in range(0, rows, 3):
        length = int(rng.integers(3, width // 10))
        start = int(rng.integers(0, width - length))
        win[r, start : start + length] += rng.uniform(0.5, 5.0)
    return win.astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--window", type=int, default=None, help="scoring.window (default off)")
    args = p.parse_args()
    torch.manual_seed(0)
    data = export_onnx(Forecaster(1, 1, args.hidden, 1).eval())
    spec = ModelSpec(
        "b", "1", ("value",), ("value",), 1, args.hidden, Normalizer(), sha256_bytes(data)
    )
    model = OnnxForecaster(spec, data, threads=1)
    rng = np.random.default_rng(0)
    b = args.batch
    x = rng.standard_normal((b, 1)).astype(np.float32)
    state = rng.standard_normal((b, spec.state_size)).astype(np.float32)
    scorer = Scorer(window=args.window)
    stats = scorer.new_stats(b)
    stats[:, 0] = 1000  # past warm-up
    errors = np.abs(rng.standard_normal(b))
    engine = Engine(model, StateStore.for_model(spec), scorer)
    ids = [f"s{i}" for i in range(b)]
    # noisy readings, so that the misses vary; the streams are taken past warm-up and past
    # their first window before the engine is timed (a filling ring is not the steady state)
    values = itertools.cycle(rng.normal(100, 5, (97, b)))
    for _ in range(max(scorer.warmup, (args.window or 0) + 200)):
        engine.process(ids, next(values), 0.0)
    model_us = per_reading(lambda: model.step(x, state), b)
    score_us = per_reading(lambda: scorer.update(stats, errors), b)
    engine_us = per_reading(lambda: engine.process(ids, next(values), 0.0), b)
    waves = []  # one wave at a time: how even the cost is from one batch to the next
    for _ in range(1000):
        start = time.perf_counter()
        engine.process(ids, next(values), 0.0)
        waves.append(time.perf_counter() - start)
    wave_ms = np.percentile(np.array(waves) * 1e3, [50, 99, 100])
    if args.window:
        win = misses(rng, b, args.window)
        wstats = np.zeros((b, 4))
        wstats[:, 0] = 1000  # past warm-up, window full
        at = np.arange(b)  # store rows: their phases make a tenth of the batch choose per call
        window_us = per_reading(lambda: scorer.window_test(win, at, wstats, errors), b)
    print(f"batch {b}, LSTM 1x{args.hidden}, one thread, microseconds per reading:")
    print(f"  model step (onnxruntime)     {model_us:6.3f}")
    print(f"  scoring (all tests, update) {score_us:6.3f}  = {score_us / model_us:.2f} x the model")
    if args.window:
        print(
            f"  window test (apart)          {window_us:6.3f}  (window {args.window}, threshold "
            "every 10 readings)"
        )
    print(
        f"  whole engine wave            {engine_us:6.3f}  (gather, normalise, step, score, "
        "scatter)"
    )
    print(
        f"one wave of {b} streams, ms: median {wave_ms[0]:.3f}  p99 {wave_ms[1]:.3f}  "
        f"max {wave_ms[2]:.3f}"
    )


if __name__ == "__main__":
    main()

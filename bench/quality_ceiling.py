#!/usr/bin/env python3
"""How far thresholds alone can take the scorer on MSL: one threshold in hindsight, and one per
channel in hindsight.

    .venv/bin/python bench/quality_ceiling.py [--work .build/quality] [--hold 100]

Uses the models ``bench/quality_msl.py`` trained (``<work>/msl/<channel>``): replays each
channel's test array once for the forecasts, then runs the scorer over them at each threshold
of a grid (``hold`` 100, as quality_msl), which is what the daemon would flag there.  Neither
figure is one a causal detector can claim, since each picks its thresholds from the labels.
The per-channel one is the ceiling of the scores themselves: what a perfect per-stream
calibration of the threshold would reach.  Per channel, the thresholds maximise
TP - lambda * FP, swept over lambda: the best F1 among the trade-offs the channels offer
together (a lower bound on the exact optimum).
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from streamwatch.data import Rows
from streamwatch.engine import Engine
from streamwatch.evaluate import event_counts
from streamwatch.model import load_model
from streamwatch.replay import replay
from streamwatch.scoring import Scorer
from streamwatch.state import StateStore

MSL = Path(__file__).resolve().parents[1].parent / "shared/datasets/msl"
GRID = np.round(np.arange(0.30, 1.0, 0.02), 2)


def _f1(tp: int, fp: int, labels: int) -> float:
    return 2 * tp / (labels + tp + fp) if tp else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--msl-dir", type=Path, default=MSL)
    p.add_argument("--work", type=Path, default=Path(".build/quality"))
    p.add_argument("--hold", type=int, default=100)
    p.add_argument("--novelty", default="0.13", help="the scorer's novelty gate, or 'off'")
    args = p.parse_args()
    rows = csv.DictReader((args.msl_dir / "labeled_anomalies.csv").open())
    labels = {r["chan_id"]: [tuple(s) for s in json.loads(r["anomaly_sequences"])] for r in rows}
    missing = [c for c in labels if not (args.work / "msl" / c / "model.json").exists()]
    if missing:
        raise SystemExit(
            f"no trained model for {', '.join(missing[:3])}... in {args.work / 'msl'}: "
            "run bench/quality_msl.py first"
        )
    # The model's forecasts once per channel; then the scorer alone, at each threshold of the
    # grid, over all channels side by side (a stream each): what the daemon would flag there.
    novelty = None if args.novelty == "off" else float(args.novelty)
    chans = sorted(labels)
    tests = {c: np.load(args.msl_dir / f"{c}_test.npy") for c in chans}
    lengths = [len(tests[c]) for c in chans]
    length = max(lengths)
    x, mu, sd = (np.full((length, len(chans)), np.nan) for _ in range(3))
    for j, chan in enumerate(chans):
        model = load_model(args.work / "msl" / chan)
        test = tests[chan]
        ts = np.arange(len(test), dtype=np.float64)
        verdicts = replay(
            Engine(model, StateStore(model.spec.state_size), Scorer()),
            Rows([chan] * len(test), ts, test[:, 0], test[:, 1:]),
        )
        x[: len(test), j] = test[:, 0]
        mu[: len(test), j] = verdicts.prediction.reshape(-1)
        sd[: len(test), j] = verdicts.scale.reshape(-1)
    raw = np.abs(x - mu)
    err = raw / sd
    n_labels = sum(len(labels[c]) for c in chans)
    table: dict[str, list[tuple[int, int]]] = {c: [] for c in chans}
    for t in GRID:
        scorer = replace(Scorer(), threshold=float(t), hold=args.hold, novelty=novelty)
        stats = scorer.new_stats(len(chans))
        flags = np.zeros(x.shape, bool)
        for i in range(length):
            flags[i] = scorer.update(stats, err[i], raw[i])[1]
        for j, chan in enumerate(chans):
            c = event_counts(flags[: lengths[j], j], labels[chan])
            table[chan].append((c.tp, c.fp))
    tp_fp = np.array([table[c] for c in sorted(table)])  # (channels, thresholds, 2)
    totals = tp_fp.sum(axis=0)
    f1 = [_f1(int(tp), int(fp), n_labels) for tp, fp in totals]
    k = int(np.argmax(f1))
    print(
        f"scorer {scorer} (threshold swept over {GRID[0]:g}..{GRID[-1]:g}), "
        f"{len(table)} channels, {n_labels} labels"
    )
    print(
        f"one threshold for all, chosen in hindsight: {GRID[k]:.2f}: TP {totals[k][0]}  "
        f"FP {totals[k][1]}  F1 {f1[k]:.3f}"
    )
    for t in (0.5, 0.7):
        j = int(np.argmin(np.abs(GRID - t)))
        print(f"  at {t}: TP {totals[j][0]}  FP {totals[j][1]}  F1 {f1[j]:.3f}")
    best = (0.0, 0, 0, 0.0)
    for lam in np.linspace(0.05, 3.0, 60):
        gain = tp_fp[:, :, 0] - lam * tp_fp[:, :, 1]
        pick = gain.argmax(axis=1)  # first (lowest) threshold among equals
        tp = int(tp_fp[np.arange(len(pick)), pick, 0].sum())
        fp = int(tp_fp[np.arange(len(pick)), pick, 1].sum())
        if _f1(tp, fp, n_labels) > best[0]:
            best = (_f1(tp, fp, n_labels), tp, fp, float(lam))
    print(
        f"one threshold per channel, chosen in hindsight: TP {best[1]}  FP {best[2]}  "
        f"F1 {best[0]:.3f}"
    )


if __name__ == "__main__":
    main()

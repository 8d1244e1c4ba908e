#!/usr/bin/env python3
"""What a shorter warm-up costs: false alarms in a new stream's first readings.

    .venv/bin/python bench/warmup.py [--sets msl-value,synthetic,gutentag] [--work DIR]

Per series, the model ``bench/forecast_skill.py`` trains (cached in ``--work``; trained there
if missing), and the test part replayed causally as a new stream with ``scoring.warmup`` 600
(the default) and 100, everything else at the defaults.  It prints event counts (the MSL
README's rule), F1, rows flagged, and the false runs that begin in a stream's first 600
readings: the ones a short warm-up adds.

A scoring prior measured at training (commit 33b9e61, reverted) did not remove them: the
novelty gate flags a miss that beats the stream's largest so far, and among n exchangeable
normal misses the n-th is the largest with probability 1/n, so readings 100 to 600 hold
about ln(600 / 100) = 1.8 new records per stream that warm-up 600 absorbs silently.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from forecast_skill import _model
from quality_msl import MSL, _rows

from streamwatch import synth
from streamwatch.data import Rows
from streamwatch.engine import Engine
from streamwatch.evaluate import EventCounts, RowCounts, event_counts, row_counts, runs
from streamwatch.replay import replay
from streamwatch.scoring import Scorer
from streamwatch.state import StateStore
from streamwatch.train.fit import TrainConfig

WARMUPS = (600, 100)
EARLY = 600


class Tally:
    def __init__(self) -> None:
        self.events, self.rows, self.early_fp = EventCounts(), RowCounts(), 0

    def add(self, flags: np.ndarray, spans: list[tuple[int, int]]) -> None:
        self.events = self.events + event_counts(flags, spans)
        self.rows = self.rows + row_counts(flags, spans)
        labelled = np.zeros(len(flags), bool)
        for s, e in spans:
            labelled[s : e + 1] = True
        self.early_fp += sum(
            1 for s, e in runs(flags) if s < EARLY and not labelled[s : e + 1].any()
        )

    def line(self) -> str:
        c = self.events
        return (
            f"TP {c.tp:>3} FP {c.fp:>3} FN {c.fn:>3}  F1 {c.f1:.3f}  P {c.precision:.3f}  "
            f"R {c.recall:.3f}  rows flagged {self.rows.flagged_fraction:.2%}  "
            f"false runs starting before reading {EARLY}: {self.early_fp}"
        )


def _judge(model, cases, tallies: dict[int, Tally]) -> None:
    """Replay each (rows, spans by stream) case under every warm-up."""
    for warmup in tallies:
        engine = Engine(model, StateStore(model.spec.state_size), replace(Scorer(), warmup=warmup))
        for rows, spans in cases:
            verdicts = replay(engine, rows)
            for stream, at in rows.by_stream().items():
                tallies[warmup].add(verdicts.anomaly[at], spans[stream])


def msl(args: argparse.Namespace, cfg: TrainConfig, tallies: dict[int, Tally]) -> None:
    import json

    for r in sorted(
        csv.DictReader((args.msl_dir / "labeled_anomalies.csv").open()), key=lambda r: r["chan_id"]
    ):
        chan = r["chan_id"]
        train = np.load(args.msl_dir / f"{chan}_train.npy")[:, :1]
        test = np.load(args.msl_dir / f"{chan}_test.npy")[:, :1]
        model = _model(
            args.work / "msl-value" / chan, {chan: train}, cfg, False, feature_names=("value",)
        )
        spans = {chan: [tuple(s) for s in json.loads(r["anomaly_sequences"])]}
        _judge(model, [(_rows(chan, test, start=len(train)), spans)], tallies)


def synthetic(args: argparse.Namespace, cfg: TrainConfig, tallies: dict[int, Tally]) -> None:
    half = 4032
    whole = synth.generate(
        synth.SynthSpec(
            n_streams=100, length=2 * half, anomalies_per_stream=2, warmup=half + 600, seed=21
        )
    )
    series = {s: v[:half] for s, v in zip(whole.stream_ids, whole.values, strict=True)}
    model = _model(args.work / "synthetic", series, cfg, False)
    values = whole.values[:, half:]
    n, t = values.shape
    rows = Rows(
        [s for _ in range(t) for s in whole.stream_ids],
        np.repeat(whole.timestamps[half:], n),
        values.T.reshape(-1),
    )
    # as bench/quality_msl.py counts them: each anomaly's window (its altered readings and the
    # return to normal after them)
    spans: dict[str, list[tuple[int, int]]] = {s: [] for s in whole.stream_ids}
    for a in whole.anomalies:
        spans[a.stream].append(
            synth.Anomaly(a.stream, a.kind, a.start - half, a.end - half).window(t)
        )
    _judge(model, [(rows, spans)], tallies)


def gutentag(args: argparse.Namespace, cfg: TrainConfig, tallies: dict[int, Tally]) -> None:
    for path in args.gutentag:
        suite = np.load(path)
        for name in sorted({k.split("|")[0] for k in suite.files}):
            train, test = suite[f"{name}|train"], suite[f"{name}|test"]
            model = _model(args.gutentag_work / path.stem / name, {name: train}, cfg, False)
            spans = {name: runs(suite[f"{name}|label"].astype(bool))}
            rows = _rows(name, test[:, None], start=len(train))
            _judge(model, [(rows, spans)], tallies)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="msl-value,synthetic,gutentag")
    p.add_argument("--msl-dir", type=Path, default=MSL)
    p.add_argument("--work", type=Path, default=Path(".build/forecast"))
    p.add_argument("--gutentag-work", type=Path, default=Path(".build/forecast/gutentag"))
    p.add_argument(
        "--gutentag",
        type=Path,
        nargs="+",
        default=[Path(".build/gutentag/suite-seed7.npz"), Path(".build/gutentag/suite-seed8.npz")],
    )
    p.add_argument("--warmups", default=",".join(map(str, WARMUPS)), help="e.g. 600 alone")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = TrainConfig(hidden_size=64, epochs=80, patience=10, seed=0, device="cpu")
    for name in args.sets.split(","):
        started = time.perf_counter()
        tallies = {int(w): Tally() for w in args.warmups.split(",")}
        {"msl-value": msl, "synthetic": synthetic, "gutentag": gutentag}[name](args, cfg, tallies)
        seconds = time.perf_counter() - started
        for warmup, tally in tallies.items():
            print(f"{name:<10} warm-up {warmup:<4} {tally.line()}", flush=True)
        print(f"({name}: {seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

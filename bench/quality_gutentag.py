#!/usr/bin/env python3
"""Detection quality on a held-out GutenTAG suite (``bench/gutentag_suite.py``).

    make gutentag-suite
    .venv/bin/python bench/quality_gutentag.py [--thresholds 0.5,0.7] [--window 2100]
        [--envelope 0.05]

MSL is the development set and streamwatch's own generator was written beside the scorer; this
suite is neither.  Per series, as for an MSL channel: train a model on the anomaly-free
recording (models are kept in ``--work`` and reused, ``--retrain`` to fit them anew), replay
the test recording causally as a new stream with the daemon's engine, and count events with
the MSL rule (a labelled anomaly is found if a flagged run overlaps it; a flagged run that
overlaps none is a false alarm).  Prints per series, per anomaly kind and per base oscillation,
and the totals with the share of rows flagged.  One configuration for all series.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from quality_msl import _rows

from streamwatch.engine import Engine
from streamwatch.evaluate import EventCounts, RowCounts, event_counts, row_counts, runs
from streamwatch.model import load_model
from streamwatch.replay import replay
from streamwatch.scoring import Scorer
from streamwatch.state import StateStore
from streamwatch.train.fit import TrainConfig, train_artifact


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", type=Path, default=Path(".build/gutentag/suite-seed7.npz"))
    p.add_argument("--work", type=Path, default=None, help="models (default beside the suite)")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--thresholds", default="0.5,0.7")
    p.add_argument("--hold", type=int, default=100)
    p.add_argument("--novelty", default="0.13")
    p.add_argument("--envelope", default="off")
    p.add_argument("--window", default="off")
    p.add_argument("--json", type=Path, help="write the figures as JSON")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.suite.exists():
        raise SystemExit(f"{args.suite}: no suite; make gutentag-suite writes it")
    suite = np.load(args.suite)
    names = sorted({k.split("|")[0] for k in suite.files})
    work = args.work or args.suite.with_suffix("")
    cfg = TrainConfig(
        hidden_size=64, layers=1, epochs=args.epochs, patience=10, seed=0, device="cpu"
    )
    scorers = [
        Scorer(
            threshold=float(t),
            hold=args.hold,
            novelty=None if args.novelty == "off" else float(args.novelty),
            envelope=None if args.envelope == "off" else float(args.envelope),
            window=None if args.window == "off" else int(args.window),
        )
        for t in args.thresholds.split(",")
    ]
    print(f"suite {args.suite} ({len(names)} series); LSTM 1x64; scorer {scorers[0]}")
    totals = [EventCounts() for _ in scorers]
    rows = [RowCounts() for _ in scorers]
    by_kind = [defaultdict(EventCounts) for _ in scorers]
    by_base = [defaultdict(EventCounts) for _ in scorers]
    heads = " ".join(f"{'tp/fp/fn@' + format(s.threshold, 'g'):>14}" for s in scorers)
    print(f"{'series':<22} {heads} {'seconds':>7}")
    started = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        train, test = suite[f"{name}|train"], suite[f"{name}|test"]
        spans = runs(suite[f"{name}|label"].astype(bool))
        out = work / name
        if args.retrain or not (out / "model.json").exists():
            train_artifact({name: train}, cfg, out)
        model = load_model(out)
        base, kind = name.split("-", 1)
        cells = []
        for k, scorer in enumerate(scorers):
            engine = Engine(model, StateStore(model.spec.state_size), scorer)
            verdicts = replay(engine, _rows(name, test[:, None], start=len(train)))
            c = event_counts(verdicts.anomaly, spans)
            totals[k] = totals[k] + c
            rows[k] = rows[k] + row_counts(verdicts.anomaly, spans)
            by_kind[k][kind] = by_kind[k][kind] + c
            by_base[k][base] = by_base[k][base] + c
            cells.append(f"{f'{c.tp}/{c.fp}/{c.fn}':>14}")
        print(f"{name:<22} {' '.join(cells)} {time.perf_counter() - t0:>7.1f}", flush=True)
    figures = {}
    for k, scorer in enumerate(scorers):
        c, r = totals[k], rows[k]
        print(
            f"GutenTAG total at threshold {scorer.threshold:g}: TP {c.tp}  FP {c.fp}  FN {c.fn}  "
            f"precision {c.precision:.3f}  recall {c.recall:.3f}  F1 {c.f1:.3f}; rows flagged "
            f"{r.flagged_fraction:.1%} (labelled {r.labelled / r.rows:.1%})"
        )
        for title, groups in (("kind", by_kind[k]), ("base", by_base[k])):
            print(
                f"  by {title} (found/labelled, false alarms): "
                + ", ".join(
                    f"{g} {e.tp}/{e.tp + e.fn} fp {e.fp}" for g, e in sorted(groups.items())
                )
            )
        figures[str(scorer.threshold)] = {
            "tp": c.tp,
            "fp": c.fp,
            "fn": c.fn,
            "f1": round(c.f1, 4),
            "precision": round(c.precision, 4),
            "recall": round(c.recall, 4),
            "rows_flagged": round(r.flagged_fraction, 4),
        }
    print(f"({time.perf_counter() - started:.0f}s for {len(names)} series, training included)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

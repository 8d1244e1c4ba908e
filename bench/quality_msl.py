#!/usr/bin/env python3
"""Detection quality on NASA MSL (27 channels) and on the synthetic generator's labelled data.

    .venv/bin/python bench/quality_msl.py [--msl-dir ../shared/datasets/msl] [--epochs 80]

MSL, per channel: train a model on ``<channel>_train.npy`` (value plus the 54 command columns
as covariates), replay ``<channel>_test.npy`` row by row with the daemon's engine as a new
stream (``--prime`` replays the train array first; it precedes the test part in time, so that
stays causal), and count events with the rule in the dataset's README; also the share of rows
flagged.  One configuration for all channels.

Synthetic: 100 generated streams, each one recording split in two like MSL's: train on the
first half (free of anomalies), replay the second (labelled anomalies) as new streams, and count
events and NAB scores the same way.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np

from streamwatch import synth
from streamwatch.data import Rows
from streamwatch.engine import Engine
from streamwatch.evaluate import EventCounts, RowCounts, event_counts, report, row_counts
from streamwatch.model import load_model
from streamwatch.replay import replay
from streamwatch.scoring import Scorer
from streamwatch.state import StateStore
from streamwatch.train.fit import TrainConfig, train_artifact

MSL = Path(__file__).resolve().parents[1].parent / "shared/datasets/msl"


def _rows(name: str, arr: np.ndarray, start: int = 0) -> Rows:
    """One row per step; timestamps count steps from ``start``, so a test part that follows
    its train part in time also follows it in timestamps (the engine skips older readings)."""
    ts = np.arange(start, start + len(arr), dtype=np.float64)
    return Rows([name] * len(arr), ts, arr[:, 0], arr[:, 1:])


def msl(args: argparse.Namespace, cfg: TrainConfig, scorers: list[Scorer]) -> dict[str, object]:
    labels = {
        r["chan_id"]: r for r in csv.DictReader((args.msl_dir / "labeled_anomalies.csv").open())
    }
    names = ("value", *(f"cmd_{i}" for i in range(1, 55)))
    totals = [EventCounts() for _ in scorers]
    row_totals = [RowCounts() for _ in scorers]
    heads = " ".join(f"{'tp/fp/fn@' + format(s.threshold, 'g'):>14}" for s in scorers)
    print(
        f"{'channel':<8} {'train':>6} {'test':>6} {'labels':>6} {heads} {'epochs':>6} "
        f"{'seconds':>7}"
    )
    started = time.perf_counter()
    for chan in sorted(labels):
        t0 = time.perf_counter()
        train = np.load(args.msl_dir / f"{chan}_train.npy")
        test = np.load(args.msl_dir / f"{chan}_test.npy")
        if args.value_only:  # the telemetry value alone, no command columns
            train, test = train[:, :1], test[:, :1]
        out = args.work / "msl" / chan
        spec = train_artifact({chan: train}, cfg, out, feature_names=names[: train.shape[1]])
        model = load_model(out)
        spans = [tuple(s) for s in json.loads(labels[chan]["anomaly_sequences"])]
        cells = []
        for k, scorer in enumerate(scorers):
            engine = Engine(model, StateStore(model.spec.state_size), scorer)
            if args.prime:
                replay(engine, _rows(chan, train))
            verdicts = replay(engine, _rows(chan, test, start=len(train)))
            assert not verdicts.skipped.any(), "test rows must not be skipped"
            c = event_counts(verdicts.anomaly, spans)
            totals[k] = totals[k] + c
            row_totals[k] = row_totals[k] + row_counts(verdicts.anomaly, spans)
            cells.append(f"{f'{c.tp}/{c.fp}/{c.fn}':>14}")
        epochs = spec.training["validation"]["epochs_run"]
        print(
            f"{chan:<8} {len(train):>6} {len(test):>6} {len(spans):>6} {' '.join(cells)} "
            f"{epochs:>6} {time.perf_counter() - t0:>7.1f}",
            flush=True,
        )
    seconds = time.perf_counter() - started
    out_figures = {}
    for scorer, total, rows in zip(scorers, totals, row_totals, strict=True):
        print(
            f"MSL total at threshold {scorer.threshold:g}: TP {total.tp}  FP {total.fp}  "
            f"FN {total.fn}  precision {total.precision:.3f}  recall {total.recall:.3f}  "
            f"F1 {total.f1:.3f}; rows flagged {rows.flagged_fraction:.1%} (labelled "
            f"{rows.labelled / rows.rows:.1%}), row precision {rows.precision:.3f} "
            f"recall {rows.recall:.3f}"
        )
        out_figures[str(scorer.threshold)] = {
            "tp": total.tp,
            "fp": total.fp,
            "fn": total.fn,
            "f1": round(total.f1, 4),
            "precision": round(total.precision, 4),
            "recall": round(total.recall, 4),
            "rows_flagged": round(rows.flagged_fraction, 4),
            "row_precision": round(rows.precision, 4),
            "row_recall": round(rows.recall, 4),
        }
    print(f"({seconds:.0f}s for 27 channels, training included)")
    return {"thresholds": out_figures, "seconds": round(seconds, 1)}


def synthetic(
    args: argparse.Namespace, cfg: TrainConfig, scorers: list[Scorer]
) -> dict[str, object]:
    started = time.perf_counter()
    # One recording per stream, split as MSL's are: the first half (kept free of anomalies by
    # the generator's warm-up) trains the model, the second is replayed as new streams.
    half = 4032
    whole = synth.generate(
        synth.SynthSpec(
            n_streams=100, length=2 * half, anomalies_per_stream=2, warmup=half + 600, seed=21
        )
    )
    out = args.work / "synthetic"
    train_artifact(
        {s: v[:half] for s, v in zip(whole.stream_ids, whole.values, strict=True)}, cfg, out
    )
    model = load_model(out)
    test = synth.SynthData(
        whole.stream_ids,
        whole.timestamps[half:],
        whole.values[:, half:],
        tuple(
            synth.Anomaly(a.stream, a.kind, a.start - half, a.end - half) for a in whole.anomalies
        ),
    )
    n, t = test.values.shape
    rows = Rows(
        [s for _ in range(t) for s in test.stream_ids],
        np.repeat(test.timestamps, n),
        test.values.T.reshape(-1),
    )
    groups = rows.by_stream()
    idx = [groups[s] for s in test.stream_ids]
    # Events are counted over each anomaly's window: its altered readings and the return to
    # normal after them (synth.Anomaly.window); the strict count, which calls a flag on the
    # return a false alarm, is printed beside it.
    spans: dict[str, list[tuple[int, int]]] = {s: [] for s in test.stream_ids}
    altered: dict[str, list[tuple[int, int]]] = {s: [] for s in test.stream_ids}
    windows = [a.window(t) for a in test.anomalies]
    for a, w in zip(test.anomalies, windows, strict=True):
        spans[a.stream].append(w)
        altered[a.stream].append((a.start, a.end))
    figures = {}
    print(
        f"synthetic: 100 streams x 4,032 readings, {len(test.anomalies)} labelled anomalies; "
        "per kind: found / found before its return to normal / labelled"
    )
    for scorer in scorers:
        verdicts = replay(Engine(model, StateStore(model.spec.state_size), scorer), rows)
        flags = [verdicts.anomaly[i] for i in idx]
        result = report(
            list(test.stream_ids),
            [verdicts.score[i] for i in idx],
            flags,
            [spans[s] for s in test.stream_ids],
        )
        strict = EventCounts()
        for s, f in zip(test.stream_ids, flags, strict=True):
            strict = strict + event_counts(f, altered[s])
        kinds: dict[str, list[int]] = {}
        by_stream = dict(zip(test.stream_ids, flags, strict=True))
        for a, (lo, hi) in zip(test.anomalies, windows, strict=True):
            f = by_stream[a.stream]
            k = kinds.setdefault(a.kind, [0, 0, 0])
            k[0] += bool(f[lo : hi + 1].any())
            k[1] += bool(f[a.start : a.end + 1].any())
            k[2] += 1
        ev: dict = result["event"]  # type: ignore[assignment]
        rw: dict = result["rows"]  # type: ignore[assignment]
        print(
            f"  threshold {scorer.threshold:g}: TP {ev['tp']}  FP {ev['fp']}  FN {ev['fn']}  "
            f"precision {ev['precision']:.3f}  recall {ev['recall']:.3f}  F1 {ev['f1']:.3f}; "
            f"rows flagged {rw['flagged_fraction']:.1%}, row precision {rw['precision']:.3f}; "
            + ", ".join(f"{k} {h}/{b}/{m}" for k, (h, b, m) in sorted(kinds.items()))
        )
        print(
            f"    strict (a flag on the return to normal is a false alarm): TP {strict.tp}  "
            f"FP {strict.fp}  FN {strict.fn}  F1 {strict.f1:.3f}"
        )
        figures[str(scorer.threshold)] = {
            "event": ev,
            "kinds": kinds,
            "strict": {
                "tp": strict.tp,
                "fp": strict.fp,
                "fn": strict.fn,
                "f1": round(strict.f1, 4),
            },
        }
        nab = result["nab"]
    for key, v in nab.items():  # type: ignore[attr-defined]
        print(
            f"  NAB {key:<14} {v['score']:7.2f}  (score threshold {v['threshold']:.3g} "
            "by sweep, last run's scores)"
        )
    print(f"  ({time.perf_counter() - started:.0f}s, training included)")
    return {"thresholds": figures, "nab": nab}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--msl-dir", type=Path, default=MSL)
    p.add_argument("--work", type=Path, default=Path(".build/quality"))
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument(
        "--thresholds",
        default="0.5",
        help="comma-separated score thresholds, each replayed (default 0.5)",
    )
    p.add_argument(
        "--hold",
        type=int,
        default=100,
        help="readings an episode stays flagged after its last trigger (100)",
    )
    p.add_argument("--warmup", type=int, default=Scorer.warmup, help="scoring.warmup")
    p.add_argument(
        "--long-window", type=int, default=Scorer.long_window, help="scoring.long_window"
    )
    p.add_argument(
        "--novelty",
        default="0.13",
        help="the scorer's novelty gate ('off' to flag on the score alone; default 0.13)",
    )
    p.add_argument(
        "--envelope",
        default="off",
        help="the scorer's envelope test: flag readings beyond the trained range by this share "
        "of its width, e.g. 0.05 (default off, as in the daemon)",
    )
    p.add_argument(
        "--window",
        default="off",
        help="the scorer's window test (Hundman et al.'s nonparametric threshold over this many "
        "smoothed misses, e.g. 2100; default off, as in the daemon)",
    )
    p.add_argument(
        "--prime",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="replay each channel's train array before its test array to warm the stream up "
        "(default: no, the test array is a new stream, in warm-up for its first readings; the "
        "two arrays are separate recordings, and the jump between them reads as an anomaly)",
    )
    p.add_argument(
        "--value-only", action="store_true", help="MSL: the value column alone, no commands"
    )
    p.add_argument("--skip-msl", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--json", type=Path, help="write the figures as JSON")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = TrainConfig(
        hidden_size=args.hidden,
        layers=args.layers,
        epochs=args.epochs,
        patience=10,
        seed=0,
        device="cpu",
    )
    novelty = None if args.novelty == "off" else float(args.novelty)
    scorers = [
        Scorer(
            threshold=float(t),
            hold=args.hold,
            novelty=novelty,
            warmup=args.warmup,
            long_window=args.long_window,
            envelope=None if args.envelope == "off" else float(args.envelope),
            window=None if args.window == "off" else int(args.window),
        )
        for t in args.thresholds.split(",")
    ]
    print(
        f"model LSTM {args.layers}x{args.hidden}, up to {args.epochs} epochs; scorer {scorers[0]}"
    )
    results: dict[str, object] = {}
    if not args.skip_msl:
        if (args.msl_dir / "labeled_anomalies.csv").exists():
            results["msl"] = msl(args, cfg, scorers)
        else:
            print(f"MSL skipped: {args.msl_dir} not found")
    if not args.skip_synthetic:
        results["synthetic"] = synthetic(args, cfg, scorers)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Forecast skill on the development sets: the LSTM against persistence and seasonal naive.

    .venv/bin/python bench/forecast_skill.py [--sets msl-value,msl-cmd,synthetic,gutentag]
        [--on-train] [--epochs 80] [--json out.json]

A verdict is only as good as the forecast behind it, so before any detection figure: per
series, train a model as ``bench/quality_msl.py`` and ``bench/quality_gutentag.py`` do (MSL:
one model per channel on ``<channel>_train.npy``, from the value column alone
(``msl-value``) or with the 54 command columns as covariates (``msl-cmd``); synthetic: 100
generated streams, one model on their first halves; GutenTAG: one model per series of
``make gutentag-suite``), replay the test part causally with the daemon's engine as a new
stream, and compare its ``prediction`` with the reading that follows (``forecast.py``):
MAE against persistence and seasonal-naive MAE, the share of series that beat persistence,
bias (mean error / MAE) and the coverage of the 50/90/99 % intervals the predicted scale
implies.  ``--on-train`` replays each series' own training rows instead: a model that loses
to persistence even there has a train/serve skew, not a generalisation problem.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
from quality_msl import MSL, _rows

from streamwatch import synth
from streamwatch.data import Rows
from streamwatch.engine import Engine
from streamwatch.forecast import Skill, format_summary, report, stream_skill
from streamwatch.model import load_model
from streamwatch.replay import forecast_columns, replay
from streamwatch.scoring import Scorer
from streamwatch.state import StateStore
from streamwatch.train.fit import TrainConfig, train_artifact

CMD_NAMES = ("value", *(f"cmd_{i}" for i in range(1, 55)))


def _model(out: Path, series: dict[str, np.ndarray], cfg: TrainConfig, retrain: bool, **kw):
    if retrain or not (out / "model.json").exists():
        train_artifact(series, cfg, out, **kw)
    return load_model(out)


def _skill(model, rows: Rows) -> dict[str, Skill]:
    """Each stream's figures over ``rows`` replayed through a fresh engine."""
    engine = Engine(model, StateStore(model.spec.state_size), Scorer())
    verdicts = replay(engine, rows)
    columns = forecast_columns(rows, verdicts.prediction, verdicts.scale)
    return {name: stream_skill(*cols) for name, cols in columns.items()}


def msl(args: argparse.Namespace, cfg: TrainConfig, commands: bool) -> dict:
    labels = csv.DictReader((args.msl_dir / "labeled_anomalies.csv").open())
    per: dict[str, Skill] = {}
    for chan in sorted(r["chan_id"] for r in labels):
        train = np.load(args.msl_dir / f"{chan}_train.npy")
        test = np.load(args.msl_dir / f"{chan}_test.npy")
        if not commands:
            train, test = train[:, :1], test[:, :1]
        out = args.work / ("msl-cmd" if commands else "msl-value") / chan
        names = CMD_NAMES if commands else CMD_NAMES[:1]
        model = _model(out, {chan: train}, cfg, args.retrain, feature_names=names)
        rows = _rows(chan, train) if args.on_train else _rows(chan, test, start=len(train))
        per.update(_skill(model, rows))
    return report(per)


def synthetic(args: argparse.Namespace, cfg: TrainConfig) -> dict:
    half = 4032
    whole = synth.generate(
        synth.SynthSpec(
            n_streams=100, length=2 * half, anomalies_per_stream=2, warmup=half + 600, seed=21
        )
    )
    model = _model(
        args.work / "synthetic",
        {s: v[:half] for s, v in zip(whole.stream_ids, whole.values, strict=True)},
        cfg,
        args.retrain,
    )
    part = slice(0, half) if args.on_train else slice(half, 2 * half)
    values = whole.values[:, part]
    n, t = values.shape
    rows = Rows(
        [s for _ in range(t) for s in whole.stream_ids],
        np.repeat(whole.timestamps[part], n),
        values.T.reshape(-1),
    )
    return report(_skill(model, rows))


def gutentag(args: argparse.Namespace, cfg: TrainConfig) -> dict | None:
    per: dict[str, Skill] = {}
    for path in args.gutentag:
        if not path.exists():
            print(f"  {path}: no suite (make gutentag-suite writes it); skipped")
            continue
        suite = np.load(path)
        for name in sorted({k.split("|")[0] for k in suite.files}):
            train, test = suite[f"{name}|train"], suite[f"{name}|test"]
            out = args.work / "gutentag" / path.stem / name
            model = _model(out, {name: train[:, None]}, cfg, args.retrain)
            arr = (train if args.on_train else test)[:, None]
            rows = _rows(name, arr, start=0 if args.on_train else len(train))
            # the two seeds name their series alike: keep both
            per.update({f"{path.stem}/{k}": v for k, v in _skill(model, rows).items()})
    return report(per) if per else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="msl-value,msl-cmd,synthetic,gutentag")
    p.add_argument("--msl-dir", type=Path, default=MSL)
    p.add_argument(
        "--gutentag",
        type=Path,
        nargs="+",
        default=[Path(".build/gutentag/suite-seed7.npz"), Path(".build/gutentag/suite-seed8.npz")],
    )
    p.add_argument("--work", type=Path, default=Path(".build/forecast"))
    p.add_argument("--retrain", action="store_true", help="fit the models anew")
    p.add_argument("--on-train", action="store_true", help="replay the training rows")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--likelihood", default="gaussian", help="training loss: gaussian or laplace")
    p.add_argument("--json", type=Path, help="write every figure as JSON")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = TrainConfig(
        hidden_size=args.hidden,
        epochs=args.epochs,
        patience=10,
        seed=0,
        device="cpu",
        likelihood=args.likelihood,
    )
    results = {}
    for name in args.sets.split(","):
        started = time.perf_counter()
        if name in ("msl-value", "msl-cmd"):
            result = msl(args, cfg, commands=name == "msl-cmd")
        elif name == "synthetic":
            result = synthetic(args, cfg)
        elif name == "gutentag":
            result = gutentag(args, cfg)
        else:
            raise SystemExit(f"--sets: unknown set {name!r}")
        if result is None:
            continue
        results[name] = result
        where = "training rows" if args.on_train else "test rows"
        seconds = time.perf_counter() - started
        print(f"{name} ({where}, {seconds:.0f} s): {format_summary(result['summary'])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

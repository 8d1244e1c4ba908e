#!/usr/bin/env python3
"""Training time on this machine: a documented synthetic set and one MSL channel.

    .venv/bin/python bench/train_time.py [--epochs 10] [--device auto] [--msl-channel C-1]

Synthetic: 200 streams x 5,000 readings from `streamwatch generate` (seed 1, no anomalies),
LSTM 1 x 32.  MSL: one channel's train array, value plus its 54 command columns as covariates.
Early stopping is off (patience = epochs) so that every run does the same epoch count.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from streamwatch import synth
from streamwatch.data import load_series
from streamwatch.train.fit import TrainConfig, fit

MSL = Path(__file__).resolve().parents[1].parent / "shared/datasets/msl"


def run(name: str, series: dict[str, np.ndarray], cfg: TrainConfig) -> None:
    start = time.perf_counter()
    _, metrics = fit(series, cfg)
    seconds = time.perf_counter() - start
    readings = sum(len(v) for v in series.values())
    print(
        f"{name:<34} {readings:>9,} readings  {metrics['epochs_run']:>3} epochs  "
        f"{seconds:7.1f}s total  {seconds / metrics['epochs_run']:6.2f}s/epoch  "
        f"val_nll {metrics['val_nll']:.3f}  device {metrics['device']}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--msl-channel", default="C-1")
    p.add_argument("--msl-dir", type=Path, default=MSL)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available'}"
    )
    cfg = TrainConfig(epochs=args.epochs, patience=args.epochs, device=args.device)
    data = synth.generate(
        synth.SynthSpec(n_streams=200, length=5000, anomalies_per_stream=0, seed=1)
    )
    run(
        "synthetic 200 x 5,000, LSTM 1x32",
        dict(zip(data.stream_ids, data.values, strict=True)),
        cfg,
    )
    path = args.msl_dir / f"{args.msl_channel}_train.npy"
    if path.exists():
        series = load_series([path], target=0, covariates=True)
        run(f"MSL {args.msl_channel} (+54 covariates), 1x32", series, cfg)
    else:
        print(f"MSL channel skipped: {path} not found")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write a held-out test suite with GutenTAG (TimeEval's labelled time series generator).

    make gutentag-suite            # a venv with timeeval-gutenTAG, then this script

streamwatch's own generator (``streamwatch.synth``) was written beside the scorer, so its
anomalies are the kinds the scorer was shaped on.  GutenTAG (Wenig et al., "TimeEval: A
Benchmarking Toolkit for Time Series Anomaly Detection Algorithms", VLDB 2022) is someone
else's: each series here is one base oscillation (sine, ECG, random walk, cylinder-bell-funnel,
square, sawtooth, polynomial) with two anomalies of one kind (amplitude, extremum, frequency,
mean, pattern, pattern shift, platform, trend, variance) at rows 1,500 and 3,000, and an
anomaly-free recording of the same process to train on.  Pairs GutenTAG refuses (a frequency
change on a random walk, ...) are left out: 54 series.

Runs under a Python with ``timeeval-gutenTAG`` installed (its dependencies are heavy and pin
SciPy, so it is kept out of streamwatch's venv); writes one ``.npz`` that
``bench/quality_gutentag.py`` reads with streamwatch's own venv.
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from pathlib import Path

import numpy as np

LENGTH = 4000
POSITIONS = (1500, 3000)
BASES = {
    "sine": {"kind": "sine", "frequency": 0.25, "amplitude": 1.0, "variance": 0.05},
    "ecg": {"kind": "ecg", "frequency": 0.25, "amplitude": 1.0, "variance": 0.05},
    "rw": {"kind": "random-walk", "amplitude": 1.0, "smoothing": 0.05, "variance": 0.05},
    "cbf": {
        "kind": "cylinder-bell-funnel",
        "amplitude": 1.0,
        "avg-pattern-length": 40,
        "variance-pattern-length": 5,
        "variance-amplitude": 0.1,
        "variance": 0.05,
    },
    "square": {"kind": "square", "frequency": 0.25, "amplitude": 1.0, "variance": 0.05},
    "saw": {"kind": "sawtooth", "frequency": 0.25, "amplitude": 1.0, "variance": 0.05},
    "poly": {"kind": "polynomial", "polynomial": [0, 0.0005], "variance": 0.05},
}
KINDS = {
    "amplitude": {"kind": "amplitude", "amplitude_factor": 1.8},
    "extremum": {"kind": "extremum", "min": False, "local": False},
    "frequency": {"kind": "frequency", "frequency_factor": 2.0},
    "mean": {"kind": "mean", "offset": 0.5},
    "pattern": {
        "kind": "pattern",
        "sinusoid_k": 10.0,
        "cbf_pattern_factor": 2.0,
        "square_duty": 0.2,
        "sawtooth_width": 0.7,
    },
    "pattern-shift": {"kind": "pattern-shift", "shift_by": 5, "transition_window": 10},
    "platform": {"kind": "platform", "value": 0.0},
    "trend": {
        "kind": "trend",
        "oscillation": {"kind": "polynomial", "polynomial": [0.5, 0.005]},
    },
    "variance": {"kind": "variance", "variance": 0.3},
}


def main() -> None:
    from gutenTAG import GutenTAG  # only in the generator's venv

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path(".build/gutentag/suite-seed7.npz"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    arrays: dict[str, np.ndarray] = {}
    for (base, osc), (kind, anomaly) in itertools.product(BASES.items(), KINDS.items()):
        name = f"{base}-{kind}"
        length = 1 if kind == "extremum" else 100
        config = {
            "timeseries": [
                {
                    "name": name,
                    "length": LENGTH,
                    "semi-supervised": True,
                    "base-oscillations": [osc],
                    "anomalies": [
                        {"exact-position": at, "length": length, "channel": 0, "kinds": [anomaly]}
                        for at in POSITIONS
                    ],
                }
            ]
        }
        try:
            made = (
                GutenTAG(seed=args.seed).load_config_dict(config).generate(return_timeseries=True)
            )
        except (ValueError, AssertionError) as e:  # a pair GutenTAG does not combine
            print(f"{name}: left out ({str(e).splitlines()[0][:80]})")
            continue
        parts = {d.training_type.value: d.timeseries for d in made}
        train, test = parts["train-no-anomaly"], parts["test"]
        arrays[f"{name}|train"] = train["value-0"].to_numpy(np.float64)
        arrays[f"{name}|test"] = test["value-0"].to_numpy(np.float64)
        arrays[f"{name}|label"] = test["is_anomaly"].to_numpy().astype(np.int8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"{len(arrays) // 3} series -> {args.out}")


if __name__ == "__main__":
    main()

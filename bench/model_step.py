#!/usr/bin/env python3
"""ONNX Runtime step throughput of an exported model beside a PyTorch eager step.

One thread each, same weights, batch sizes 1, 256 and 1,024; rows per second and the ratio.

    .venv/bin/python bench/model_step.py [--hidden 64] [--layers 1] [--seconds 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from streamwatch.model.artifact import ModelSpec, sha256_bytes
from streamwatch.model.runtime import OnnxForecaster
from streamwatch.normalize import Normalizer
from streamwatch.train.export import export_onnx
from streamwatch.train.module import Forecaster


def rate(fn, rows: int, seconds: float) -> float:
    fn()  # warm up
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n * rows / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Forecaster(1, 1, args.hidden, args.layers).eval()
    data = export_onnx(model)
    spec = ModelSpec(
        "bench",
        "1",
        ("value",),
        ("value",),
        args.layers,
        args.hidden,
        Normalizer(),
        sha256_bytes(data),
    )
    ort_model = OnnxForecaster(spec, data, threads=1)
    print(f"LSTM {args.layers}x{args.hidden}, one thread, {args.seconds:g}s per figure")
    print(f"{'batch':>6} {'onnxruntime rows/s':>20} {'torch eager rows/s':>20} {'ratio':>7}")
    rng = np.random.default_rng(0)
    for batch in (1, 256, 1024):
        x = rng.standard_normal((batch, 1)).astype(np.float32)
        state = rng.standard_normal((batch, spec.state_size)).astype(np.float32)
        tx, tstate = torch.from_numpy(x), torch.from_numpy(state)

        def torch_step(tx: torch.Tensor = tx, tstate: torch.Tensor = tstate) -> None:
            with torch.inference_mode():
                model.step_packed(tx, tstate)

        ort = rate(lambda x=x, state=state: ort_model.step(x, state), batch, args.seconds)
        eager = rate(torch_step, batch, args.seconds)
        print(f"{batch:>6} {ort:>20,.0f} {eager:>20,.0f} {ort / eager:>6.2f}x")


if __name__ == "__main__":
    main()

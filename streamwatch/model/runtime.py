"""The batched model step on ONNX Runtime: the only module that imports onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamwatch.errors import ModelError
from streamwatch.model.artifact import (
    INPUT_STATE,
    INPUT_X,
    OUTPUT_MU,
    OUTPUT_SIGMA,
    OUTPUT_STATE,
    ModelSpec,
    read_artifact,
)


class OnnxForecaster:
    """One LSTM step for a batch of streams: ``(x, state) -> (mu, sigma, state_out)``.

    ``x`` is (batch, features) and ``state`` (batch, state_size), both float32; outputs are in
    the normalised units of each stream.  Inputs are never modified.
    """

    def __init__(self, spec: ModelSpec, onnx_bytes: bytes, threads: int = 1) -> None:
        self.spec = spec
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            # From bytes, so the file checked by sha256 is the file served, and external data
            # (which would be read from elsewhere on disk) cannot be resolved.
            self.session = ort.InferenceSession(
                onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelError(f"{spec.onnx_file}: onnxruntime refused the model: {exc}") from exc
        self._check_io()
        self._outputs = [OUTPUT_MU, OUTPUT_SIGMA, OUTPUT_STATE]

    def _check_io(self) -> None:
        spec = self.spec
        want_in = {INPUT_X: len(spec.features), INPUT_STATE: spec.state_size}
        want_out = {
            OUTPUT_MU: len(spec.targets),
            OUTPUT_SIGMA: len(spec.targets),
            OUTPUT_STATE: spec.state_size,
        }
        for kind, args, want in (
            ("input", self.session.get_inputs(), want_in),
            ("output", self.session.get_outputs(), want_out),
        ):
            got = {a.name: a for a in args}
            if set(got) != set(want):
                raise ModelError(
                    f"{spec.onnx_file}: {kind}s are {sorted(got)}, model.json declares "
                    f"{sorted(want)}"
                )
            for name, width in want.items():
                arg = got[name]
                if arg.type != "tensor(float)" or len(arg.shape) != 2 or arg.shape[1] != width:
                    raise ModelError(
                        f"{spec.onnx_file}: {kind} {name!r} is {arg.type} {arg.shape}, "
                        f"model.json declares float [batch, {width}]"
                    )

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mu, sigma, state_out = self.session.run(self._outputs, {INPUT_X: x, INPUT_STATE: state})
        return mu, sigma, state_out


def load_model(directory: Path | str, threads: int = 1) -> OnnxForecaster:
    """Load and check an artifact directory; raise ModelError with the reason if refused."""
    spec, data = read_artifact(directory)
    return OnnxForecaster(spec, data, threads=threads)

"""The model contract, run on every model shipped in models/ (they carry no torch checkpoint:
the torch module is rebuilt from the ONNX weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamwatch.model import load_model
from streamwatch.train.export import export_onnx, forecaster_from_onnx
from streamwatch.train.module import Forecaster

SHIPPED = sorted(
    p.parent for p in (Path(__file__).resolve().parents[2] / "models").glob("*/model.json")
)


def test_something_is_shipped() -> None:
    assert SHIPPED, "models/ holds no artifact"


def test_rebuilding_from_onnx_is_exact() -> None:
    torch.manual_seed(0)
    model = Forecaster(3, 1, 8, 2).eval()
    again = forecaster_from_onnx(export_onnx(model), layers=2, hidden=8)
    x = torch.randn(4, 6, 3)
    with torch.no_grad():
        a, b = model(x), again(x)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)


@pytest.mark.parametrize("model_dir", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_contract(model_dir: Path) -> None:
    served = load_model(model_dir)  # checks hashes, schema, inputs and outputs
    spec = served.spec
    data = (model_dir / spec.onnx_file).read_bytes()
    reference = forecaster_from_onnx(data, spec.layers, spec.hidden_size)
    rng = np.random.default_rng(0)
    n_features = len(spec.features)

    # ORT against torch on the same inputs and states
    x = rng.standard_normal((256, n_features)).astype(np.float32)
    state = rng.standard_normal((256, spec.state_size)).astype(np.float32)
    x0, s0 = x.copy(), state.copy()
    mu, sigma, new_state = served.step(x, state)
    assert np.array_equal(x, x0) and np.array_equal(state, s0)  # inputs not mutated
    with torch.no_grad():
        tmu, tsigma, tstate = reference.step_packed(torch.from_numpy(x), torch.from_numpy(state))
    assert np.abs(mu - tmu.numpy()).max() <= 1e-5
    assert np.abs(sigma - tsigma.numpy()).max() <= 1e-5
    assert np.abs(new_state - tstate.numpy()).max() <= 1e-5

    # stepping with carried state equals running the whole sequence
    seq = rng.standard_normal((3, 50, n_features)).astype(np.float32)
    with torch.no_grad():
        mu_seq, _, _ = reference(torch.from_numpy(seq))
    carried = np.zeros((3, spec.state_size), np.float32)
    for t in range(50):
        step_mu, _, carried = served.step(seq[:, t], carried)
        assert np.abs(step_mu - mu_seq[:, t].numpy()).max() <= 1e-5

    # one stream's outputs are the same alone or among 1,000 others
    xs = rng.standard_normal((1000, n_features)).astype(np.float32)
    states = rng.standard_normal((1000, spec.state_size)).astype(np.float32)
    among = served.step(xs, states)
    alone = served.step(xs[500:501], states[500:501])
    for a, b in zip(alone, among, strict=True):
        np.testing.assert_allclose(a[0], b[500], rtol=0, atol=1e-6)

    # deterministic
    again = served.step(x, state)
    assert all(np.array_equal(a, b) for a, b in zip(again, (mu, sigma, new_state), strict=True))


def test_model_show_prints_the_artifact_and_refuses_bad_ones(tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess
    import sys

    example = SHIPPED[0]
    r = subprocess.run(
        [sys.executable, "-m", "streamwatch", "model", "show", str(example)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads((example / "model.json").read_text())
    for text in (
        meta["name"],
        meta["version"],
        meta["onnx"]["sha256"],
        "validation  nll",
        f"{meta['hidden_size']} hidden",
        "calibration",
        "trained ranges of 0 stream(s)",  # trained before models recorded them
    ):
        assert text in r.stdout
    broken = Path(shutil.copytree(example, tmp_path / "broken"))
    (broken / "model.onnx").write_bytes(b"not onnx")
    r = subprocess.run(
        [sys.executable, "-m", "streamwatch", "model", "show", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "sha256 mismatch" in r.stderr

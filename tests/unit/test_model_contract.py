"""The contract every model the project builds must meet (ORT parity, state, isolation)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from streamwatch.errors import ModelError
from streamwatch.model import load_model, read_artifact
from streamwatch.model.artifact import sha256_bytes
from streamwatch.train.export import export_onnx
from streamwatch.train.fit import TrainConfig, fit
from streamwatch.train.module import Forecaster, pack_state, unpack_state


def _torch_model(
    layers: int = 2, hidden: int = 12, seed: int = 0, features: int = 1, targets: int = 1
) -> Forecaster:
    torch.manual_seed(seed)
    return Forecaster(features, targets, hidden, layers).eval()


def _session(model: Forecaster):  # an OnnxForecaster over the exported bytes
    from streamwatch.model.artifact import ModelSpec
    from streamwatch.model.runtime import OnnxForecaster
    from streamwatch.normalize import Normalizer

    data = export_onnx(model)
    features = tuple(f"f{i}" for i in range(model.n_features))
    spec = ModelSpec(
        "t",
        "1",
        features,
        features[: model.n_targets],
        model.layers,
        model.hidden_size,
        Normalizer(),
        sha256_bytes(data),
    )
    return OnnxForecaster(spec, data)


@pytest.mark.parametrize(
    ("layers", "features", "targets"), [(1, 1, 1), (2, 1, 1), (2, 5, 1), (1, 4, 2)]
)
def test_ort_matches_torch(layers: int, features: int, targets: int) -> None:
    model = _torch_model(layers, features=features, targets=targets)
    ort_model = _session(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, features)).astype(np.float32)
    state = rng.standard_normal((64, 2 * layers * 12)).astype(np.float32)
    mu, sigma, new_state = ort_model.step(x, state)
    with torch.no_grad():
        tmu, tsigma, tstate = model.step_packed(torch.from_numpy(x), torch.from_numpy(state))
    assert np.abs(mu - tmu.numpy()).max() <= 1e-5
    assert np.abs(sigma - tsigma.numpy()).max() <= 1e-5
    assert np.abs(new_state - tstate.numpy()).max() <= 1e-5


def test_stepping_equals_whole_sequence() -> None:
    model = _torch_model(layers=2)
    ort_model = _session(model)
    xs = np.random.default_rng(1).standard_normal((5, 40, 1)).astype(np.float32)
    with torch.no_grad():
        mu_seq, sigma_seq, _ = model(torch.from_numpy(xs))
    state = np.zeros((5, ort_model.spec.state_size), np.float32)
    for t in range(40):
        mu, sigma, state = ort_model.step(xs[:, t], state)
        assert np.abs(mu - mu_seq[:, t].numpy()).max() <= 1e-5
        assert np.abs(sigma - sigma_seq[:, t].numpy()).max() <= 1e-5


def test_pack_unpack_round_trip() -> None:
    h, c = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    h2, c2 = unpack_state(pack_state(h, c), 3, 5)
    assert torch.equal(h, h2) and torch.equal(c, c2)


def test_streams_in_a_batch_do_not_affect_each_other(model_dir: Path) -> None:
    model = load_model(model_dir)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1000, 1)).astype(np.float32)
    state = rng.standard_normal((1000, model.spec.state_size)).astype(np.float32)
    alone = model.step(x[17:18], state[17:18])
    among = model.step(x, state)
    for a, b in zip(alone, among, strict=True):
        np.testing.assert_allclose(a[0], b[17], rtol=0, atol=1e-6)


def test_inputs_are_not_mutated(model_dir: Path) -> None:
    model = load_model(model_dir)
    x = np.ones((8, 1), np.float32)
    state = np.full((8, model.spec.state_size), 0.5, np.float32)
    x0, s0 = x.copy(), state.copy()
    model.step(x, state)
    assert np.array_equal(x, x0) and np.array_equal(state, s0)


def test_training_is_deterministic_for_a_seed() -> None:
    t = np.arange(700)
    series = {f"s{i}": np.sin(t / (10 + i)) * (i + 1) + 0.01 * np.cos(t * 7.3) for i in range(4)}
    cfg = TrainConfig(hidden_size=8, epochs=2, window=64, seed=5)
    a, _ = fit(series, cfg)
    b, _ = fit(series, cfg)
    assert export_onnx(a) == export_onnx(b)
    c, _ = fit(series, TrainConfig(hidden_size=8, epochs=2, window=64, seed=6))
    assert export_onnx(a) != export_onnx(c)


def test_artifact_records_what_serving_needs(model_dir: Path) -> None:
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["schema_version"] == 1
    assert meta["state_size"] == 2 * meta["layers"] * meta["hidden_size"]
    assert meta["onnx"]["sha256"] == sha256_bytes((model_dir / "model.onnx").read_bytes())
    assert set(meta["calibration"]["abs_error_quantiles"]) == {
        "0.5",
        "0.9",
        "0.99",
        "0.999",
        "0.9999",
    }
    assert meta["training"]["data"]["streams"] == 24
    envelopes = meta["calibration"]["envelopes"]  # each training stream's range, lo then hi
    assert len(envelopes) == 24
    assert all(lo[0] < hi[0] for lo, hi in envelopes.values())
    # no worse than "next reading equals this one" on held-out data (the residual head starts
    # there); a broken target alignment or normalisation would be far worse
    val = meta["training"]["validation"]
    assert val["val_mae_z"] <= 1.05 * val["val_naive_mae_z"]


# -- refusals ----------------------------------------------------------------------------------


@pytest.fixture
def artifact(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "a"))


def _edit(path: Path, **changes: object) -> None:
    meta = json.loads((path / "model.json").read_text())
    meta.update(changes)
    (path / "model.json").write_text(json.dumps(meta))


def test_refuses_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model directory not found"):
        load_model(tmp_path / "nope")


def test_refuses_missing_metadata(artifact: Path) -> None:
    (artifact / "model.json").unlink()
    with pytest.raises(ModelError, match=r"model\.json: missing file"):
        load_model(artifact)


def test_refuses_missing_onnx(artifact: Path) -> None:
    (artifact / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx: missing file"):
        load_model(artifact)


def test_refuses_hash_mismatch(artifact: Path) -> None:
    data = bytearray((artifact / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (artifact / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_model(artifact)


def test_refuses_unknown_schema_version(artifact: Path) -> None:
    _edit(artifact, schema_version=99)
    with pytest.raises(ModelError, match="unknown schema_version 99"):
        load_model(artifact)


def test_refuses_invalid_json(artifact: Path) -> None:
    (artifact / "model.json").write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(artifact)


@pytest.mark.parametrize(
    "bad",
    [[[1.0], [0.0]], [[0.0]], [[0.0], [float("inf")]], "wide", [["a"], [1.0]], [0.0, 1.0]],
    ids=["lo-above-hi", "one-row", "infinite", "not-a-range", "not-numbers", "flat"],
)
def test_refuses_malformed_envelopes(artifact: Path, bad: object) -> None:
    meta = json.loads((artifact / "model.json").read_text())
    meta["calibration"]["envelopes"] = {"s0001": bad}
    (artifact / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"calibration\.envelopes\['s0001'\]"):
        load_model(artifact)


def test_refuses_io_not_as_declared(artifact: Path) -> None:
    meta = json.loads((artifact / "model.json").read_text())
    _edit(artifact, hidden_size=meta["hidden_size"] * 2, state_size=4 * meta["hidden_size"])
    with pytest.raises(ModelError, match="input 'state' is"):
        load_model(artifact)


def test_refuses_external_data(artifact: Path) -> None:
    import onnx

    proto = onnx.load_from_string((artifact / "model.onnx").read_bytes())
    onnx.save_model(
        proto,
        str(artifact / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    _edit(
        artifact,
        onnx={
            **json.loads((artifact / "model.json").read_text())["onnx"],
            "sha256": sha256_bytes((artifact / "model.onnx").read_bytes()),
        },
    )
    with pytest.raises(ModelError, match="external data"):
        read_artifact(artifact)


def test_multivariate_model_from_the_command_line(tmp_path: Path) -> None:
    """Two targets and a covariate from .npy: train, show, replay; a spike in the second
    target is flagged."""
    import subprocess
    import sys

    t = np.arange(2500)
    rng = np.random.default_rng(0)
    a = np.sin(t / 20) + 0.05 * rng.standard_normal(2500)
    b = 3 * np.cos(t / 20) + 0.1 * rng.standard_normal(2500)
    b[2300] += 5.0
    np.save(tmp_path / "mv.npy", np.column_stack([a, b, (t % 100 < 10).astype(float)]))
    sw = [sys.executable, "-m", "streamwatch"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*sw, *args], capture_output=True, text=True, timeout=300)

    r = run(
        "train",
        "--data",
        str(tmp_path / "mv.npy"),
        "--target",
        "0,1",
        "--covariates",
        "--out",
        str(tmp_path / "m"),
        "--epochs",
        "4",
        "--hidden-size",
        "16",
    )
    assert r.returncode == 0, r.stderr
    spec = load_model(tmp_path / "m").spec
    assert spec.targets == ("value_0", "value_1") and spec.features[2] == "covariate_1"
    r = run(
        "replay",
        "--model",
        str(tmp_path / "m"),
        "--data",
        str(tmp_path / "mv.npy"),
        "--target",
        "0,1",
        "--warmup",
        "100",
        "--out",
        str(tmp_path / "s.csv"),
    )
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "s.csv").read_text().splitlines()
    row = lines[1 + 2300].split(",")
    assert row[3].count(";") == 1 and row[-1] == "1"  # both targets written; spike flagged
    r = run(
        "replay",
        "--model",
        str(tmp_path / "m"),
        "--data",
        str(tmp_path / "mv.npy"),
        "--out",
        str(tmp_path / "x.csv"),
    )
    assert r.returncode == 2 and "the model predicts 2" in r.stderr

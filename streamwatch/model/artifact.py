"""The model artifact: a directory holding ``model.onnx`` and ``model.json``.

``model.json`` is the contract between training and serving: feature and target order, the
LSTM's size and state layout, the normalisation and the calibration.  It is plain JSON and the
ONNX file is checked against the sha256 it records; nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamwatch.errors import ModelError
from streamwatch.model.onnxfile import has_external_data
from streamwatch.normalize import Normalizer

SCHEMA_VERSION = 1
STATE_LAYOUT = "packed_hc_v1"  # state row = [h_layer0, c_layer0, h_layer1, c_layer1, ...]
INPUT_X, INPUT_STATE = "x", "state"
OUTPUT_MU, OUTPUT_SIGMA, OUTPUT_STATE = "mu", "sigma", "state_out"


@dataclass(frozen=True)
class ModelSpec:
    """What ``model.json`` declares, validated."""

    name: str
    version: str
    features: tuple[str, ...]
    targets: tuple[str, ...]
    layers: int
    hidden_size: int
    normalization: Normalizer
    onnx_sha256: str
    calibration: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    streamwatch_version: str = ""
    created_at: str = ""
    state_layout: str = STATE_LAYOUT
    onnx_file: str = "model.onnx"

    @property
    def state_size(self) -> int:
        return 2 * self.layers * self.hidden_size

    def envelopes(self) -> dict[str, np.ndarray]:
        """Per training stream, the range its targets spanned: (2, targets) float32, lo
        then hi (``calibration.envelopes``; empty for models trained before it existed).
        Converted once (a model may know a hundred thousand streams) and shared: read-only."""
        if "_envelopes" not in self.__dict__:  # frozen: cache beside the fields
            table = self.calibration.get("envelopes") or {}
            stacked = _stack(table, len(self.targets)).astype(np.float32)
            stacked.flags.writeable = False
            self.__dict__["_envelopes"] = dict(zip(table, stacked, strict=True))
        return self.__dict__["_envelopes"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "features": list(self.features),
            "targets": list(self.targets),
            "layers": self.layers,
            "hidden_size": self.hidden_size,
            "state_layout": self.state_layout,
            "state_size": self.state_size,
            "onnx": {
                "file": self.onnx_file,
                "sha256": self.onnx_sha256,
                "inputs": {
                    INPUT_X: ["batch", len(self.features)],
                    INPUT_STATE: ["batch", self.state_size],
                },
                "outputs": {
                    OUTPUT_MU: ["batch", len(self.targets)],
                    OUTPUT_SIGMA: ["batch", len(self.targets)],
                    OUTPUT_STATE: ["batch", self.state_size],
                },
            },
            "normalization": self.normalization.to_dict(),
            "calibration": self.calibration,
            "training": self.training,
            "streamwatch_version": self.streamwatch_version,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model.json") -> ModelSpec:
        def get(key: str, kind: type | tuple[type, ...]) -> Any:
            if key not in d:
                raise ModelError(f"{where}: missing key {key!r}")
            value = d[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ModelError(f"{where}: {key!r} has the wrong type")
            return value

        version = get("schema_version", int)
        if version != SCHEMA_VERSION:
            raise ModelError(
                f"{where}: unknown schema_version {version} (this streamwatch reads "
                f"{SCHEMA_VERSION})"
            )
        layout = get("state_layout", str)
        if layout != STATE_LAYOUT:
            raise ModelError(f"{where}: unknown state_layout {layout!r}")
        onnx = get("onnx", dict)
        if not isinstance(onnx.get("sha256"), str) or not isinstance(onnx.get("file"), str):
            raise ModelError(f"{where}: onnx.file and onnx.sha256 are required strings")
        if Path(onnx["file"]).name != onnx["file"]:
            raise ModelError(f"{where}: onnx.file must be a plain file name in the artifact")
        try:
            normalization = Normalizer.from_dict(get("normalization", dict))
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{where}: normalization: {exc}") from exc
        spec = cls(
            name=get("name", str),
            version=get("version", str),
            features=tuple(get("features", list)),
            targets=tuple(get("targets", list)),
            layers=get("layers", int),
            hidden_size=get("hidden_size", int),
            normalization=normalization,
            onnx_sha256=onnx["sha256"],
            onnx_file=onnx["file"],
            calibration=d.get("calibration", {}),
            training=d.get("training", {}),
            streamwatch_version=str(d.get("streamwatch_version", "")),
            created_at=str(d.get("created_at", "")),
            state_layout=layout,
        )
        if spec.layers < 1 or spec.hidden_size < 1 or not spec.features or not spec.targets:
            raise ModelError(f"{where}: layers, hidden_size, features and targets must be set")
        if d.get("state_size", spec.state_size) != spec.state_size:
            raise ModelError(f"{where}: state_size disagrees with 2 x layers x hidden_size")
        _check_envelopes(where, spec)
        return spec


def _check_envelopes(where: str, spec: ModelSpec) -> None:
    if not isinstance(spec.calibration, dict):
        raise ModelError(f"{where}: calibration must be an object")
    table = spec.calibration.get("envelopes", {})
    if not isinstance(table, dict):
        raise ModelError(f"{where}: calibration.envelopes must map stream ids to ranges")
    n_targets = len(spec.targets)
    try:
        stacked = _stack(table, n_targets)
        bad = ~(np.isfinite(stacked).all(axis=(1, 2)) & (stacked[:, 0] <= stacked[:, 1]).all(1))
    except (TypeError, ValueError):  # ragged or not numbers: find which, one by one
        bad = np.array([_stack({k: v}, n_targets, strict=False) is None for k, v in table.items()])
    if bad.any():
        stream = list(table)[int(np.argmax(bad))]
        raise ModelError(
            f"{where}: calibration.envelopes[{stream!r}] must be [[lo ...], [hi ...]] with "
            f"{n_targets} finite value(s) each, lo <= hi"
        )


def _stack(table: dict[str, Any], n_targets: int, strict: bool = True) -> Any:
    """The ranges of ``table`` as one (streams, 2, targets) float64 array; with
    ``strict=False``, None where a range is not numbers of that shape, finite, lo <= hi."""
    if not table:
        return np.empty((0, 2, n_targets))
    try:
        arr = np.asarray(list(table.values()), np.float64)
        if arr.shape != (len(table), 2, n_targets):
            raise ValueError(f"ranges of shape {arr.shape[1:]}")
    except (TypeError, ValueError):
        if strict:
            raise
        return None
    if not strict and not (np.isfinite(arr).all() and (arr[:, 0] <= arr[:, 1]).all()):
        return None
    return arr


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_artifact(directory: Path | str) -> tuple[ModelSpec, bytes]:
    """Read and check an artifact directory; return its spec and the verified ONNX bytes."""
    directory = Path(directory)
    meta_path = directory / "model.json"
    if not directory.is_dir():
        raise ModelError(f"{directory}: model directory not found")
    if not meta_path.is_file():
        raise ModelError(f"{meta_path}: missing file")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: top level must be an object")
    spec = ModelSpec.from_dict(meta, where=str(meta_path))
    onnx_path = directory / spec.onnx_file
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: missing file")
    data = onnx_path.read_bytes()
    digest = sha256_bytes(data)
    if digest != spec.onnx_sha256:
        raise ModelError(
            f"{onnx_path}: sha256 mismatch (file {digest[:12]}..., model.json "
            f"{spec.onnx_sha256[:12]}...): the file changed after export"
        )
    try:
        external = has_external_data(data)
    except ValueError as exc:
        raise ModelError(f"{onnx_path}: not an ONNX protobuf ({exc})") from None
    if external:
        raise ModelError(
            f"{onnx_path}: references external data files; export the weights inside model.onnx"
        )
    return spec, data


def write_artifact(directory: Path | str, spec: ModelSpec, onnx_bytes: bytes) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / spec.onnx_file).write_bytes(onnx_bytes)
    text = json.dumps(spec.to_dict(), indent=2, sort_keys=False) + "\n"
    (directory / "model.json").write_text(text, encoding="utf-8")
    return directory

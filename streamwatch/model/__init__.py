"""Serving side of a model: check an artifact and step it on ONNX Runtime."""

from __future__ import annotations

from streamwatch.model.artifact import ModelSpec, read_artifact, write_artifact
from streamwatch.model.runtime import OnnxForecaster, load_model

__all__ = ["ModelSpec", "OnnxForecaster", "load_model", "read_artifact", "write_artifact"]

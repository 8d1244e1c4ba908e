"""streamwatch: streaming anomaly detection for many live numeric streams.

LSTM forecasters trained in PyTorch and exported to ONNX step thousands of streams at once,
each with its own (h, c); the deviation of each reading from its forecast becomes a verdict.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml's version, as installed: the one place it is set
    __version__ = version("streamwatch")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

"""streamwatch: streaming anomaly detection for many live numeric streams.

LSTM forecasters trained in PyTorch and exported to ONNX step thousands of streams at once,
each with its own (h, c); the deviation of each reading from its forecast becomes a verdict.
"""

from __future__ import annotations

__version__ = "0.1.0"

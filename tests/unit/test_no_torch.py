"""The daemon's whole path must import and run where torch cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name == "onnx":
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _NoTorch())
    """
)


def test_serving_path_runs_without_torch(model_dir: Path) -> None:
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch import was not blocked")
        import numpy as np
        from prometheus_client import CollectorRegistry
        import streamwatch.cli, streamwatch.sources.kafka, streamwatch.sinks.kafka
        from streamwatch.config import parse
        from streamwatch.daemon import Daemon
        from streamwatch.engine import Engine
        from streamwatch.metrics import Metrics
        from streamwatch.model import load_model
        from streamwatch.records import Record
        from streamwatch.scoring import Scorer
        from streamwatch.sinks.memory import MemorySink
        from streamwatch.sources.memory import MemorySource
        from streamwatch.state import StateStore
        model = load_model({str(model_dir)!r})
        cfg = parse({{"kafka": {{"bootstrap_servers": "x", "input_topics": ["in"]}}}})
        engine = Engine(model, StateStore(model.spec.state_size),
                        Scorer(0.5, 10))
        recs = [Record("in", 0, i, 0, None, b'{{"stream":"a","ts":%d,"value":%f}}' % (i, v))
                for i, v in enumerate(np.sin(np.arange(100) / 5.0))]
        source, sink = MemorySource(recs), MemorySink()
        Daemon(cfg, source, sink, engine, model.spec, Metrics(CollectorRegistry())).run_once()
        assert source.committed == {{("in", 0): 100}}, source.committed
        assert "torch" not in sys.modules
        print("ok without torch")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "ok without torch" in proc.stdout

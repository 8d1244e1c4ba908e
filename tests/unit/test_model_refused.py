"""A model that cannot be served stops check-config and run alike with exit 78 (EX_CONFIG: a
supervisor must not restart a daemon whose model file or model.path needs changing) and one
line naming the key and the reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _streamwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamwatch", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("damage", ["missing", "corrupt onnx", "bad metadata"])
def test_a_refused_model_exits_78_with_one_line(tmp_path: Path, damage: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(ROOT / "models" / "example", model)
    if damage == "missing":
        shutil.rmtree(model)
    elif damage == "corrupt onnx":
        (model / "model.onnx").write_bytes(b"\x00not an onnx graph")
    else:
        (model / "model.json").write_text("{not json")
    config = tmp_path / "c.yaml"
    config.write_text(f"input: {{source: file}}\nmodel: {{path: {model}}}\nmetrics: {{port: 0}}\n")

    checked = _streamwatch("check-config", str(config))
    assert checked.returncode == 78, checked.stderr
    assert checked.stderr.startswith(f"streamwatch: bad config {config}: model.path: model refused")
    assert len(checked.stderr.strip().splitlines()) == 1, checked.stderr

    run = _streamwatch("run", "--config", str(config))
    assert run.returncode == 78, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.path: model refused" in lines[0], run.stderr


def test_check_config_names_the_model_it_checked(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"input: {{source: file}}\nmodel: {{path: {ROOT / 'models/example'}}}\n")
    checked = _streamwatch("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "ok (input file -, model " in checked.stdout and " version " in checked.stdout

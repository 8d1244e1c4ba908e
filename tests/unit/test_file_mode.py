"""`streamwatch run` with the file source and sink: JSON lines in, verdicts out, no broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from streamwatch.codec import MessageFormat

EXAMPLE = Path(__file__).resolve().parents[2] / "models/example"


def _lines(n: int = 900, spike_at: int = 800) -> list[bytes]:
    fmt = MessageFormat()
    out = []
    for i in range(n):
        for s, level in (("a", 100.0), ("b", 5.0)):
            x = level * (1 + 0.2 * np.sin(2 * np.pi * i / 288)) + 0.001 * level * np.cos(i)
            if i == spike_at and s == "a":
                x += 50.0
            out.append(fmt.encode(s, 1.7e9 + 300.0 * i, float(x)))
    return out


def _config(tmp_path: Path, **input_extra: object) -> Path:
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in input_extra.items())
    cfg = tmp_path / "file.yaml"
    cfg.write_text(
        f'input:\n  source: file\n  path: "{tmp_path / "in.jsonl"}"\n{extra}'
        f'model:\n  path: "{EXAMPLE}"\n'
        f'outputs:\n  path: "{tmp_path / "out.jsonl"}"\n'
        f'  dead_letter_path: "{tmp_path / "dead.jsonl"}"\n'
        "metrics:\n  host: 127.0.0.1\n  port: 0\n"
    )
    return cfg


def _run(cfg: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streamwatch", "run", "--config", str(cfg)],
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def test_file_in_verdicts_out_dead_letters_aside(tmp_path: Path) -> None:
    lines = _lines()
    lines.insert(5, b"{broken")
    lines.insert(9, b'{"stream":"a","ts":1,"value":"high"}')
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    r = _run(_config(tmp_path))
    assert r.returncode == 0, r.stderr.decode()
    events = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert ("a", 1.7e9 + 300.0 * 800) in {(e["stream"], e["ts"]) for e in events}
    assert all(e["anomaly"] for e in events)
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["dead_letter"], d["line"]) for d in dead] == [("bad_json", 6), ("bad_value", 10)]
    assert dead[0]["value"] == "{broken"


def test_stdin_to_stdout_with_every_verdict(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    text = cfg.read_text().replace(f'"{tmp_path / "in.jsonl"}"', '"-"')
    text = text.replace(f'"{tmp_path / "out.jsonl"}"', '"-"')
    text = text.replace("outputs:\n", "outputs:\n  scores_topic: scores\n")
    cfg.write_text(text)
    lines = _lines(n=400)
    r = _run(cfg, stdin=b"\n".join(lines) + b"\n")
    assert r.returncode == 0, r.stderr.decode()
    out = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert len(out) == len(lines)  # every verdict (and no anomaly: nothing to flag here)
    assert {e["stream"] for e in out} == {"a", "b"}
    assert all(e["score"] == 0.0 for e in out[:100])  # warm-up


def test_fields_must_match_the_model(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b"")
    r = _run(_config(tmp_path, value_fields=["cpu", "mem"]))
    assert r.returncode == 78
    assert b"input.value_fields: model example predicts 1 value(s) (value); 2 field(s)" in r.stderr
    r = _run(_config(tmp_path, covariate_fields=["deploying"]))
    assert r.returncode == 78
    assert b"input.covariate_fields: model example takes 0 covariate(s)" in r.stderr


def test_idle_pipe_does_not_spin_and_second_sigint_forces_exit(tmp_path: Path) -> None:
    import os
    import signal
    import time

    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace(f'"{tmp_path / "in.jsonl"}"', '"-"'))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamwatch", "run", "--config", str(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(3.0)  # started; its input is open and silent
        ticks = os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{proc.pid}/stat") as f:
            before = sum(int(v) for v in f.read().rsplit(")", 1)[1].split()[11:13])
        time.sleep(2.0)
        with open(f"/proc/{proc.pid}/stat") as f:
            after = sum(int(v) for v in f.read().rsplit(")", 1)[1].split()[11:13])
        assert (after - before) / ticks < 0.5  # waiting, not spinning (< 25 % of a core)
        proc.send_signal(signal.SIGINT)  # drains: the loop ends after its current wait ...
        time.sleep(0.05)  # (two signals sent at once would merge into one)
        proc.send_signal(signal.SIGINT)  # ... unless a second interrupt forces the exit
        assert proc.wait(timeout=10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_an_envelope_the_model_cannot_give_is_warned_about(tmp_path: Path) -> None:
    """models/example predates trained ranges: scoring.envelope would silently do nothing."""
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(_lines(n=10)) + b"\n")
    cfg = _config(tmp_path)
    r = _run(cfg)
    assert r.returncode == 0 and b"scoring.envelope" not in r.stderr, r.stderr.decode()
    cfg.write_text(cfg.read_text() + "scoring:\n  envelope: 0.05\n")
    r = _run(cfg)
    assert r.returncode == 0, r.stderr.decode()
    assert b"WARNING scoring.envelope is set, but model example" in r.stderr, r.stderr.decode()
    assert b"the envelope test applies to no stream" in r.stderr

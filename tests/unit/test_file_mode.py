"""`streamwatch run` with the file source and sink: JSON lines in, verdicts out, no broker."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from support import served_port, wait_log, wait_metric, wait_ready

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


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_pipe_does_not_spin_and_second_sigint_forces_exit(tmp_path: Path) -> None:
    """Ready and waiting on a silent standard input, the daemon uses next to no CPU.  A drain
    that cannot finish (its batch's verdicts go to a standard output that nobody reads and
    that is full) holds it after a first SIGINT; a second one ends it at once, with 130."""
    cfg = _config(tmp_path)
    text = cfg.read_text().replace(f'"{tmp_path / "in.jsonl"}"', '"-"')
    text = text.replace(f'"{tmp_path / "out.jsonl"}"', '"-"')
    cfg.write_text(text.replace("outputs:\n", "outputs:\n  scores_topic: scores\n"))
    log = tmp_path / "daemon.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamwatch", "run", "--config", str(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdin is not None and proc.stdout is not None
    fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)  # full after some 15 verdicts
    try:
        port = served_port(log, timeout=60, proc=proc)
        wait_ready(port, timeout=60)  # started: reading its input, which is open and silent
        before = _cpu_seconds(proc.pid)
        time.sleep(2.0)  # the window measured
        assert _cpu_seconds(proc.pid) - before < 0.5  # waiting, not spinning (< 25 % of a core)

        # 300 readings, 18 kB: one write into the empty input pipe, read whole as one batch,
        # whose 78 kB of verdicts cannot all go into the full output: it is held writing them
        lines = _lines(n=150)
        proc.stdin.write(b"\n".join(lines) + b"\n")
        proc.stdin.flush()
        wait_metric(port, "streamwatch_records_consumed_total", len(lines), timeout=60)
        proc.send_signal(signal.SIGINT)  # drains: the batch in hand must be written first ...
        wait_log(log, "SIGINT: draining", timeout=30, proc=proc)
        assert proc.poll() is None  # ... which it cannot be
        proc.send_signal(signal.SIGINT)  # ... unless a second interrupt forces the exit
        assert proc.wait(timeout=10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert "second interrupt: exiting now without draining" in log.read_text(), log.read_text()


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

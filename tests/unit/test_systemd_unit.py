"""deploy/systemd/streamwatch.service: systemd's own rating of its sandbox, and the daemon run
under the parts of that sandbox that could break ONNX Runtime or Python (the system call
filter and MemoryDenyWriteExecute=), rebuilt here with libseccomp as systemd builds them."""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import RUNNER

from streamwatch.codec import MessageFormat

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "streamwatch.service"
EXAMPLE = ROOT / "models" / "example"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


def _service() -> dict[str, list[str]]:
    section, out = "", dict[str, list[str]]()
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif line and not line.startswith(("#", ";")) and section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@needs_analyze
def test_systemd_analyze_rates_the_unit_exposure_below_2() -> None:
    run = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in run.stderr and "unrecognized" in run.stderr:
        pytest.skip("systemd-analyze older than 250: no --offline")
    found = re.search(r"Overall exposure level for streamwatch\.service: (\d+\.\d+)", run.stdout)
    assert found, run.stdout + run.stderr
    assert float(found[1]) < 2.0, run.stdout


# -- the system call filter and MemoryDenyWriteExecute= -------------------------------------------

# Installs, as systemd does before it executes ExecStart=, with no_new_privs: (1) an allow list
# of system calls, every other one killing the process (stricter than the unit's
# SystemCallErrorNumber=EPERM: a call the daemon needs cannot go unnoticed), and (2) systemd's
# MemoryDenyWriteExecute= rules (src/shared/seccomp-util.c): mmap writable and executable at
# once, mprotect/pkey_mprotect adding execute, shmat with SHM_EXEC fail with EPERM.  Then it
# executes argv[3:].
SANDBOX = r"""
import ctypes, json, os, sys
lib = ctypes.CDLL(sys.argv[1], use_errno=True)
allowed, mdwe = json.loads(sys.argv[2])
KILL, ALLOW, EPERM = 0x80000000, 0x7FFF0000, 0x00050000 | 1
class Cmp(ctypes.Structure):  # struct scmp_arg_cmp; op 7: SCMP_CMP_MASKED_EQ
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                       ctypes.c_uint, ctypes.POINTER(Cmp)]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
def rule(ctx, action, name, cmp=None):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return  # not a system call of this architecture
    n = 1 if cmp else 0
    r = lib.seccomp_rule_add_array(ctx, action, nr, n, ctypes.byref(cmp) if cmp else None)
    assert r == 0, (name, r)
if mdwe:  # first: once the allow list is in force, seccomp() itself is not allowed
    ctx = lib.seccomp_init(ALLOW)
    WX, X, SHM_EXEC = 0x2 | 0x4, 0x4, 0o100000
    for name, m in (("mmap", WX), ("mmap2", WX), ("mprotect", X), ("pkey_mprotect", X),
                    ("shmat", SHM_EXEC)):
        rule(ctx, EPERM, name, Cmp(2, 7, m, m))
    assert lib.seccomp_load(ctx) == 0
ctx = lib.seccomp_init(KILL)
for name in allowed:
    rule(ctx, ALLOW, name)
assert lib.seccomp_load(ctx) == 0
os.execv(sys.argv[3], sys.argv[3:])
"""


def _groups() -> dict[str, list[str]]:
    """systemd's named system call sets, as this systemd-analyze lists them."""
    text = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif not line.strip():
            current = None
        elif current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def _expand(items: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for item in items:
        out |= _expand(groups[item], groups) if item.startswith("@") else {item}
    return out


def _allowed() -> set[str]:
    """The unit's SystemCallFilter= lines as systemd reads them: the first (no ~) makes an
    allow list, and in order, each ~ line takes its calls out of it, each other one adds."""
    groups = _groups()
    lines = _service()["SystemCallFilter"]
    assert not lines[0].startswith("~"), "expected an allow list first"
    allowed: set[str] = set()
    for line in lines:
        if line.startswith("~"):
            allowed -= _expand(line[1:].split(), groups)
        else:
            allowed |= _expand(line.split(), groups)
    return allowed


@pytest.fixture
def sandbox() -> list[str]:
    """The command prefix that runs argv under the unit's filter and MDWE rules."""
    lib = ctypes.util.find_library("seccomp")
    if lib is None or shutil.which("systemd-analyze") is None:
        pytest.skip("needs libseccomp and systemd-analyze (for the unit's system call sets)")
    mdwe = _service().get("MemoryDenyWriteExecute") == ["yes"]
    return [sys.executable, "-c", SANDBOX, lib, json.dumps([sorted(_allowed()), mdwe])]


def test_the_sandbox_rebuilt_here_does_bite(sandbox: list[str]) -> None:
    """The filters are really in force: memory both writable and executable is refused, and a
    call the unit filters out (@resources: sched_setaffinity) kills the process."""
    probe = (
        "import mmap\n"
        "try:\n    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n    print('refused')\n"
    )
    run = subprocess.run([*sandbox, sys.executable, "-c", probe], capture_output=True, timeout=60)
    assert run.returncode == 0 and run.stdout == b"refused\n", run.stderr
    run = subprocess.run(
        [*sandbox, sys.executable, "-c", "import os; os.sched_setaffinity(0, {0})"],
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == -31, run  # SIGSYS


def test_the_daemon_scores_under_the_units_system_call_filter_and_mdwe(
    sandbox: list[str], tmp_path: Path
) -> None:
    """ONNX Runtime loads and steps the model, numpy and the HTTP thread run, the file is
    scored and the daemon exits 0, with every system call outside the unit's list fatal."""
    fmt = MessageFormat()
    lines = [fmt.encode(s, 1.7e9 + 300.0 * i, 10.0 + i % 5) for i in range(50) for s in "ab"]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    cfg = tmp_path / "file.yaml"
    cfg.write_text(
        f'input:\n  source: file\n  path: "{tmp_path / "in.jsonl"}"\n'
        f'model:\n  path: "{EXAMPLE}"\n  threads: 2\n'
        f'outputs:\n  scores_topic: scores\n  path: "{tmp_path / "out.jsonl"}"\n'
        f'  dead_letter_path: "{tmp_path / "dead.jsonl"}"\n'
        "metrics:\n  host: 127.0.0.1\n  port: 0\n"
    )
    # As under the unit (HOME=/nonexistent, a read-only file system), HOME cannot be written
    # to: ONNX Runtime 1.32 then keeps its telemetry device id in memory, where it would
    # otherwise create an SQLite file there (and as root, fchown its journal: @chown).
    home = tmp_path / "home"
    home.touch()
    run = subprocess.run(
        [*sandbox, sys.executable, "-c", RUNNER, str(cfg)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "HOME": str(home)},
    )
    assert run.returncode == 0, run.stderr.decode()
    verdicts = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(verdicts) == len(lines)


def test_the_unit_waits_on_the_daemons_notifications_and_outlasts_its_slowest_turn() -> None:
    from streamwatch import daemon

    unit = _service()
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert "AF_UNIX" in unit["RestrictAddressFamilies"][0].split()  # the notify socket
    # a healthy loop turns at least every flush or backoff: the watchdog allows three
    watchdog = float(unit["WatchdogSec"][0])
    assert watchdog >= 3 * max(daemon.FLUSH_SECONDS, daemon.BACKOFF_SECONDS[1])
    # the stop timeout covers a drain's flush; checkpoints ask for more as they need it
    assert float(unit["TimeoutStopSec"][0]) > daemon.RETRY_FLUSH_SECONDS + daemon.EXTEND_EVERY
    assert daemon.EXTEND_SECONDS > 2 * daemon.EXTEND_EVERY
    text = UNIT.read_text(encoding="utf-8")
    assert "\nStartLimitIntervalSec=0\n" in text  # restarts through any broker outage
    assert "StartLimitBurst" not in text

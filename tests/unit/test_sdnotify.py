"""The systemd notification protocol: the module on its own, the run loop in-process, and the
real daemon as systemd would run it (Type=notify, WatchdogSec=), on sockets of the tests' own."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RUNNER, memory_daemon

from streamwatch import checkpoint, sdnotify
from streamwatch import daemon as daemon_module
from streamwatch.codec import MessageFormat
from streamwatch.daemon import Daemon
from streamwatch.records import Record

EXAMPLE = Path(__file__).resolve().parents[2] / "models/example"
Make = Callable[..., sdnotify.Notifier]  # the notifier fixture: Notifier.from_env's arguments


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound at a short path (a Unix socket path holds 107 bytes at most:
    pytest's tmp_path can be longer) and that path."""
    with tempfile.TemporaryDirectory(prefix="sw-") as where:
        path = os.path.join(where, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        try:
            yield sock, path
        finally:
            sock.close()


@pytest.fixture
def abstract() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace and its NOTIFY_SOCKET spelling (@name)."""
    name = f"streamwatch-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


@pytest.fixture
def notifier() -> Iterator[Make]:
    """Notifier.from_env, each one closed at the end (its socket would warn otherwise)."""
    made: list[sdnotify.Notifier] = []

    def make(*args: Any, **kwargs: Any) -> sdnotify.Notifier:
        made.append(sdnotify.Notifier.from_env(*args, **kwargs))
        return made[-1]

    yield make
    for n in made:
        n.close()


def _received(sock: socket.socket) -> list[str]:
    """What is queued on ``sock`` now.  A datagram to a Unix socket is queued by the time
    sendto returns: nothing to wait for."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.setblocking(True)


def _ticks(step: float) -> itertools.count[float]:
    return itertools.count(0.0, step)


# -- the module ----------------------------------------------------------------------------------


def test_without_notify_socket_every_call_does_nothing(notifier: Make) -> None:
    n = notifier({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.watchdog_seconds is None
    assert not any([n.ready("x"), n.watchdog(), n.stopping(), n.status("x"), n.extend_timeout(5)])
    assert n._sock is None  # no socket made


def test_datagrams_reach_a_socket_at_a_path(
    listener: tuple[socket.socket, str], notifier: Make
) -> None:
    sock, path = listener
    n = notifier({"NOTIFY_SOCKET": path})
    assert n.ready("ready: consuming readings")
    assert n.status("two\nlines")  # one STATUS line: a newline would start another key
    assert n.extend_timeout(30)
    assert n.stopping()
    assert _received(sock) == [
        "READY=1\nSTATUS=ready: consuming readings",
        "STATUS=two lines",
        "EXTEND_TIMEOUT_USEC=30000000",
        "STOPPING=1",
    ]


def test_an_at_sign_names_the_abstract_namespace(
    abstract: tuple[socket.socket, str], notifier: Make
) -> None:
    sock, name = abstract
    assert name.startswith("@")
    n = notifier({"NOTIFY_SOCKET": name})
    assert n.ready()
    assert _received(sock) == ["READY=1"]


def test_watchdog_pings_at_most_every_half_interval(
    abstract: tuple[socket.socket, str], notifier: Make
) -> None:
    sock, name = abstract
    clock = iter([0.0, 4.9, 5.0, 9.0, 10.1])
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "10000000"}  # 10 s: a ping every 5 s
    n = notifier(env, clock=lambda: next(clock))
    assert n.watchdog_seconds == 10.0
    assert [n.watchdog() for _ in range(5)] == [True, False, True, False, True]
    assert _received(sock) == ["WATCHDOG=1"] * 3


def test_the_watchdog_is_this_process_only_if_watchdog_pid_names_it(
    abstract: tuple[socket.socket, str],
    notifier: Make,
) -> None:
    sock, name = abstract
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}
    other = notifier(env, pid=4243)
    assert other.watchdog_seconds is None and not other.watchdog()
    assert other.ready()  # notifications other than the watchdog's still go
    assert _received(sock) == ["READY=1"]
    mine = notifier(env, pid=4242)
    assert mine.watchdog_seconds == 1.0 and mine.watchdog()
    env.pop("WATCHDOG_PID")
    assert notifier(env).watchdog()  # unset: ours
    assert _received(sock) == ["WATCHDOG=1", "WATCHDOG=1"]
    env["WATCHDOG_PID"] = str(os.getpid())
    assert notifier(env).watchdog_seconds == 1.0  # the default pid: ours


def test_malformed_variables_turn_the_watchdog_off_without_raising(
    abstract: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture, notifier: Make
) -> None:
    _, name = abstract
    for env in ({"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "me"}):
        n = notifier({"NOTIFY_SOCKET": name, **env})
        assert n.enabled and n.watchdog_seconds is None
    assert "WATCHDOG_USEC or WATCHDOG_PID is not a number" in caplog.text
    for address in ("vsock:2:1234", "relative/path"):
        assert not notifier({"NOTIFY_SOCKET": address}).enabled


def test_a_send_that_fails_is_reported_once_and_never_raises(
    caplog: pytest.LogCaptureFixture,
    notifier: Make,
) -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "1000000"}
    n = notifier(env, clock=_ticks(1.0).__next__)
    with caplog.at_level(logging.DEBUG, logger="streamwatch"):
        assert not n.ready()
        assert not n.watchdog()
        assert not n.watchdog()  # a ping that did not go is tried again at the next turn
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warnings] == [
        "systemd notification READY not sent"
    ]
    assert sum("WATCHDOG not sent" in r.getMessage() for r in caplog.records) == 2


# -- the run loop, in-process --------------------------------------------------------------------


def _records(n_streams: int = 3, length: int = 40) -> list[Record]:
    fmt = MessageFormat()
    return [
        Record(
            "in",
            0,
            i * n_streams + s,
            1_700_000_000_000 + i * 300_000,
            None,
            fmt.encode(f"s{s}", 1.7e9 + i * 300.0, float(s + i % 7)),
        )
        for i in range(length)
        for s in range(n_streams)
    ]


def _notifying_daemon(
    records: list[Record], notifier: sdnotify.Notifier, where: Path | None
) -> Daemon:
    state: dict[str, object] = {} if where is None else {"checkpoint_dir": str(where)}
    return memory_daemon(EXAMPLE, records, 30, notifier=notifier, state=state)[0]


def test_the_loop_says_ready_then_pings_then_stopping_then_asks_time_for_checkpoints(
    abstract: tuple[socket.socket, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    notifier: Make,
) -> None:
    """A final checkpoint that takes a while: EXTEND_TIMEOUT_USEC goes out, and again every
    EXTEND_EVERY, until it is written.  The writer holds its round until two have arrived."""
    sock, name = abstract
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000"}
    told = notifier(env, clock=_ticks(1.0).__next__)  # every turn pings
    monkeypatch.setattr(daemon_module, "EXTEND_EVERY", 0.05)
    release = threading.Event()
    write = checkpoint.Checkpoints.write

    def held_write(
        self: checkpoint.Checkpoints, job: checkpoint.Job, data: bytes | None = None
    ) -> int:
        assert release.wait(30), "the daemon never asked for more time"
        return write(self, job, data)

    monkeypatch.setattr(checkpoint.Checkpoints, "write", held_write)
    got: list[str] = []

    def watch() -> None:
        sock.settimeout(30)
        while sum(m.startswith("EXTEND_TIMEOUT_USEC=") for m in got) < 3:
            got.append(sock.recv(4096).decode())
        release.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    records = _records()
    daemon = _notifying_daemon(records, told, tmp_path / "state")
    daemon.run(max_polls=len(records) // 30 + 2)
    watcher.join(30)
    assert release.is_set()
    kinds = [m.split("\n")[0].split("=")[0] for m in got]
    assert kinds[0] == "READY" and got[0] == "READY=1\nSTATUS=ready: consuming in"
    stop = kinds.index("STOPPING")
    assert set(kinds[1:stop]) == {"WATCHDOG"} and stop >= 3  # a ping at every turn here
    assert got[stop] == f"STOPPING=1\nSTATUS=draining after {daemon.batches} batches"
    assert got[stop + 1] == "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=writing the checkpoints"
    assert got[stop + 2 :] == ["EXTEND_TIMEOUT_USEC=30000000"] * 2
    assert checkpoint.segments(tmp_path / "state" / "in" / "0")  # and it was written


def test_a_loop_waiting_out_a_broker_outage_still_feeds_the_watchdog(
    abstract: tuple[socket.socket, str],
    notifier: Make,
) -> None:
    """The backoff between retries is the loop alive (awake to a stop, retrying): it pings.
    A loop stuck inside a call would not, and systemd would restart it."""
    sock, name = abstract
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000"}
    daemon = _notifying_daemon(_records(), notifier(env, clock=_ticks(1.0).__next__), None)
    daemon.running = True
    daemon._wait(0.25)  # not ready yet: systemd's watchdog is not armed before READY=1
    assert _received(sock) == []
    daemon._told_ready = True
    daemon._wait(0.25)  # a beat every 0.1 s
    assert _received(sock) == ["WATCHDOG=1"] * 3


# -- the real daemon ---------------------------------------------------------------------------


def test_the_daemon_tells_systemd_ready_watchdog_stopping_in_order(
    abstract: tuple[socket.socket, str], tmp_path: Path
) -> None:
    """`streamwatch run` as systemd runs it: NOTIFY_SOCKET and WATCHDOG_USEC in its
    environment, reading a pipe that stays open; stopped by SIGTERM."""
    sock, name = abstract
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    # held open read-write: the daemon's open does not wait for a writer, and it never sees EOF
    held = os.open(fifo, os.O_RDWR)
    cfg = tmp_path / "file.yaml"
    cfg.write_text(
        f'input:\n  source: file\n  path: "{fifo}"\n'
        f'model:\n  path: "{EXAMPLE}"\n'
        f'outputs:\n  path: "{tmp_path / "out.jsonl"}"\n'
        f'  dead_letter_path: "{tmp_path / "dead.jsonl"}"\n'
        "metrics:\n  host: 127.0.0.1\n  port: 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env.update(NOTIFY_SOCKET=name, WATCHDOG_USEC="1000000")  # 1 s: a ping every 0.5 s
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(cfg)], stdout=out, stderr=out, env=env
        )
    got: list[str] = []

    def until(kind: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(m.startswith(kind) for m in got):
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, f"no {kind}: {got} {log.read_text()}"
            sock.settimeout(min(left, 1.0))  # and look at the process again each second
            with contextlib.suppress(TimeoutError):
                got.append(sock.recv(4096).decode())

    try:
        fmt = MessageFormat()
        os.write(held, b"".join(fmt.encode("a", 1.7e9 + i, 1.0) + b"\n" for i in range(5)))
        until("READY=1", 60)
        until("WATCHDOG=1", 10)
        proc.send_signal(signal.SIGTERM)
        until("STOPPING=1", 20)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(held)
    got += _received(sock)
    kinds = [m.split("\n")[0] for m in got]
    ready, stopping = kinds.index("READY=1"), kinds.index("STOPPING=1")
    assert ready == 0, kinds  # no ping before READY=1: systemd would not count it yet
    assert ready < kinds.index("WATCHDOG=1") < stopping == len(kinds) - 1, kinds
    assert got[ready] == f"READY=1\nSTATUS=ready: reading {fifo}"
    assert (tmp_path / "out.jsonl").exists()

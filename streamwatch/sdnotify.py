"""The systemd notification protocol (``sd_notify(3)``) without libsystemd: one datagram of
``KEY=value`` lines to the Unix socket that ``$NOTIFY_SOCKET`` names (a leading ``@`` names
one in the abstract namespace).

Without ``$NOTIFY_SOCKET`` (not started by systemd, or ``Type=simple``) every call does
nothing.  Nothing here raises into the run loop: a failed send is logged (a warning the first
time, then at DEBUG) and reported as False.

>>> n = Notifier.from_env({})
>>> n.enabled, n.watchdog_seconds, n.ready("ready")
(False, None, False)
>>> Notifier.from_env({"NOTIFY_SOCKET": "@sw", "WATCHDOG_USEC": "30000000"}).watchdog_seconds
30.0
>>> env = {"NOTIFY_SOCKET": "@sw", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
>>> Notifier.from_env(env, pid=2).watchdog_seconds is None  # the watchdog is another's
True
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("streamwatch")

SEND_TIMEOUT = 1.0  # seconds a datagram may wait for room in the manager's queue


class Notifier:
    """Sends notifications to ``address`` (None: does nothing).  ``watchdog_usec`` is
    ``$WATCHDOG_USEC`` (None: no watchdog); ``watchdog()`` pings at most every half of it."""

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address: str | bytes | None = None
        if address and address[0] == "@":
            self._address = b"\0" + address[1:].encode()  # abstract: no file behind it
        elif address and address[0] == "/":
            self._address = address
        elif address:  # e.g. "vsock:2:1234" (systemd 253+): not a Unix socket
            log.warning("NOTIFY_SOCKET=%s is not a Unix socket: not notifying systemd", address)
        self.watchdog_seconds = (
            watchdog_usec / 1e6 if self._address is not None and watchdog_usec else None
        )
        self._clock = clock
        self._last_ping: float | None = None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] = os.environ,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Notifier:
        """From ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` (the watchdog is
        this process's only when that names it, or is unset)."""
        watchdog: int | None = None
        try:
            usec = int(environ.get("WATCHDOG_USEC", "0"))
            owner = environ.get("WATCHDOG_PID")
            mine = owner is None or int(owner) == (os.getpid() if pid is None else pid)
            watchdog = usec if usec > 0 and mine else None
        except ValueError:
            log.warning("WATCHDOG_USEC or WATCHDOG_PID is not a number: no watchdog pings")
        return cls(environ.get("NOTIFY_SOCKET") or None, watchdog, clock)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=value`` each) as one datagram; whether it went."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.settimeout(SEND_TIMEOUT)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "systemd notification %s not sent: %s", lines[0].split("=")[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status(text))

    def extend_timeout(self, seconds: float) -> bool:
        """The current state (start, stop) needs at least ``seconds`` more from now."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def watchdog(self) -> bool:
        """Ping the watchdog if it is on and half its interval has passed since the last
        ping that went; whether one went now."""
        if self.watchdog_seconds is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_seconds / 2:
            return False
        if not self.notify("WATCHDOG=1"):
            return False  # not marked as sent: the next turn tries again
        self._last_ping = now
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str | None) -> list[str]:
    # one line: a newline would start another KEY=value
    return [] if text is None else ["STATUS=" + " ".join(text.splitlines())]

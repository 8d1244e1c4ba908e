"""The daemon's HTTP edge: ``/metrics``, ``/healthz`` and ``/readyz``.

- ``/healthz`` (liveness): 200 while the run loop has turned within ``stale_after`` seconds.
  It never asks whether the broker is reachable: restarting a pod does not fix a broker, and
  a loop waiting on a broker still turns.
- ``/readyz`` (readiness): 200 once the model is loaded, partitions are assigned and the state
  is ready; the body says which is missing otherwise.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@dataclass
class Health:
    """Written by the run loop, read by the HTTP thread (single assignments: no lock needed)."""

    stale_after: float = 60.0
    clock: Callable[[], float] = time.monotonic
    last_loop: float | None = None
    model_loaded: bool = False
    partitions_assigned: bool = False
    state_ready: bool = False
    detail: dict[str, str] = field(default_factory=dict)

    def beat(self) -> None:
        self.last_loop = self.clock()

    def live(self) -> tuple[bool, str]:
        if self.last_loop is None:
            return True, "starting"  # not yet looping is not dead: readiness covers it
        age = self.clock() - self.last_loop
        ok = age <= self.stale_after
        return ok, f"loop ran {age:.1f}s ago" + ("" if ok else f" (> {self.stale_after:g}s)")

    def ready(self) -> tuple[bool, str]:
        missing = [
            name
            for name, ok in (
                ("model", self.model_loaded),
                ("partitions", self.partitions_assigned),
                ("state", self.state_ready),
            )
            if not ok
        ]
        return not missing, "ready" if not missing else "waiting for " + ", ".join(missing)


def serve(host: str, port: int, registry: CollectorRegistry, health: Health) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; ``server.shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = health.live() if path == "/healthz" else health.ready()
                body = json.dumps({"ok": ok, "status": why}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the daemon's own log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="streamwatch-http", daemon=True).start()
    return server

"""Per-stream readings, forecasts and scores to a Prometheus remote-write receiver.

Prometheus, VictoriaMetrics, Mimir and the like take remote write 1.0: an HTTP POST of a
snappy-compressed protobuf ``WriteRequest`` (``promwire.py``, ``snappy.py``).  Each sent
reading of stream ``s`` becomes, at the reading's own timestamp::

    streamwatch_stream_reading{stream="s", field="value"}         the value read
    streamwatch_stream_forecast{stream="s", field="value"}        the forecast it was scored on
    streamwatch_stream_forecast_lower / _upper{...}               the band around it (band)
    streamwatch_stream_score{stream="s"}                          the score, in [0, 1]
    streamwatch_stream_anomaly{stream="s"}                        1 flagged, 0 not

plus the configured ``labels``, with one ``field`` per value field of the model.

Best effort, off the run loop's path: ``offer`` picks the readings to send from a batch of
verdicts (the streams configured, every n-th reading and every flagged one, up to
``max_streams`` streams) and queues them; a thread of its own encodes, compresses and sends
them, retrying with backoff on 5xx, 429 and no answer for ``retry_seconds``, and dropping a
request on any other 4xx.  What does not fit the queue is dropped.  Every sample not sent is
counted by reason (``streamwatch_remote_write_dropped_samples_total``); ``offer`` never blocks
and never raises: the batch's offsets are committed whatever the receiver does.  The sender
shares the interpreter with the run loop: about 10 us of CPU a sample (encoding and snappy in
Python), so 1000 streams sent once a second cost it some 6 % of a core.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import logging
import re
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from statistics import NormalDist
from typing import Any

import numpy as np

from streamwatch import __version__, promwire, snappy
from streamwatch.config import RemoteWriteConfig
from streamwatch.engine import Verdicts
from streamwatch.metrics import Metrics

log = logging.getLogger("streamwatch")

READING = "streamwatch_stream_reading"
FORECAST = "streamwatch_stream_forecast"
LOWER = "streamwatch_stream_forecast_lower"
UPPER = "streamwatch_stream_forecast_upper"
SCORE = "streamwatch_stream_score"
ANOMALY = "streamwatch_stream_anomaly"
SERIES = (READING, FORECAST, LOWER, UPPER, SCORE, ANOMALY)

IDLE_SECONDS = 3600.0  # a stream not offered for this long gives its place up ...
SWEEP_SECONDS = 60.0  # ... looked for at most this often, when a new stream finds none
BACKOFF_SECONDS = (0.5, 5.0)  # the wait after a failed send: first, and at most (doubling)
LOG_SECONDS = 60.0  # while sends keep failing, say so this often
_pack = struct.Struct("<d").pack
_MATCH_CACHE = 100_000  # stream ids whose selection is remembered (then forgotten, all)
_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": f"streamwatch/{__version__}",
}


class Selector:
    """Which stream ids are sent: those equal to one of ``patterns`` or matching it as a glob
    (``*``, ``?``, ``[...]``); every id where there are none.

    >>> pick = Selector(("pump-1", "host-*.cpu"))
    >>> pick("pump-1"), pick("host-7.cpu"), pick("host-7.mem"), Selector(())("any")
    (True, True, False, True)
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.every = not patterns
        globs = [p for p in patterns if any(c in p for c in "*?[")]
        self.exact = frozenset(p for p in patterns if p not in globs)
        self.glob = re.compile("|".join(fnmatch.translate(p) for p in globs)) if globs else None

    def __call__(self, stream: str) -> bool:
        if self.every or stream in self.exact:
            return True
        return self.glob is not None and self.glob.match(stream) is not None


@dataclass
class Chunk:
    """Readings picked from one batch, to be sent: row i is stream ``streams[i]`` at
    ``stamps[i]`` (ms); ``samples[i]`` how many samples it makes (undefined numbers, a stream's
    first forecast, are not sent)."""

    streams: list[str]
    stamps: list[int]
    values: np.ndarray  # (k, targets)
    prediction: np.ndarray  # (k, targets)
    lower: np.ndarray  # (k, targets)
    upper: np.ndarray  # (k, targets)
    score: np.ndarray  # (k,)
    anomaly: np.ndarray  # (k,) bool
    samples: np.ndarray  # (k,) ints

    def take(self, n: int) -> Chunk:
        """The first ``n`` rows, which this chunk gives up."""
        names = [f.name for f in dataclasses.fields(self)]
        head = Chunk(*(getattr(self, f)[:n] for f in names))
        for f in names:
            setattr(self, f, getattr(self, f)[n:])
        return head


def encode(chunks: Sequence[Chunk], fields: Sequence[str], extra: dict[str, str]) -> bytes:
    """A WriteRequest of ``chunks``' readings: one TimeSeries per stream and series, its
    samples in the order given (each stream's ascending).

    >>> c = Chunk(["s"], [1000], np.array([[2.0]]), np.array([[np.nan]]), np.array([[np.nan]]),
    ...           np.array([[np.nan]]), np.array([0.0]), np.array([False]), np.array([3]))
    >>> for names, samples in promwire.parse_write_request(encode([c], ["value"], {"job": "sw"})):
    ...     print(sorted(names.values()), samples)
    ['s', 'streamwatch_stream_reading', 'sw', 'value'] [(2.0, 1000)]
    ['s', 'streamwatch_stream_score', 'sw'] [(0.0, 1000)]
    ['s', 'streamwatch_stream_anomaly', 'sw'] [(0.0, 1000)]
    """
    series: dict[tuple[str, int, int], list[bytes]] = {}
    n_fields = len(fields)
    for c in chunks:
        per_field = (c.values, c.prediction, c.lower, c.upper)
        finite = [np.isfinite(a).tolist() for a in per_field]
        numbers = [a.tolist() for a in per_field]
        scores, flags = c.score.tolist(), c.anomaly.tolist()
        for r, (stream, t) in enumerate(zip(c.streams, c.stamps, strict=True)):
            # a reading's samples differ only in their value: the rest is made once
            head, tail = promwire.sample_parts(t)
            for k in range(4):
                ok, row = finite[k][r], numbers[k][r]
                for f in range(n_fields):
                    if ok[f]:
                        key = (stream, k, f)
                        got = series.get(key)
                        if got is None:
                            got = series[key] = []
                        got.append(head + _pack(row[f]) + tail)
            for k, value in ((4, scores[r]), (5, 1.0 if flags[r] else 0.0)):
                key = (stream, k, 0)
                got = series.get(key)
                if got is None:
                    got = series[key] = []
                got.append(head + _pack(value) + tail)
    out = []
    for (stream, k, f), samples in series.items():
        names = {**extra, "__name__": SERIES[k], "stream": stream}
        if k < 4:
            names["field"] = fields[f]
        out.append(promwire.timeseries(promwire.labels(names), samples))
    return promwire.write_request(out)


class RemoteWrite:
    """The remote-write output: ``offer`` on the run loop's thread, sends on its own.

    ``fields``: the model's value fields, in order (one ``field`` label each).  ``clock``:
    monotonic seconds (places given up, retries, the flush interval).  ``backoff``: the wait
    after a failed send, first and at most."""

    def __init__(
        self,
        cfg: RemoteWriteConfig,
        fields: Sequence[str],
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        backoff: tuple[float, float] = BACKOFF_SECONDS,
    ) -> None:
        self.cfg, self.fields, self.metrics, self.clock = cfg, tuple(fields), metrics, clock
        self.backoff = backoff
        self.labels = {str(k): str(v) for k, v in cfg.labels.items()}
        self.z = NormalDist().inv_cdf(0.5 + cfg.band / 2)  # the band's half-width, in scales
        self.per_reading = 4 * len(self.fields) + 2  # samples a reading makes, at most
        self.select = Selector(cfg.streams)
        self._matched: dict[str, bool] = {}
        # places: stream -> slot; per slot its readings offered, last timestamp sent, last seen
        self._slots: dict[str, int] = {}
        self._names: list[str | None] = []
        self._counts: list[int] = []
        self._last: list[int] = []
        self._seen: list[float] = []
        self._free: list[int] = []
        self._swept = clock()
        # the queue, shared with the sender thread
        self._cond = threading.Condition()
        self._queue: collections.deque[Chunk] = collections.deque()
        self._queued = 0  # samples
        self._closing = False
        self._abort = threading.Event()  # set when close() stops waiting: give up now
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None
        self._failing_logged = 0.0
        self._bugs = 0
        self._context = cfg.ssl_context()

    # -- the run loop's side -----------------------------------------------------------------

    def offer(
        self,
        streams: Sequence[str],
        stamps: Sequence[float],
        values: Any,
        verdicts: Verdicts,
        scored: np.ndarray,
    ) -> None:
        """Queue what is to be sent of one batch: ``streams``, ``stamps`` (epoch seconds) and
        ``values`` (one row a reading) aligned with ``verdicts``; ``scored`` (bool) marks the
        readings that have a verdict to send.  Never blocks, never raises."""
        try:
            self._offer(streams, stamps, values, verdicts, scored)
        except Exception:  # a bug here must not stop the scoring
            self._bugs += 1
            n = int(np.count_nonzero(scored)) if isinstance(scored, np.ndarray) else 0
            self.metrics.rw_dropped.labels(reason="error").inc(self.per_reading * n)
            if self._bugs == 1:
                log.exception("remote write: a batch not sent (further such errors not logged)")

    def _offer(
        self,
        streams: Sequence[str],
        stamps: Sequence[float],
        values: Any,
        verdicts: Verdicts,
        scored: np.ndarray,
    ) -> None:
        now = self.clock()
        every = self.cfg.every
        slots, counts, last, seen = self._slots, self._counts, self._last, self._seen
        picked: list[int] = []
        picked_ms: list[int] = []
        over = late = 0
        flags = verdicts.anomaly.tolist() if every > 1 else None
        for j in np.flatnonzero(scored).tolist():
            stream = streams[j]
            slot = slots.get(stream)
            if slot is None:
                slot = self._admit(stream, now)
                if slot < 0:
                    over += slot == -2
                    continue
            seen[slot] = now
            n = counts[slot]
            counts[slot] = n + 1
            if n % every and not (flags and flags[j]):  # a flagged reading always goes
                continue
            t = round(stamps[j] * 1000.0)
            if t <= last[slot]:  # the receiver refuses it, and the whole request with it
                late += 1
                continue
            last[slot] = t
            picked.append(j)
            picked_ms.append(t)
        if over:
            self.metrics.rw_dropped.labels(reason="max_streams").inc(over * self.per_reading)
        if late:
            self.metrics.rw_dropped.labels(reason="out_of_order").inc(late * self.per_reading)
        if not picked:
            return
        rows = np.asarray(picked, np.intp)
        x = np.asarray([values[j] for j in picked], np.float64).reshape(len(picked), -1)
        prediction, scale = verdicts.prediction[rows], verdicts.scale[rows]
        half = self.z * scale
        forecast_ok = np.isfinite(prediction)
        band_ok = forecast_ok & np.isfinite(half)
        samples = 2 + np.isfinite(x).sum(1) + forecast_ok.sum(1) + 2 * band_ok.sum(1)
        chunk = Chunk(
            [streams[j] for j in picked],
            picked_ms,
            x,
            prediction,
            prediction - half,
            prediction + half,
            verdicts.score[rows],
            verdicts.anomaly[rows],
            samples,
        )
        self._enqueue(chunk, int(samples.sum()))

    def _admit(self, stream: str, now: float) -> int:
        """A place for a stream not sent yet: its slot; -1 not selected, -2 none left."""
        matched = self._matched.get(stream)
        if matched is None:
            if len(self._matched) >= _MATCH_CACHE:
                self._matched.clear()
            matched = self._matched[stream] = self.select(stream)
        if not matched:
            return -1
        if not self._free and len(self._names) >= self.cfg.max_streams:
            if now - self._swept < SWEEP_SECONDS:
                return -2
            self._sweep(now)
            if not self._free:
                return -2
        if self._free:
            slot = self._free.pop()
            self._names[slot] = stream
            self._counts[slot], self._last[slot] = 0, -(1 << 62)
        else:
            slot = len(self._names)
            self._names.append(stream)
            self._counts.append(0)
            self._last.append(-(1 << 62))
            self._seen.append(now)
        self._slots[stream] = slot
        self.metrics.rw_streams.set(len(self._slots))
        return slot

    def _sweep(self, now: float) -> None:
        """Give up the places of streams not offered for IDLE_SECONDS."""
        self._swept = now
        for slot, name in enumerate(self._names):
            if name is not None and now - self._seen[slot] >= IDLE_SECONDS:
                del self._slots[name]
                self._names[slot] = None
                self._free.append(slot)
        self.metrics.rw_streams.set(len(self._slots))

    def _enqueue(self, chunk: Chunk, samples: int) -> None:
        with self._cond:
            if self._closing or self._queued + samples > self.cfg.queue_samples:
                self.metrics.rw_dropped.labels(reason="queue_full").inc(samples)
                return
            self._queue.append(chunk)
            self._queued += samples
            self.metrics.rw_queue.set(self._queued)
            if self._queued >= self.cfg.max_samples_per_send:
                self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="streamwatch-remote-write", daemon=True
            )
            self._thread.start()

    def close(self, timeout_s: float | None = None) -> None:
        """Send what is queued, for ``timeout_s`` at most (by default the config's
        ``timeout_seconds``), then stop; what is left is dropped and counted."""
        timeout_s = self.cfg.timeout_seconds if timeout_s is None else timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            self._abort.set()  # a send in flight is abandoned at its next try
            thread.join(1.0)
        with self._cond:
            left, self._queued = self._queued, 0
            self._queue.clear()
            self.metrics.rw_queue.set(0)
        if left:
            self.metrics.rw_dropped.labels(reason="shutdown").inc(left)
            log.warning("remote write: %d samples still queued at the stop, not sent", left)

    # -- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        flush = self.cfg.flush_seconds
        due = self.clock() + flush
        while True:
            with self._cond:
                while (
                    not self._closing
                    and self._queued < self.cfg.max_samples_per_send
                    and self.clock() < due
                ):
                    self._cond.wait(max(due - self.clock(), 0.0))
                batch, samples = self._take()
                closing = self._closing
            due = self.clock() + flush
            if not batch:
                if closing:
                    return
                continue
            try:
                self._send(batch, samples)
            except Exception:  # never let the thread die: the next batch may well go
                self.metrics.rw_dropped.labels(reason="error").inc(samples)
                log.exception("remote write: a request not sent")
            if self._abort.is_set():
                return

    def _take(self) -> tuple[list[Chunk], int]:
        """Chunks off the queue up to max_samples_per_send samples (the last one split)."""
        limit, total, out = self.cfg.max_samples_per_send, 0, list[Chunk]()
        while self._queue and total < limit:
            chunk = self._queue[0]
            cum = np.cumsum(chunk.samples)
            n = int(np.searchsorted(cum, limit - total, side="right"))  # the rows that fit
            if n == 0 and out:
                break
            n = max(n, 1)  # a reading of more samples than the limit goes alone
            if n >= len(chunk.streams):
                n = len(chunk.streams)
                out.append(self._queue.popleft())
            else:
                out.append(chunk.take(n))
            total += int(cum[n - 1])
        self._queued -= total
        self.metrics.rw_queue.set(self._queued)
        return out, total

    def _send(self, batch: list[Chunk], samples: int) -> None:
        body = snappy.compress(encode(batch, self.fields, self.labels))
        started = self.clock()
        wait = self.backoff[0]
        while True:
            error, retry = self._post(body)
            if error is None:
                self.metrics.rw_sent.inc(samples)
                if self._failing_since is not None:
                    down = self.clock() - self._failing_since
                    log.info("remote write: sending again after %.0f s", down)
                    self._failing_since = None
                return
            self.metrics.rw_failures.inc()
            give_up = not retry or self.clock() - started + wait > self.cfg.retry_seconds
            self._failed(error, give_up, retry)
            if give_up:
                reason = "failed" if retry else "rejected"
                self.metrics.rw_dropped.labels(reason=reason).inc(samples)
                return
            if self._abort.wait(wait):
                self.metrics.rw_dropped.labels(reason="shutdown").inc(samples)
                return
            wait = min(2 * wait, self.backoff[1])

    def _failed(self, error: str, give_up: bool, retry: bool) -> None:
        now = self.clock()
        what = "dropped" if give_up else "retrying"
        if not retry:  # a refusal is about this request: always worth a line
            log.warning("remote write: %s refused it, dropped: %s", self.cfg.url, error)
        elif self._failing_since is None:
            self._failing_since = self._failing_logged = now
            log.warning("remote write: %s failed, %s: %s", self.cfg.url, what, error)
        elif now - self._failing_logged >= LOG_SECONDS:
            self._failing_logged = now
            log.warning(
                "remote write: %s failing for %.0f s, %s: %s",
                self.cfg.url,
                now - self._failing_since,
                what,
                error,
            )

    def _post(self, body: bytes) -> tuple[str | None, bool]:
        """POST one request: (None, _) on success, else (why, whether to try again)."""
        headers = {**_HEADERS, **{str(k): str(v) for k, v in self.cfg.headers.items()}}
        if self.cfg.bearer_token_file:
            try:
                with open(self.cfg.bearer_token_file, encoding="utf-8") as f:
                    headers["Authorization"] = f"Bearer {f.read().strip()}"
            except OSError as exc:
                return f"cannot read bearer_token_file: {exc.strerror or exc}", True
        request = urllib.request.Request(self.cfg.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(
                request, timeout=self.cfg.timeout_seconds, context=self._context
            ) as response:
                response.read()
            return None, False
        except urllib.error.HTTPError as exc:
            text = " ".join(exc.read(300).decode("utf-8", "replace").split())
            exc.close()
            return f"HTTP {exc.code}: {text}", exc.code >= 500 or exc.code == 429
        except (OSError, HTTPException) as exc:  # no connection, a timeout, a broken answer
            return f"{type(exc).__name__}: {exc}", True

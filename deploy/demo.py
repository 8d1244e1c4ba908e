#!/usr/bin/env python3
"""streamwatch end to end on this machine: ``make demo``.

Starts a local Kafka broker, generates synthetic history, trains a model, starts the daemon,
streams live readings with injected anomalies into the input topic, and prints the anomalies
the daemon flags as they arrive.  Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
BIN = Path(sys.executable).parent / "streamwatch"


def say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}", flush=True)


def _localkafka():
    spec = importlib.util.spec_from_file_location("localkafka", ROOT / "deploy/kafka/localkafka.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=40)
    p.add_argument("--rate", type=float, default=1500.0, help="readings per second")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--metrics-port", type=int, default=9108)
    args = p.parse_args()
    WORK.mkdir(exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    broker = _localkafka().LocalKafka(ROOT / "deploy/kafka/.run")
    we_started_broker = broker.pid() is None
    t0 = time.monotonic()
    # SIGTERM (a terminal closed, `timeout`, a supervisor) cleans up as Ctrl-C does, or the
    # broker and the daemon this started would be left running
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        say("starting the local Kafka broker (first run fetches its jars with mvn) ...")
        bootstrap = broker.start()
        say(f"broker ready at {bootstrap} ({time.monotonic() - t0:.0f}s)")

        say(f"generating {args.streams} streams of history and training a model ...")
        sw = [str(BIN)]

        def generate(anomalies: int, seed: int, *rest: str) -> list[str]:
            """Two weeks of 5-minute readings of the demo's streams."""
            return [
                *sw,
                "generate",
                "--streams",
                str(args.streams),
                "--length",
                "4032",
                "--anomalies-per-stream",
                str(anomalies),
                "--seed",
                str(seed),
                *rest,
            ]

        subprocess.run(generate(0, 1, "--out", str(WORK / "history.csv")), check=True)
        subprocess.run(
            [
                *sw,
                "train",
                "--data",
                str(WORK / "history.csv"),
                "--out",
                str(WORK / "model"),
                "--epochs",
                str(args.epochs),
                "--name",
                "demo",
            ],
            check=True,
        )

        from kafka import KafkaAdminClient, KafkaConsumer
        from kafka.admin import NewTopic

        tag = time.strftime("%H%M%S")
        topics = {
            "in": f"demo-readings-{tag}",
            "out": f"demo-anomalies-{tag}",
            "dead": f"demo-dead-letters-{tag}",
        }
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics(
            [
                NewTopic(topics["in"], 4, 1),
                NewTopic(topics["out"], 1, 1),
                NewTopic(topics["dead"], 1, 1),
            ]
        )
        admin.close()

        port = _port(args.metrics_port)
        config = WORK / "streamwatch.yaml"
        config.write_text(
            f'kafka:\n  bootstrap_servers: "{bootstrap}"\n  input_topics: [{topics["in"]}]\n'
            f'  group_id: demo-{tag}\nmodel:\n  path: "{WORK / "model"}"\n'
            f"outputs:\n  anomalies_topic: {topics['out']}\n"
            f"  dead_letter_topic: {topics['dead']}\n"
            f"metrics:\n  host: 127.0.0.1\n  port: {port}\n"
        )
        daemon_log = (WORK / "daemon.log").open("wb")
        started.append(
            subprocess.Popen(
                [*sw, "run", "--config", str(config)], stdout=daemon_log, stderr=subprocess.STDOUT
            )
        )
        say(
            f"daemon started (log: {WORK / 'daemon.log'}); metrics: http://127.0.0.1:{port}/metrics"
        )

        labels = WORK / "live_labels.json"
        labels.unlink(missing_ok=True)  # a former run's file would be read before it is rewritten
        producer_log = (WORK / "producer.log").open("wb")
        started.append(
            subprocess.Popen(
                generate(
                    2,
                    2,
                    "--labels",
                    str(labels),
                    "--kafka",
                    bootstrap,
                    "--topic",
                    topics["in"],
                    "--rate",
                    str(args.rate),
                ),
                stdout=producer_log,
                stderr=subprocess.STDOUT,
            )
        )
        say(
            f"streaming {args.streams} x 4032 readings at {args.rate:g}/s into {topics['in']}; "
            "anomalies are injected after reading 600 of each stream"
        )
        say("flagged anomalies appear below as they arrive (Ctrl-C to stop everything)")

        truth = _labels(labels)
        consumer = KafkaConsumer(
            topics["out"], bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        shown = 0
        batch = consumer.poll(timeout_ms=500)
        while True:
            for records in batch.values():
                for r in records:
                    e = json.loads(r.value)
                    shown += 1
                    label = truth.get((e["stream"], int(e["ts"])), "not labelled")
                    print(
                        f"ANOMALY {time.strftime('%H:%M:%S', time.gmtime(e['ts']))} "
                        f"{e['stream']:>6}  value {e['value']:>12.4g}  predicted "
                        f"{e['prediction']:>12.4g}  score {e['score']:5.2f}  [{label}]",
                        flush=True,
                    )
            if started[0].poll() is not None:
                say(f"the daemon exited with {started[0].returncode}; see {WORK / 'daemon.log'}")
                return 1
            # once the producer is done, a quiet spell means the output is all in; a poll that
            # still returns records is shown on the next pass, not dropped
            quiet = started[1].poll() is not None and shown
            batch = consumer.poll(timeout_ms=3000 if quiet else 500)
            if quiet and not batch:
                say(
                    f"all readings streamed; {shown} anomalies flagged. Metrics stay up at "
                    f"http://127.0.0.1:{port}/metrics until Ctrl-C."
                )
                signal.pause()
    except KeyboardInterrupt:
        print()
        say("stopping ...")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second one must not skip cleanup
            signal.signal(sig, signal.SIG_IGN)
        for proc in reversed(started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if we_started_broker:
            broker.stop()
            say("broker stopped")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _labels(path: Path) -> dict[tuple[str, int], str]:
    """(stream, ts) -> kind, for every reading of a labelled event (the altered readings and
    the return to normal after them); the file appears once generated."""
    for _ in range(100):
        if path.exists():
            break
        time.sleep(0.1)
    data = json.loads(path.read_text())
    step, start = data["spec"]["step_seconds"], data["spec"]["start"]
    out = {}
    for a in data["anomalies"]:
        for i in range(a["start"], round((a["end_ts"] - start) / step) + 1):
            kind = a["kind"] if i <= a["end"] else f"{a['kind']}: its return to normal"
            out[(a["stream"], int(start + step * i))] = kind
    return out


if __name__ == "__main__":
    sys.exit(main())

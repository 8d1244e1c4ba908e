#!/usr/bin/env python3
"""Daemon throughput against a real local Kafka, beside a bare consumer and a naive detector.

    .venv/bin/python bench/daemon_kafka.py [--messages 1000000] [--streams 100000]
    .venv/bin/python bench/daemon_kafka.py --checkpoints 5   # state checkpoints' cost
    .venv/bin/python bench/daemon_kafka.py --checkpoints 5 --changelog   # and the changelog's

Pre-produces readings over many streams to a topic with 8 partitions, then measures, one
process each, in messages per second:

  (a) a bare kafka-python consumer that only iterates the records (and, for reference, the
      same consumer with streamwatch's faster record path, which the daemon uses);
  (b) a naive detector: per message, decode, one ONNX Runtime call at batch 1, produce each
      anomaly (run on the first --naive-messages messages: its rate does not depend on more);
  (c) the daemon (`streamwatch run`), from process start to the last offset processed and
      committed.

Model: LSTM 1 x 64 (random weights: speed does not depend on them).  Uses
STREAMWATCH_KAFKA_BOOTSTRAP if set, else starts the local broker from deploy/kafka.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _broker(tmp: Path):  # returns (bootstrap, stop)
    given = os.environ.get("STREAMWATCH_KAFKA_BOOTSTRAP")
    if given:
        return given, lambda: None
    spec = importlib.util.spec_from_file_location("localkafka", ROOT / "deploy/kafka/localkafka.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    broker = mod.LocalKafka(tmp / "kafka")
    return broker.start(), broker.stop


def _model(out: Path) -> None:
    import torch

    from streamwatch.model.artifact import ModelSpec, sha256_bytes, write_artifact
    from streamwatch.normalize import Normalizer
    from streamwatch.train.export import export_onnx
    from streamwatch.train.module import Forecaster

    torch.manual_seed(0)
    data = export_onnx(Forecaster(1, 1, 64, 1).eval())
    spec = ModelSpec("bench", "1", ("value",), ("value",), 1, 64, Normalizer(), sha256_bytes(data))
    write_artifact(out, spec, data)


def produce(bootstrap: str, topic: str, n: int, streams: int) -> float:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 8, 1)])
    admin.close()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=262144, acks=1, compression_type=None
    )
    rng = np.random.default_rng(0)
    values = rng.normal(100.0, 5.0, n)
    started = time.perf_counter()
    for i in range(n):
        s = i % streams
        key = b"s%06d" % s
        producer.send(
            topic,
            key=key,
            value=b'{"stream":"s%06d","ts":%d,"value":%.4f}'
            % (s, 1_700_000_000 + i // streams * 60, values[i]),
        )
    producer.flush()
    producer.close()
    return time.perf_counter() - started


def _reader(bootstrap: str, topic: str, **settings: object):
    """A group-less consumer from the start of ``topic``, as both baselines use."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **settings,
    )


def bare(bootstrap: str, topic: str, n: int, fast: bool = False) -> float:
    consumer = _reader(bootstrap, topic, max_poll_records=2000)
    if fast:
        from streamwatch.sources.kafka_records import install

        assert install(consumer)
    started, seen = time.perf_counter(), 0
    while seen < n:
        for records in consumer.poll(timeout_ms=500).values():
            for _r in records:
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


def naive(bootstrap: str, topic: str, n: int, model_dir: Path) -> float:
    from kafka import KafkaProducer

    from streamwatch.model import load_model

    model = load_model(model_dir)
    states: dict[str, np.ndarray] = {}
    preds: dict[str, float] = {}
    consumer = _reader(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    x = np.zeros((1, 1), np.float32)
    started, seen = time.perf_counter(), 0
    while seen < n:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                msg = json.loads(r.value)
                stream, value = msg["stream"], float(msg["value"])
                state = states.get(stream)
                if state is None:
                    state = np.zeros((1, model.spec.state_size), np.float32)
                x[0, 0] = (value - 100.0) / 5.0
                mu, _sigma, states[stream] = model.step(x, state)
                prev = preds.get(stream)
                if prev is not None and abs(x[0, 0] - prev) > 6.0:
                    producer.send("naive-anomalies", value=r.value)
                preds[stream] = float(mu[0, 0])
                seen += 1
                if seen >= n:
                    break
            if seen >= n:
                break
    elapsed = time.perf_counter() - started
    producer.flush()
    producer.close()
    consumer.close()
    return n / elapsed


def daemon(
    bootstrap: str,
    topic: str,
    n: int,
    model_dir: Path,
    tmp: Path,
    checkpoints: float | None = None,
    changelog: bool = False,
) -> tuple[float, str]:
    """The daemon's rate; with ``checkpoints`` (seconds), checkpointing that often."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    group = f"bench-{time.time_ns()}"
    cfg = tmp / "bench.yaml"
    state = ""
    if checkpoints is not None:
        where = tmp / f"state-{group}"
        state = f'  checkpoint_dir: "{where}"\n  checkpoint_interval_seconds: {checkpoints}\n'
        if changelog:
            state += f"  changelog_topic: changelog-{group}\n"
    cfg.write_text(
        f'kafka:\n  bootstrap_servers: "{bootstrap}"\n  input_topics: [{topic}]\n'
        f"  group_id: {group}\n  poll_timeout_ms: 100\n  max_poll_records: 5000\n"
        f'model:\n  path: "{model_dir}"\nstate:\n  max_streams: 1000000\n{state}'
        f"metrics:\n  host: 127.0.0.1\n  port: 0\nlogging:\n  level: WARNING\n"
    )
    parts = [TopicPartition(topic, p) for p in range(8)]
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    ends = watcher.end_offsets(parts)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamwatch", "run", "--config", str(cfg)], stderr=subprocess.PIPE
    )
    try:
        while True:
            committed = {tp: watcher.committed(tp) or 0 for tp in parts}
            if all(committed[tp] >= ends[tp] for tp in parts):
                break
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "exited")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        watcher.close()
    return n / elapsed, err.decode()[-300:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--streams", type=int, default=100_000)
    p.add_argument("--naive-messages", type=int, default=100_000)
    p.add_argument(
        "--checkpoints",
        type=float,
        metavar="SECONDS",
        help="only the daemon, without and with checkpoints this often, alternately (3 times)",
    )
    p.add_argument(
        "--changelog",
        action="store_true",
        help="with --checkpoints: each round also to a changelog topic (state.changelog_topic)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bootstrap, stop = _broker(tmp)
        try:
            topic = f"bench-{int(time.time())}"
            _model(tmp / "model")
            secs = produce(bootstrap, topic, args.messages, args.streams)
            print(
                f"produced {args.messages:,} readings over {args.streams:,} streams to 8 "
                f"partitions in {secs:.1f}s"
            )
            if args.checkpoints is not None:
                rates: dict[str, list[float]] = {"off": [], "on": []}
                for _ in range(3):
                    for mode, every in (("off", None), ("on", args.checkpoints)):
                        rate, _ = daemon(
                            bootstrap,
                            topic,
                            args.messages,
                            tmp / "model",
                            tmp,
                            every,
                            changelog=args.changelog and every is not None,
                        )
                        rates[mode].append(rate)
                        print(f"daemon, checkpoints {mode}: {rate:>10,.0f} msg/s")
                off, on = (float(np.median(rates[m])) for m in ("off", "on"))
                what = " and changelog" if args.changelog else ""
                print(
                    f"checkpoints{what} every {args.checkpoints:g} s / none, medians of 3: "
                    f"{on / off:.2f} (target >= 0.85)"
                )
                return
            a = bare(bootstrap, topic, args.messages)
            print(f"(a) bare kafka-python consumer: {a:>10,.0f} msg/s")
            a2 = bare(bootstrap, topic, args.messages, fast=True)
            print(f"    the same, streamwatch's record path: {a2:>10,.0f} msg/s")
            b = naive(bootstrap, topic, min(args.naive_messages, args.messages), tmp / "model")
            print(
                f"(b) naive per-message detector: {b:>10,.0f} msg/s "
                f"(first {min(args.naive_messages, args.messages):,} messages)"
            )
            c, _ = daemon(bootstrap, topic, args.messages, tmp / "model", tmp)
            print(f"(c) streamwatch daemon:         {c:>10,.0f} msg/s (start to last commit)")
            print(f"(c)/(a) = {c / a:.2f}  (target >= 0.6);  (c)/(b) = {c / b:.2f}  (target >= 3)")
            print(f"(c) against the bare consumer on the daemon's record path: {c / a2:.2f}")
        finally:
            stop()


if __name__ == "__main__":
    main()

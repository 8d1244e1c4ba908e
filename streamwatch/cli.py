"""The ``streamwatch`` command: every subcommand, and the only place that configures logging."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from streamwatch import __version__
from streamwatch.errors import ConfigError, ModelError, SourceError

log = logging.getLogger("streamwatch")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    def handler() -> logging.Handler:
        h = logging.StreamHandler(sys.stderr)
        if fmt == "json":
            h.setFormatter(_JsonFormatter())
        else:
            h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        return h

    log.handlers[:] = [handler()]
    log.setLevel(level.upper())
    log.propagate = False
    # kafka-python says why a connection fails (a TLS handshake, a refused SASL login) only on
    # its own loggers; without a handler that reason would be lost
    kafka_handler = handler()
    kafka_handler.addFilter(_one_line)
    kafka_log = logging.getLogger("kafka")
    kafka_log.handlers[:] = [kafka_handler]
    kafka_log.setLevel(max(logging.WARNING, log.level))
    kafka_log.propagate = False


def _one_line(record: logging.LogRecord) -> bool:
    """kafka-python attaches a traceback to each failed retry; its message already says why."""
    record.exc_info = record.exc_text = None
    return True


# -- generate ----------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    from streamwatch import synth
    from streamwatch.codec import MessageFormat

    spec = synth.SynthSpec(
        n_streams=args.streams,
        length=args.length,
        step_seconds=args.step_seconds,
        anomalies_per_stream=args.anomalies_per_stream,
        seed=args.seed,
        warmup=min(args.warmup, args.length - 1),
        **({"start": args.start} if args.start is not None else {}),
    )
    try:
        data = synth.generate(spec)
    except ValueError as exc:
        print(f"streamwatch generate: {exc}", file=sys.stderr)
        return 2
    if args.labels:
        synth.write_labels(data, spec, Path(args.labels))
    if args.kafka:
        from streamwatch.sinks.kafka import produce

        fmt = MessageFormat()
        rows = synth.iter_rows(data)
        messages = ((s.encode(), fmt.encode(s, ts, v)) for s, ts, v in rows)
        total = spec.n_streams * spec.length
        log.info(
            "producing %d readings to %s at %s",
            total,
            args.topic,
            f"{args.rate:g}/s" if args.rate > 0 else "full speed",
        )
        sent = produce(
            args.kafka, args.topic, messages, rate=args.rate, progress_every=args.progress_every
        )
        log.info("produced %d readings to %s", sent, args.topic)
    if args.out:
        out = Path(args.out)
        writer = synth.write_csv if out.suffix.lower() == ".csv" else synth.write_jsonl
        writer(data, out)
        log.info(
            "wrote %d streams x %d readings to %s (%d anomalies)",
            spec.n_streams,
            spec.length,
            out,
            len(data.anomalies),
        )
    if not args.out and not args.kafka:
        print("streamwatch generate: give --out FILE and/or --kafka BOOTSTRAP", file=sys.stderr)
        return 2
    return 0


# -- train -------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from streamwatch.data import DataError, load_series
        from streamwatch.train.fit import train_artifact
        from streamwatch.train.job import load_job
    except ImportError as exc:
        print(
            f"streamwatch train needs the 'train' extra (pip install 'streamwatch[train]'): {exc}",
            file=sys.stderr,
        )
        return 2
    try:
        columns = _columns(args.target) if args.target is not None else None
    except ValueError as exc:
        print(f"streamwatch train: --target: {exc}", file=sys.stderr)
        return 2
    overrides = {
        "data.paths": args.data,
        "data.targets": columns,
        "out": args.out,
        "data.covariates": True if args.covariates else None,
    }
    overrides.update({f"train.{key}": getattr(args, key) for key in _TRAIN_FLAGS})
    try:
        job = load_job(args.config, overrides)
    except ConfigError as exc:
        print(f"streamwatch train: bad training config: {exc}", file=sys.stderr)
        return ConfigError.exit_code
    try:
        targets = list(job.data.targets)
        series = load_series(
            job.data.paths,
            target=targets[0] if len(targets) == 1 else targets,
            covariates=job.data.covariates,
        )
    except DataError as exc:
        print(f"streamwatch train: {exc}", file=sys.stderr)
        return 2
    if not series:
        print("streamwatch train: the data files hold no readings", file=sys.stderr)
        return 2
    log.info(
        "loaded %d streams (%d readings) from %d file(s)",
        len(series),
        sum(len(v) for v in series.values()),
        len(job.data.paths),
    )
    try:
        spec = train_artifact(series, job.train, job.out, n_targets=len(job.data.targets))
    except ValueError as exc:
        print(f"streamwatch train: {exc}", file=sys.stderr)
        return 2
    print(f"model written to {job.out} (version {spec.version})")
    return 0


def _columns(text: str) -> list[int]:
    """'3' or '0,2' -> column indices."""
    try:
        return [int(c) for c in str(text).split(",")]
    except ValueError:
        raise ValueError(f"expected column numbers like 0 or 0,2, got {text!r}") from None


# flags of `train` that override keys of the job's `train:` section
_TRAIN_FLAGS = (
    "name",
    "hidden_size",
    "layers",
    "dropout",
    "epochs",
    "batch_streams",
    "window",
    "lr",
    "val_fraction",
    "patience",
    "seed",
    "device",
)


# -- replay / evaluate ------------------------------------------------------------------------


def _fraction_or_off(text: str) -> float | None:
    return None if text.lower() in ("off", "none", "null") else float(text)


def cmd_replay(args: argparse.Namespace) -> int:
    from streamwatch.data import DataError, read_rows
    from streamwatch.engine import Engine
    from streamwatch.forecast import format_summary, skill_report
    from streamwatch.replay import forecast_columns, replay, write_scores
    from streamwatch.scoring import Scorer
    from streamwatch.state import StateStore

    model = _model_or_none(args.model)
    if model is None:
        return 1
    try:
        # the options are named as the scorer's fields (and the config's scoring keys)
        scorer = Scorer(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Scorer)})
    except ValueError as exc:
        print(f"streamwatch replay: {exc}", file=sys.stderr)
        return 2
    n_targets = len(model.spec.targets)
    covariates = len(model.spec.features) > n_targets
    try:
        targets = _columns(args.target)
        if len(targets) != n_targets:
            raise DataError(
                f"--target names {len(targets)} column(s); the model predicts {n_targets}"
            )
        target: int | list[int] = targets[0] if n_targets == 1 else targets
        rows = read_rows(args.data, target=target, covariates=covariates)
        prime = read_rows(args.prime, target, covariates) if args.prime else None
    except DataError as exc:
        print(f"streamwatch replay: {exc}", file=sys.stderr)
        return 2
    engine = Engine(model, StateStore.for_model(model.spec, max_streams=10**9), scorer)
    started = time.monotonic()
    if prime is not None:
        replay(engine, prime)
        log.info("primed %d streams with %d rows", len(engine.store), len(prime))
    verdicts = replay(engine, rows)
    seconds = time.monotonic() - started
    write_scores(args.out, rows, verdicts)
    forecast = skill_report(forecast_columns(rows, verdicts.prediction, verdicts.scale))
    print(format_summary(forecast["summary"]))
    log.info(
        "scored %d rows of %d streams in %.1fs; %d flagged; wrote %s",
        len(rows),
        len(set(rows.streams)),
        seconds,
        int(verdicts.anomaly.sum()),
        args.out,
    )
    if args.plot:
        try:
            from streamwatch.plot import plot_replay

            drawn = plot_replay(args.plot, rows, verdicts, scorer.threshold, args.plot_streams)
        except ImportError:
            print(
                "streamwatch replay: --plot needs matplotlib (pip install 'streamwatch[plot]')",
                file=sys.stderr,
            )
            return 2
        log.info("plotted %d stream(s) to %s", len(drawn), args.plot)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:

    from streamwatch.evaluate import report
    from streamwatch.forecast import format_summary, skill_report
    from streamwatch.labels import LabelError, read_labels
    from streamwatch.replay import forecast_columns, read_scores

    try:
        read = read_scores(args.scores)
        rows, scores, flags = read.rows, read.score, read.anomaly
        labels = read_labels(args.labels, rows) if args.labels else {}
    except (OSError, ValueError, LabelError) as exc:
        print(f"streamwatch evaluate: {exc}", file=sys.stderr)
        return 2
    groups = rows.by_stream()
    names, idx = list(groups), list(groups.values())
    forecast = skill_report(forecast_columns(rows, read.prediction, read.scale))
    head = ("stream", "rows", "mae", "persist", "skill", "bias", "cov50", "cov90", "cov99")
    print("{:<24} {:>7} {:>10} {:>10} {:>7} {:>6} {:>5} {:>5} {:>5}".format(*head))
    for name, sk in forecast["streams"].items():
        cov = sk["coverage"]
        print(
            f"{name:<24} {sk['rows']:>7} {sk['mae']:>10.4g} {sk['persistence_mae']:>10.4g} "
            f"{sk['skill']:>7.3f} {sk['bias']:>6.2f} "
            f"{cov['0.5']:.3f} {cov['0.9']:.3f} {cov['0.99']:.3f}"
        )
    print(format_summary(forecast["summary"]))
    if not args.labels:
        if args.out:
            Path(args.out).write_text(json.dumps({"forecast": forecast}, indent=2) + "\n")
        return 0
    result = report(
        names, [scores[i] for i in idx], [flags[i] for i in idx], [labels.get(n, []) for n in names]
    )
    result["forecast"] = forecast
    ev: dict[str, Any] = result["event"]  # type: ignore[assignment]
    print(f"{'stream':<24} {'labels':>6} {'tp':>4} {'fp':>4} {'fn':>4}")
    for name, c in result["streams"].items():  # type: ignore[attr-defined]
        print(f"{name:<24} {c['labels']:>6} {c['tp']:>4} {c['fp']:>4} {c['fn']:>4}")
    print(
        f"event level: TP {ev['tp']}  FP {ev['fp']}  FN {ev['fn']}  precision "
        f"{ev['precision']:.3f}  recall {ev['recall']:.3f}  F1 {ev['f1']:.3f}"
    )
    rw: dict[str, Any] = result["rows"]  # type: ignore[assignment]
    print(
        f"row level: {rw['flagged']} of {rw['rows']} rows flagged "
        f"({rw['flagged_fraction']:.2%}, labelled {rw['labelled'] / max(rw['rows'], 1):.2%})  "
        f"precision {rw['precision']:.3f}  recall {rw['recall']:.3f}"
    )
    for key, v in result["nab"].items():  # type: ignore[attr-defined]
        print(f"NAB {key:<14} {v['score']:7.2f}  (threshold {v['threshold']:.4g} by sweep)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


# -- model show --------------------------------------------------------------------------------


def _model_or_none(directory: str) -> Any:
    """The loaded model, or None after printing why it was refused."""
    from streamwatch.model import load_model

    try:
        return load_model(directory)
    except ModelError as exc:
        print(f"streamwatch: model refused: {exc}", file=sys.stderr)
        return None


def cmd_model_show(args: argparse.Namespace) -> int:
    model = _model_or_none(args.dir)
    if model is None:
        return 1
    d = model.spec.to_dict()
    val = d["training"].get("validation", {})
    lines = [
        f"model       {d['name']}  version {d['version']}",
        f"created     {d['created_at']}  by streamwatch {d['streamwatch_version']}",
        f"features    {', '.join(d['features'])}   targets {', '.join(d['targets'])}",
        f"network     LSTM {d['layers']} layer(s) x {d['hidden_size']} hidden, "
        f"state {d['state_size']} floats ({d['state_layout']})",
        f"onnx        {d['onnx']['file']}  sha256 {d['onnx']['sha256']}",
        f"normalise   {json.dumps(d['normalization'])}",
        f"data        {json.dumps(d['training'].get('data', {}))}",
        f"validation  nll {val.get('val_nll', float('nan')):.4f}  "
        f"mae {val.get('val_mae_z', float('nan')):.4f} (naive "
        f"{val.get('val_naive_mae_z', float('nan')):.4f}) z units, "
        f"best epoch {val.get('epoch')} of {val.get('epochs_run')}",
        _forecast_line(val.get("forecast")),
        f"calibration {json.dumps(d['calibration'].get('abs_error_quantiles', {}))}",
        f"envelopes   trained ranges of {len(model.spec.envelopes()):,} stream(s) "
        "(for scoring.envelope)",
    ]
    print("\n".join(lines))
    return 0


def _forecast_line(f: dict[str, Any] | None) -> str:
    if not f:
        return "forecast    not recorded (trained before streamwatch measured it)"
    cov = f["coverage"]
    share = f.get("beats_persistence")
    beats = "n/a" if share is None else f"{share:.0%}"
    return (
        f"forecast    validation, z units: MAE {f['mae']:.4f} vs persistence "
        f"{f['naive_mae']:.4f} (skill {f['skill']:.3f}), bias {f['bias']:+.3f}, coverage "
        f"50 % {cov['0.5']:.3f} 90 % {cov['0.9']:.3f} 99 % {cov['0.99']:.3f}; "
        f"beats persistence on {beats} of {f['streams']} stream(s)"
    )


# -- run / check-config ------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    from streamwatch import config

    try:
        cfg = config.load(args.config)
        if cfg.kafka is not None:
            from streamwatch.sources.kafka import check_extra_settings

            check_extra_settings(cfg.kafka)
            cfg.kafka.client_settings(os.environ)  # the secrets it names must be set
        spec = _load_model(cfg).spec
        _check_mapping(cfg, spec)
    except ConfigError as exc:
        print(f"streamwatch: bad config {args.config}: {exc}", file=sys.stderr)
        return ConfigError.exit_code
    source = f"topics {','.join(cfg.kafka.input_topics)}" if cfg.kafka else f"file {cfg.input.path}"
    model = f"model {cfg.model.path}: {spec.name} version {spec.version}"
    print(f"{args.config}: ok (input {source}, {model})")
    return 0


def _load_model(cfg: Any) -> Any:
    """The model at ``model.path``; one that is refused is a ConfigError naming that key: the
    daemon cannot start until the file or the key changes, so a supervisor must not keep
    restarting it (exit 78, which systemd's RestartPreventExitStatus and k8s see)."""
    from streamwatch.model import load_model

    try:
        return load_model(cfg.model.path, threads=cfg.model.threads)
    except ModelError as exc:
        raise ConfigError("model.path", f"model refused: {exc}") from None


def _check_mapping(cfg: Any, spec: Any) -> None:
    """The message fields must feed the model's inputs one for one."""
    n_t = len(spec.targets)
    covs = spec.features[n_t:]
    if len(cfg.input.value_fields) != n_t:
        raise ConfigError(
            "input.value_fields",
            f"model {spec.name} predicts {n_t} value(s) ({', '.join(spec.targets)}); "
            f"{len(cfg.input.value_fields)} field(s) mapped",
        )
    if len(cfg.input.covariate_fields) != len(covs):
        raise ConfigError(
            "input.covariate_fields",
            f"model {spec.name} takes {len(covs)} covariate(s) ({', '.join(covs) or 'none'}); "
            f"{len(cfg.input.covariate_fields)} field(s) mapped",
        )


def cmd_run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, disable_created_metrics

    from streamwatch import config
    from streamwatch.daemon import Daemon
    from streamwatch.engine import Engine
    from streamwatch.http import Health, serve
    from streamwatch.metrics import Metrics
    from streamwatch.sdnotify import Notifier
    from streamwatch.sinks import Sink
    from streamwatch.sinks.file import FileSink
    from streamwatch.sources import Source
    from streamwatch.sources.file import FileSource
    from streamwatch.state import StateStore

    try:
        cfg = config.load(args.config)
        cfg.state.check_paths()
        cfg.outputs.check_paths()
    except ConfigError as exc:
        print(f"streamwatch: bad config {args.config}: {exc}", file=sys.stderr)
        return ConfigError.exit_code
    setup_logging(cfg.logging.level, cfg.logging.format)
    try:
        model = _load_model(cfg)
        spec = model.spec
        _check_mapping(cfg, spec)
    except ConfigError as exc:
        log.error("bad config %s: %s", args.config, exc)
        return ConfigError.exit_code
    log.info(
        "model %s version %s (LSTM %dx%d)", spec.name, spec.version, spec.layers, spec.hidden_size
    )
    if cfg.scoring.envelope is not None and not spec.envelopes():
        log.warning(
            "scoring.envelope is set, but model %s %s records no trained ranges (trained "
            "before streamwatch kept them): the envelope test applies to no stream; retrain "
            "the model to use it",
            spec.name,
            spec.version,
        )
    disable_created_metrics()  # *_created series double every counter for little use
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    health = Health(stale_after=cfg.metrics.liveness_seconds)
    server = serve(cfg.metrics.host, cfg.metrics.port, registry, health)
    port = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics (and /healthz, /readyz)", cfg.metrics.host, port)
    engine = Engine(
        model,
        StateStore.for_model(spec, max_streams=cfg.state.max_streams),
        cfg.scoring,
        max_rows=cfg.model.max_rows,
        policy=cfg.state.policy(),
    )
    source: Source
    sink: Sink
    with contextlib.ExitStack() as preflight:
        try:
            if cfg.kafka is not None and cfg.input.source == "kafka":
                from streamwatch.sinks.kafka import KafkaSink, denied_topics_quietly
                from streamwatch.sources.kafka import KafkaSource

                # until the topic check below has said it in one line naming the key
                preflight.enter_context(denied_topics_quietly())
                source = KafkaSource(cfg.kafka, metrics)
                sink = KafkaSink(cfg.kafka.client_settings(os.environ), cfg.kafka.producer)
            else:
                source = FileSource(cfg.input.path, cfg.input.batch_size)
                sink = FileSink(
                    cfg.outputs.path, cfg.outputs.dead_letter_path, cfg.outputs.dead_letter_topic
                )
        except ConfigError as exc:
            log.error("bad config %s: %s", args.config, exc)
            server.shutdown()
            return ConfigError.exit_code
        except (SourceError, OSError) as exc:
            log.error("%s", exc)
            server.shutdown()
            return 1
        # systemd (Type=notify): READY=1, WATCHDOG=1, STOPPING=1; does nothing elsewhere
        notifier = Notifier.from_env()
        state_log = None
        if cfg.state.changelog_topic is not None and cfg.kafka is not None:
            from streamwatch.changelog_kafka import Changelog

            state_log = Changelog(
                cfg.state.changelog_topic,
                cfg.kafka.client_settings(os.environ),
                cfg.kafka.producer,
            )
        daemon = Daemon(
            cfg,
            source,
            sink,
            engine,
            spec,
            metrics,
            health=health,
            notifier=notifier,
            changelog=state_log,
        )
        try:
            daemon.check_topics()
            if state_log is not None:
                assert isinstance(source, KafkaSource)
                done = state_log.ensure_topic(source.partition_count())
                log.info("changelog topic %s: %s", state_log.topic, done)
        except SourceError as exc:
            # Exit 1, not 78 (EX_CONFIG): the config is valid, the broker lacks a topic or an
            # ACL.  Creating it (by hand or by an operator) fixes that without touching the
            # config, and the supervisor's restart then succeeds, where systemd never restarts
            # after a 78; a misspelt name costs no more than the unit's few restarts before its
            # start limit.  Close first: kafka-python logs its own aborted requests at ERROR
            # while closing, and the line that names the key must be the last one read.
            source.close()
            sink.close()
            if state_log is not None:
                state_log.close()
            server.shutdown()
            log.error("%s", exc)
            return 1
    interrupts = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1 and signum == signal.SIGINT:
            log.warning("second interrupt: exiting now without draining")
            os._exit(130)
        log.info("%s: draining", signal.Signals(signum).name)
        daemon.stop()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        log.info("SIGHUP: reloading the model after this batch")
        daemon.request_reload()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    # Everything loaded so far lives as long as the process: keep the collector from
    # rescanning it, which otherwise shows up as latency spikes of tens of milliseconds.
    gc.collect()
    gc.freeze()
    try:
        daemon.run()
    except SourceError as exc:
        # The broker failed a batch (outputs not acknowledged, or gone): its offsets were not
        # committed, so the restart the supervisor makes replays it.  One line, no traceback.
        log.error("%s", exc)
        return 1
    finally:
        server.shutdown()
    return 0


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamwatch", description=__doc__)
    p.add_argument("--version", action="version", version=f"streamwatch {__version__}")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="synthetic streams with labelled anomalies")
    g.add_argument("--streams", type=int, default=20)
    g.add_argument("--length", type=int, default=4032, help="readings per stream")
    g.add_argument("--step-seconds", type=float, default=300.0)
    g.add_argument("--start", type=float, default=None, help="epoch seconds of reading 0")
    g.add_argument("--anomalies-per-stream", type=float, default=2.0)
    g.add_argument("--warmup", type=int, default=600, help="no anomaly before this index")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", help="write a .csv or .jsonl file")
    g.add_argument(
        "--labels",
        help="write the anomaly labels as JSON: altered rows, and event windows as timestamps",
    )
    g.add_argument("--kafka", metavar="BOOTSTRAP", help="produce the readings to Kafka")
    g.add_argument("--topic", default="readings")
    g.add_argument("--rate", type=float, default=0.0, help="messages per second (0: full speed)")
    g.add_argument("--progress-every", type=int, default=0, metavar="N")
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser(
        "train",
        help="fit an LSTM forecaster and export an ONNX artifact",
        description="Flags override the YAML job given with --config.",
    )
    t.add_argument("--config", help="YAML training job (data, out, train)")
    t.add_argument("--data", nargs="+", help=".csv, .jsonl or .npy files")
    t.add_argument("--out", help="artifact directory to write")
    t.add_argument(
        "--target", help=".npy: target column, or columns for a multivariate model (0 or 0,2)"
    )
    t.add_argument(
        "--covariates", action="store_true", help=".npy: use the other columns as covariates"
    )
    t.add_argument("--name", help="model name (default lstm)")
    t.add_argument("--hidden-size", type=int, help="default 32")
    t.add_argument("--layers", type=int, help="default 1")
    t.add_argument("--dropout", type=float, help="between LSTM layers (default 0)")
    t.add_argument("--epochs", type=int, help="default 30")
    t.add_argument("--batch-streams", type=int, help="streams per mini-batch (default 64)")
    t.add_argument("--window", type=int, help="truncated-BPTT window in steps (default 128)")
    t.add_argument("--lr", type=float, help="default 3e-3, halved on plateaus")
    t.add_argument("--val-fraction", type=float, help="time-ordered hold-out (default 0.2)")
    t.add_argument("--patience", type=int, help="early-stopping epochs (default 5)")
    t.add_argument("--seed", type=int, help="default 0")
    t.add_argument("--device", help="auto (CUDA when present), cpu or cuda")
    t.set_defaults(func=cmd_train)

    rp = sub.add_parser("replay", help="score a file with the daemon's engine, in order")
    rp.add_argument("--model", required=True, help="model artifact directory")
    rp.add_argument("--data", nargs="+", required=True, help=".csv, .jsonl or .npy files")
    rp.add_argument("--prime", nargs="+", help="files replayed first, unscored (history)")
    rp.add_argument("--target", default="0", help=".npy: target column(s), as in train")
    rp.add_argument("--out", required=True, help="scores CSV to write")
    rp.add_argument("--plot", help="PNG of readings, forecast band, score and flags")
    rp.add_argument("--plot-streams", type=int, default=6, help="streams to draw (default 6)")
    from streamwatch.scoring import Scorer

    d = Scorer()  # the defaults are the scorer's, as in the daemon's config
    rp.add_argument(
        "--threshold", type=float, default=d.threshold, help=f"score in [0, 1] ({d.threshold})"
    )
    rp.add_argument(
        "--warmup", type=int, default=d.warmup, help=f"readings before flags ({d.warmup})"
    )
    rp.add_argument("--short-alpha", type=float, default=d.short_alpha)
    rp.add_argument("--long-window", type=int, default=d.long_window)
    rp.add_argument(
        "--hold",
        type=int,
        default=d.hold,
        help="readings an episode stays flagged after its last trigger (default 0)",
    )
    rp.add_argument(
        "--learn-anomalies",
        action="store_true",
        help="let flagged readings update the error statistics",
    )
    rp.add_argument(
        "--novelty",
        type=_fraction_or_off,
        default=d.novelty,
        help="a trigger's smoothed miss must beat the stream's recent peak by this fraction "
        "(default 0.13; 'off' flags on the score alone)",
    )
    rp.add_argument(
        "--envelope",
        type=_fraction_or_off,
        default=d.envelope,
        help="also flag readings beyond the stream's trained range by this share of its width, "
        "e.g. 0.05 (default off)",
    )
    rp.add_argument(
        "--window",
        type=lambda t: None if t.lower() in ("off", "none", "null") else int(t),
        default=d.window,
        help="also run the window test (Hundman et al.'s nonparametric threshold over this "
        "many smoothed misses a stream, e.g. 2100; default off)",
    )
    rp.set_defaults(func=cmd_replay)

    ev = sub.add_parser(
        "evaluate", help="forecast skill, and event-level and NAB scores, of a replay"
    )
    ev.add_argument("--scores", required=True, help="CSV written by streamwatch replay")
    ev.add_argument(
        "--labels",
        help="MSL labeled_anomalies.csv, or JSON timestamp windows (without: forecast only)",
    )
    ev.add_argument("--out", help="write the report as JSON")
    ev.set_defaults(func=cmd_evaluate)

    m = sub.add_parser("model", help="inspect model artifacts")
    msub = m.add_subparsers(dest="model_command", required=True)
    ms = msub.add_parser("show", help="print a model artifact's metadata")
    ms.add_argument("dir")
    ms.set_defaults(func=cmd_model_show)

    r = sub.add_parser("run", help="run the detector daemon")
    r.add_argument("--config", required=True)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate a daemon config and exit")
    c.add_argument("config")
    c.set_defaults(func=cmd_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    started = time.monotonic()
    code: Any = args.func(args)
    log.debug("%s finished in %.1fs", args.command, time.monotonic() - started)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A single-node Apache Kafka (KRaft) on 127.0.0.1 for development, tests and the demo.

Usage::

    python deploy/kafka/localkafka.py fetch            # resolve the broker jars with mvn (cached)
    python deploy/kafka/localkafka.py start [--dir D] [--fresh] [--override KEY=VALUE ...]
                                                       # (re)start, wait; prints bootstrap
    python deploy/kafka/localkafka.py status [--dir D]
    python deploy/kafka/localkafka.py stop [--dir D]    # controlled shutdown; keeps the data
    python deploy/kafka/localkafka.py kill [--dir D]    # SIGKILL, for fault tests; keeps it too

The jars come from Maven Central through ``pom.xml`` beside this file and are cached in
``deploy/kafka/.cache/lib-<version>/`` (gitignored), reused when present.  The broker's state
(config, data, log, pid, bootstrap address) lives in the run directory, ``deploy/kafka/.run``
unless ``--dir`` or ``STREAMWATCH_KAFKA_DIR`` says otherwise.  ``--override KEY=VALUE`` (as
Kafka's own ``kafka-server-start.sh`` takes it) sets a server property over the defaults
written here, e.g. ``--override auto.create.topics.enable=false`` for a broker that, like many
production ones, does not create topics on first use.

``start`` restarts by default: where the run directory holds a broker that was formatted
(``data/meta.properties`` and ``server.properties``) and none runs, the broker comes back as it
was, with its server.properties (so on the same ports, every listener's), its data (topics,
records, committed offsets, SCRAM credentials) and its TLS material, after a ``stop`` or a
``kill`` alike; ``--override`` is then applied to its server.properties, where it stays.  A
port that something else holds by then is an error naming it, never a silent move.  Where the
run directory holds no formatted broker, and always with ``--fresh``, the start is fresh: the
data is wiped, new free ports are picked, the storage is formatted (with the SCRAM user) and new
TLS material is made.  ``stop`` (controlled shutdown) and ``kill`` (SIGKILL, for fault tests)
both keep the data; ``make clean`` or ``--fresh`` drop it.

Beside the plain listener (address in ``bootstrap``) it opens, each on its own free port with
its address in a file of the run directory:

    ``bootstrap-sasl``      SASL_PLAINTEXT, PLAIN and SCRAM-SHA-256 (see SASL_USER below)
    ``bootstrap-ssl``       SSL, server authentication only
    ``bootstrap-sasl-ssl``  SASL_SSL, PLAIN and SCRAM-SHA-256
    ``bootstrap-mtls``      SSL with ``ssl.client.auth=required`` (mutual TLS)

A fresh start makes new TLS material in ``tls/`` of the run directory: a throwaway CA, whose
key is deleted once it has signed; ``ca.pem`` for clients to trust; the broker's PKCS12
keystore (certificate for 127.0.0.1 and localhost) and truststore; and a client certificate
for the mTLS listener, ``client.pem`` with its key ``client-key.pem`` and the same key
encrypted with CLIENT_KEY_PASSWORD in ``client-key-encrypted.pem``.  keytool (beside ``java``)
makes the CA and the broker's stores; the ``openssl`` command makes the client key, which
keytool cannot write as PEM, so without it there is no client certificate.

Standard library only: the tests import this module before anything else is installed.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
CACHE = HERE / ".cache"
DEFAULT_RUN_DIR = HERE / ".run"
# A SASL_PLAINTEXT listener beside the plain one, for testing authenticated clients: PLAIN and
# SCRAM-SHA-256 with one user.  A throwaway credential for a loopback-only scratch broker.
SASL_USER, SASL_PASSWORD = "streamwatch", "streamwatch-secret"
# Listeners beside PLAINTEXT and CONTROLLER: name -> (security protocol, address file).
LISTENERS = {
    "SASL_PLAINTEXT": ("SASL_PLAINTEXT", "bootstrap-sasl"),
    "SSL": ("SSL", "bootstrap-ssl"),
    "SASL_SSL": ("SASL_SSL", "bootstrap-sasl-ssl"),
    "MTLS": ("SSL", "bootstrap-mtls"),
}
# Passwords of the throwaway keystores and of client-key-encrypted.pem (scratch material too).
TLS_STORE_PASSWORD = "localkafka-store"
CLIENT_KEY_PASSWORD = "streamwatch-key-secret"
TLS_DAYS = 365
_ABOUT = {  # what status says of each listener
    "SASL_PLAINTEXT": f"PLAIN, SCRAM-SHA-256 as {SASL_USER} / {SASL_PASSWORD}",
    "SSL": "TLS, the broker's certificate for 127.0.0.1 and localhost",
    "SASL_SSL": f"TLS, then PLAIN, SCRAM-SHA-256 as {SASL_USER} / {SASL_PASSWORD}",
    "MTLS": "TLS, a client certificate from the CA required",
}
# JVM flags for a tool that runs a second: the JIT's first tier only and the serial GC cut the
# start-up of keytool and of the storage format by a third to a half.
_SHORT_LIVED = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
# The broker's JVM flags: the defaults of Kafka's own start script (kafka-run-class.sh's
# KAFKA_JVM_PERFORMANCE_OPTS), so the scratch broker pauses for GC as a stock one does: G1's
# own default pause goal is 200 ms, Kafka's is 20 ms.
_BROKER_JVM = [
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]


def kafka_version() -> str:
    """The Kafka release pinned in pom.xml (one place to change it)."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:
        raise RuntimeError(f"{POM}: no <kafka.version> property")
    return match.group(1)


def log(msg: str) -> None:
    print(f"[localkafka] {msg}", file=sys.stderr, flush=True)


def fetch() -> Path:
    """Resolve the broker's runtime jars into the cache; a no-op when already complete."""
    lib = CACHE / f"lib-{kafka_version()}"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("mvn not found on PATH: Maven is needed to fetch the Kafka jars")
    log(f"resolving Apache Kafka {kafka_version()} jars from Maven Central into {lib} ...")
    if lib.exists():
        shutil.rmtree(lib)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={lib}",
        "-DincludeScope=runtime",
    ]
    subprocess.run(cmd, check=True)
    marker.write_text(kafka_version() + "\n")
    return lib


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    exe = Path(home, "bin", "java") if home else None
    if exe and exe.exists():
        return str(exe)
    found = shutil.which("java")
    if found is None:
        raise RuntimeError("java not found: set JAVA_HOME or put Java 17+ on PATH")
    return found


def keytool() -> str:
    """The keytool of the JDK (or JRE) whose java runs the broker."""
    exe = Path(java()).resolve().parent / "keytool"
    if exe.exists():
        return str(exe)
    found = shutil.which("keytool")
    if found is None:
        raise RuntimeError(f"keytool not found beside {java()} nor on PATH")
    return found


def make_tls(tls: Path) -> None:
    """Fresh TLS material in ``tls`` (see the module docstring).  Each keytool call is a JVM
    start, so the calls run side by side where they can: three rounds in all."""
    if tls.exists():
        shutil.rmtree(tls)
    tls.mkdir(parents=True)
    jvm = [keytool(), *(f"-J{flag}" for flag in _SHORT_LIVED)]
    pkcs12 = ["-storetype", "PKCS12", "-storepass", TLS_STORE_PASSWORD]

    def kt(args: str, store: str) -> list[str]:  # file names relative to tls
        return [*jvm, *args.split(), "-keystore", store, *pkcs12]

    days = f"-validity {TLS_DAYS}"
    client_key: list[list[str]] = []  # the client certificate's part of rounds 1 and 2
    client_cert: list[list[str]] = []
    openssl = shutil.which("openssl")
    if openssl:
        # RSA and these options work with OpenSSL 1.1 and 3 and with LibreSSL alike.
        new_key = f"req -new -newkey rsa:2048 -nodes -subj /CN={SASL_USER} -keyout client-key.pem"
        encrypt = "pkcs8 -topk8 -v2 aes-256-cbc -in client-key.pem -out client-key-encrypted.pem"
        sign = "-gencert -rfc -alias ca -ext eku=clientAuth -infile client.csr -outfile client.pem"
        client_key = [[openssl, *new_key.split(), "-out", "client.csr"]]
        client_cert = [
            [openssl, *encrypt.split(), "-passout", f"pass:{CLIENT_KEY_PASSWORD}"],
            kt(f"{sign} {days}", "ca.p12"),
        ]
    new_ca = "-genkeypair -alias ca -keyalg EC -dname CN=localkafka-CA"
    ca_ext = "-ext bc:c -ext ku:c=keyCertSign,cRLSign"
    _run_all(tls, kt(f"{new_ca} {ca_ext} {days}", "ca.p12"), *client_key)
    # genkeypair -signer wants the CA in the same store: the broker's starts as a copy of the
    # CA's, which loses the CA's key afterwards (the broker must find its own key alone there).
    shutil.copyfile(tls / "ca.p12", tls / "broker.p12")
    new_broker = "-genkeypair -alias broker -keyalg EC -dname CN=127.0.0.1 -signer ca"
    broker_ext = "-ext san=ip:127.0.0.1,dns:localhost -ext eku=serverAuth"
    _run_all(
        tls,
        kt(f"{new_broker} {broker_ext} {days}", "broker.p12"),
        kt("-exportcert -rfc -alias ca -file ca.pem", "ca.p12"),
        *client_cert,
    )
    _run_all(
        tls,
        kt("-delete -alias ca", "broker.p12"),
        kt("-importcert -noprompt -alias ca -file ca.pem", "truststore.p12"),
    )
    for scratch in ("ca.p12", "client.csr"):  # nothing can sign with this CA any more
        (tls / scratch).unlink(missing_ok=True)


def _run_all(cwd: Path, *cmds: list[str]) -> None:
    """Run the commands side by side in ``cwd``; raise with the output of those that failed."""
    procs = [
        (cmd, subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for cmd in cmds
    ]
    failed = []
    for cmd, proc in procs:
        out = proc.communicate()[0].decode(errors="replace").strip()
        if proc.returncode:
            what = next(arg for arg in cmd[1:] if not arg.startswith("-J"))
            failed.append(f"{Path(cmd[0]).name} {what}: {out}")
    if failed:
        raise RuntimeError("making the TLS material failed: " + "; ".join(failed))


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int, taken: Collection[int] = ()) -> list[int]:
    """``n`` distinct free ports, none in ``taken``.  Each socket stays bound until all are
    chosen: bound and closed one at a time, the OS may hand the same port out twice (two of a
    broker's listeners once got one port, and it refused to start)."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < n:
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            got = int(s.getsockname()[1])
            if got not in taken and got not in ports:
                ports.append(got)
        return ports


def _request(port: int, api_key: int, version: int, body: bytes, timeout: float = 2.0) -> bytes:
    """One Kafka request with a v1 header; returns the response body after the correlation id."""
    client = b"localkafka"
    header = struct.pack(">hhih", api_key, version, 7, len(client)) + client
    payload = header + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", _recv(s, 4))[0]
        data = _recv(s, size)
    if struct.unpack(">i", data[:4])[0] != 7:
        raise ConnectionError("correlation id mismatch")
    return data[4:]


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def broker_ready(port: int) -> bool:
    """True when the broker answers ApiVersions and its metadata lists at least one broker."""
    try:
        api = _request(port, 18, 0, b"")  # ApiVersions v0
        if struct.unpack(">h", api[:2])[0] != 0:
            return False
        # Metadata v4: null topic array (all topics), no auto-creation.
        meta = _request(port, 3, 4, struct.pack(">ib", -1, 0))
        _throttle, n_brokers = struct.unpack(">ii", meta[:8])
        return n_brokers > 0
    except OSError:
        return False


class LocalKafka:
    """One broker process whose state lives in ``run_dir``."""

    def __init__(self, run_dir: Path | str = DEFAULT_RUN_DIR) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.pid_file = self.run_dir / "broker.pid"
        self.props_file = self.run_dir / "server.properties"
        self.data_dir = self.run_dir / "data"
        self.bootstrap_file = self.run_dir / "bootstrap"
        self.listener_files = {name: self.run_dir / f for name, (_, f) in LISTENERS.items()}
        self.sasl_bootstrap_file = self.listener_files["SASL_PLAINTEXT"]
        self.ssl_bootstrap_file = self.listener_files["SSL"]
        self.sasl_ssl_bootstrap_file = self.listener_files["SASL_SSL"]
        self.mtls_bootstrap_file = self.listener_files["MTLS"]
        self.tls_dir = self.run_dir / "tls"
        self.ca_file = self.tls_dir / "ca.pem"
        self.log_file = self.run_dir / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None  # set when this object started it

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None  # a broker that died unreaped is not running

    def bootstrap(self) -> str | None:
        return self.bootstrap_file.read_text().strip() if self.bootstrap_file.exists() else None

    def formatted(self) -> bool:
        """True when the run directory holds a broker to restart: formatted storage and the
        server.properties it was formatted with."""
        return (self.data_dir / "meta.properties").exists() and self.props_file.exists()

    def status(self) -> str:
        pid, bootstrap = self.pid(), self.bootstrap()
        if pid is None:
            return "stopped"
        port = int(bootstrap.rsplit(":", 1)[1]) if bootstrap else 0
        state = "ready" if port and broker_ready(port) else "starting or unresponsive"
        lines = [f"running pid={pid} bootstrap={bootstrap} ({state})"]
        for name, path in self.listener_files.items():
            if path.exists():
                lines.append(f"  {name:<15} {path.read_text().strip():<16} {_ABOUT[name]}")
        if self.ca_file.exists():
            lines.append(f"  CA certificate  {self.ca_file}")
        client = self.tls_dir / "client.pem"
        if client.exists():
            lines.append(f"  client (mTLS)   {client}, key client-key.pem or")
            lines.append(f"                  client-key-encrypted.pem ({CLIENT_KEY_PASSWORD})")
        return "\n".join(lines)

    def start(
        self,
        port: int | None = None,
        timeout: float = 90.0,
        overrides: Mapping[str, str] | None = None,
        fresh: bool = False,
    ) -> str:
        """Start the broker unless it already runs; return its bootstrap address.

        A formatted broker in the run directory is restarted as it was (its ports, data and TLS
        material; ``port``, if given, must be its own); ``fresh``, or a run directory without
        one, wipes the data and starts anew (see the module docstring).  ``overrides``: server
        properties set over the defaults, or over a restarted broker's own properties (a
        running broker keeps its own)."""
        running = self.pid()
        if running is not None:
            if fresh:
                raise RuntimeError(
                    f"a broker runs in {self.run_dir} (pid {running}): stop it before a fresh start"
                )
            if self.bootstrap():
                return self.bootstrap()  # type: ignore[return-value]
            raise RuntimeError(
                f"a broker runs in {self.run_dir} (pid {running}) but is not ready "
                f"(starting, or a start that failed): stop it first; see {self.log_file}"
            )
        lib = fetch()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log4j = self.run_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        base = [
            java(),
            "-Xms256m",
            "-Xmx768m",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{lib}/*",
        ]
        if fresh or not self.formatted():
            ports = self._format(base, port, overrides or {})
        else:
            ports = self._reuse(port, overrides or {})
        with self.log_file.open("ab") as out:
            # KAFKA_OPTS: extra JVM flags for the broker, as Kafka's own start script takes them
            extra = shlex.split(os.environ.get("KAFKA_OPTS", ""))
            cmd = [*base[:1], *_BROKER_JVM, *extra, *base[1:], "kafka.Kafka", str(self.props_file)]
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the caller's terminal does not hit the broker
            )
        self._proc = proc
        self.pid_file.write_text(str(proc.pid))
        bootstrap = f"127.0.0.1:{ports['PLAINTEXT']}"
        # A restart recovers the log first (longer after a kill): the same generous deadline.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"broker exited with {proc.returncode}; see {self.log_file}")
            if broker_ready(ports["PLAINTEXT"]):
                for name, path in self.listener_files.items():
                    if name in ports:
                        path.write_text(f"127.0.0.1:{ports[name]}\n")
                self.bootstrap_file.write_text(bootstrap + "\n")
                return bootstrap
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"broker not ready after {timeout:.0f}s; see {self.log_file}")

    def _format(
        self, base: list[str], port: int | None, overrides: Mapping[str, str]
    ) -> dict[str, int]:
        """A fresh broker: wiped data, free ports, formatted storage, new TLS material.
        Returns the listeners' ports by name."""
        others = ["CONTROLLER", *LISTENERS]
        chosen = free_ports(len(others) + (port is None), taken=() if port is None else {port})
        ports = {"PLAINTEXT": port if port is not None else chosen.pop()}
        ports.update(zip(others, chosen, strict=True))
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        text = _server_properties(ports, self.data_dir, self.tls_dir)
        self.props_file.write_text(_override(text, overrides))
        cluster_id = "-"
        while cluster_id.startswith("-"):  # a leading '-' would read as a command-line option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # The TLS material is made while the storage is formatted (JVM starts both).
        with (
            concurrent.futures.ThreadPoolExecutor(1) as pool,
            self.log_file.open("wb") as out,
        ):
            tls = pool.submit(make_tls, self.tls_dir)
            subprocess.run(
                [
                    *base,
                    *_SHORT_LIVED,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.props_file),
                    "--add-scram",
                    f"SCRAM-SHA-256=[name={SASL_USER},password={SASL_PASSWORD}]",
                ],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            tls.result()
        return ports

    def _reuse(self, port: int | None, overrides: Mapping[str, str]) -> dict[str, int]:
        """The formatted broker as it was: its server.properties (``overrides`` applied), data
        and TLS material.  Returns the listeners' ports by name, each checked to be free."""
        text = self.props_file.read_text()
        if overrides:
            text = _override(text, overrides)
            self.props_file.write_text(text)
        props = _properties(text)
        ports = _listener_ports(props.get("listeners", ""))
        if "PLAINTEXT" not in ports:
            raise RuntimeError(f"{self.props_file}: no PLAINTEXT listener; start --fresh")
        if port and port != ports["PLAINTEXT"]:
            raise RuntimeError(
                f"the broker in {self.run_dir} listens on port {ports['PLAINTEXT']}, and a "
                f"restart keeps its ports: start --fresh for port {port}"
            )
        if Path(props.get("log.dirs", "")) != self.data_dir:
            raise RuntimeError(
                f"{self.props_file}: log.dirs is {props.get('log.dirs')!r}, not {self.data_dir} "
                "(a run directory moved or copied?): start --fresh"
            )
        stores = [
            Path(props.get(f"ssl.{kind}.location", "")) for kind in ("keystore", "truststore")
        ]
        missing = [str(store) for store in stores if not store.is_file()]
        if missing:
            raise RuntimeError(f"TLS material missing: {', '.join(missing)}; start --fresh")
        for name, number in ports.items():
            if not _port_free(number):
                raise RuntimeError(
                    f"port {number} ({name} listener of the broker in {self.run_dir}) is in use "
                    "by another process: free it, or start --fresh for new ports"
                )
        absent = [name for name in LISTENERS if name not in ports]
        if absent:  # a run directory from an older localkafka.py
            log(f"this broker has no {', '.join(absent)} listener: start --fresh for one that has")
        with self.log_file.open("ab") as out:
            out.write(f"[localkafka] restart at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        return ports

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (controlled shutdown, then kill); True if one was running.  The
        data stays for the next start."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 30.0) -> bool:
        """Kill the broker at once (SIGKILL: no controlled shutdown, as a crash or a lost
        machine); True if one was running.  The data stays: the next start recovers the log."""
        return self._end(signal.SIGKILL, timeout)

    def _end(self, sig: signal.Signals, timeout: float) -> bool:
        pid = self.pid()
        self.bootstrap_file.unlink(missing_ok=True)
        for path in self.listener_files.values():
            path.unlink(missing_ok=True)
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            if self._proc is not None:  # died by itself: reap it
                self._proc.wait(timeout=10)
                self._proc = None
            return False
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10  # SIGKILL cannot be ignored: gone (ports freed) soon
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if self._proc is not None:
            self._proc.wait(timeout=10)  # reap our own child
            self._proc = None
        self.pid_file.unlink(missing_ok=True)
        return True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is not alive
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _override(properties: str, overrides: Mapping[str, str]) -> str:
    """``properties`` with each key of ``overrides`` set: in place where the key is there,
    appended otherwise (one line per key, so the file says what the broker runs with)."""
    left = dict(overrides)
    lines = []
    for line in properties.splitlines():
        key = line.partition("=")[0]
        lines.append(f"{key}={left.pop(key)}" if key in left else line)
    lines.extend(f"{key}={value}" for key, value in left.items())
    return "\n".join(lines) + "\n"


def _properties(text: str) -> dict[str, str]:
    """The KEY=VALUE lines of a properties file as this module writes it (no continuations)."""
    pairs = (line.partition("=") for line in text.splitlines() if not line.startswith("#"))
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _listener_ports(listeners: str) -> dict[str, int]:
    """``NAME://host:port,...`` (the ``listeners`` property) -> {NAME: port}."""
    ports = {}
    for listener in filter(None, (item.strip() for item in listeners.split(","))):
        name, _, address = listener.partition("://")
        ports[name] = int(address.rsplit(":", 1)[1])
    return ports


def _port_free(port: int) -> bool:
    """True when a listener could bind 127.0.0.1:``port`` now.  SO_REUSEADDR, as the JVM sets
    it on a server socket, so connections the last broker left in TIME_WAIT do not count."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _key_value(text: str) -> tuple[str, str]:
    """argparse type of --override: KEY=VALUE."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def _server_properties(ports: dict[str, int], data: Path, tls: Path) -> str:
    """``ports``: PLAINTEXT, CONTROLLER and each of LISTENERS by name."""
    controller_port = ports["CONTROLLER"]
    at = {name: p for name, p in ports.items() if name != "CONTROLLER"}
    listeners = ",".join(f"{name}://127.0.0.1:{p}" for name, p in at.items())
    protocols = ",".join(f"{name}:{protocol}" for name, (protocol, _) in LISTENERS.items())
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{SASL_USER}="{SASL_PASSWORD}";'
    )
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners={listeners},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={listeners}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,{protocols}
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256
listener.name.sasl_plaintext.plain.sasl.jaas.config={plain}
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={scram}
listener.name.sasl_ssl.plain.sasl.jaas.config={plain}
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}
ssl.keystore.type=PKCS12
ssl.keystore.location={tls / "broker.p12"}
ssl.keystore.password={TLS_STORE_PASSWORD}
ssl.truststore.type=PKCS12
ssl.truststore.location={tls / "truststore.p12"}
ssl.truststore.password={TLS_STORE_PASSWORD}
listener.name.mtls.ssl.client.auth=required
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
"""


_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["fetch", "start", "stop", "kill", "status"])
    parser.add_argument(
        "--dir",
        default=os.environ.get("STREAMWATCH_KAFKA_DIR", str(DEFAULT_RUN_DIR)),
        help="run directory for config, data, log and pid (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="listener port of a fresh start (default: a free one; a restart keeps its own)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start: wipe the data and start a new broker on new ports (default: restart the "
        "one in the run directory, if there is one, as it was)",
    )
    parser.add_argument(
        "--override",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="start: set a server property over the defaults, e.g. "
        "auto.create.topics.enable=false (repeatable)",
    )
    args = parser.parse_args(argv)
    broker = LocalKafka(args.dir)
    try:
        if args.command == "fetch":
            print(fetch())
        elif args.command == "start":
            print(broker.start(port=args.port, overrides=dict(args.override), fresh=args.fresh))
        elif args.command == "stop":
            log("stopped" if broker.stop() else "not running")
        elif args.command == "kill":
            log("killed" if broker.kill() else "not running")
        else:
            print(broker.status())
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

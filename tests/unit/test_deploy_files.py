"""Deployment files parse, and agree with the config format and the CLI they drive."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamwatch.config import Config, parse
from streamwatch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
K8S_ROOT = ROOT / "deploy" / "k8s"
K8S = K8S_ROOT / "base"
CHART = ROOT / "deploy" / "helm" / "streamwatch"
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "streamwatch.service"
EXAMPLE = ROOT / "deploy" / "streamwatch.example.yaml"

# Helm's templates are not YAML until rendered (tests/integration/test_k8s_manifests.py).
YAML_FILES = sorted(
    p
    for d in (DOCKER, K8S_ROOT, CHART)
    for p in d.rglob("*")
    if p.suffix in (".yaml", ".yml") and "templates" not in p.parts
)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# -- every YAML file ---------------------------------------------------------------------------


def test_the_deploy_yaml_files_are_there() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in YAML_FILES}
    expected = {
        "deploy/docker/compose.yaml",
        "deploy/docker/prometheus.yml",
        "deploy/docker/streamwatch.compose.yaml",
        "deploy/k8s/base/configmap.yaml",
        "deploy/k8s/base/statefulset.yaml",
        "deploy/k8s/base/kustomization.yaml",
        "deploy/k8s/base/service.yaml",
        "deploy/k8s/overlays/production/kustomization.yaml",
        "deploy/k8s/overlays/production/pdb.yaml",
        "deploy/k8s/overlays/production/podmonitor.yaml",
        "deploy/k8s/overlays/keda/kustomization.yaml",
        "deploy/k8s/overlays/keda/scaledobject.yaml",
        "deploy/k8s/components/kafka-auth/kustomization.yaml",
        "deploy/helm/streamwatch/Chart.yaml",
        "deploy/helm/streamwatch/values.yaml",
    }
    assert expected <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_yaml_parses(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert docs
    assert all(isinstance(doc, dict) for doc in docs), "each document must be a mapping"


def test_only_endpoints_that_the_daemon_serves() -> None:
    import re

    served = {"/metrics", "/healthz", "/readyz"}
    for d in (DOCKER, K8S_ROOT, CHART, SYSTEMD):
        for path in d.rglob("*"):
            if not path.is_file() or path.suffix == ".go":
                continue
            text = path.read_text(encoding="utf-8")
            for endpoint in re.findall(r":9108(/\w+)", text):  # URLs on the metrics port
                assert endpoint in served, (path, endpoint)
            requested = re.findall(r"GET (/\w+)", text)  # the readiness probe's request
            requested += re.findall(r"^\s*path: (/\w+)\s*$", text, re.M)  # httpGet, PodMonitor
            for endpoint in requested:
                assert endpoint in served, (path, endpoint)


# -- Dockerfile --------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def _instructions(name: str) -> list[str]:
    return [rest for word, rest in _dockerfile() if word == name]


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    bases = [rest.split()[0] for rest in _instructions("FROM")]
    assert len(bases) >= 2
    assert set(bases) == {"python:3.11-slim"}


def test_dockerfile_installs_the_package_without_the_train_extra() -> None:
    installs = [
        m.group(1)
        for run in _instructions("RUN")
        for m in re.finditer(r"pip install ([^&;|]*)", run)
    ]
    assert installs, "no pip install in the Dockerfile"
    for args in installs:
        assert "train" not in args and "torch" not in args, args
    assert any(re.search(r"(^|\s)\.(\s|$)", args) for args in installs), "pip install . missing"


def test_dockerfile_copies_files_that_exist() -> None:
    for rest in _instructions("COPY"):
        parts = [p for p in rest.split() if not p.startswith("--")]
        if "--from=" in rest:
            continue
        for src in parts[:-1]:
            if "*" in src:  # optional files, e.g. README*
                continue
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


def test_dockerfile_runs_the_daemon_as_non_root() -> None:
    assert [json.loads(x) for x in _instructions("ENTRYPOINT")] == [["streamwatch"]]
    cmd = [json.loads(x) for x in _instructions("CMD")]
    assert cmd == [["run", "--config", "/etc/streamwatch/streamwatch.yaml"]]
    users = _instructions("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert _instructions("STOPSIGNAL") == ["SIGTERM"]
    assert "9108" in " ".join(_instructions("EXPOSE")).split()


# -- compose -----------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(DOCKER / "compose.yaml")
    return data["services"]


def _volume(spec: str) -> tuple[str, str, str]:
    src, dst, *mode = spec.split(":")
    return src, dst, mode[0] if mode else "rw"


def _compose_config() -> Config:
    return parse(_yaml(DOCKER / "streamwatch.compose.yaml"))


def test_compose_config_is_the_example_with_compose_addresses() -> None:
    cfg = _compose_config()
    example = parse(_yaml(EXAMPLE))
    assert cfg.kafka.bootstrap_servers == "kafka:9092"
    assert cfg.model.path == "/models/example"
    # Everything else follows the example, so that the two do not drift apart.
    same = dataclasses.replace(
        cfg,
        kafka=dataclasses.replace(cfg.kafka, bootstrap_servers=example.kafka.bootstrap_servers),
        model=dataclasses.replace(cfg.model, path=example.model.path),
    )
    assert same == example


def test_compose_runs_the_mounted_config_with_the_mounted_models() -> None:
    services = _compose()
    sw = services["streamwatch"]
    build = sw["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    argv = sw.get("command") or json.loads(_instructions("CMD")[-1])
    assert argv[:2] == ["run", "--config"]
    mounts = {dst: (src, mode) for src, dst, mode in map(_volume, sw["volumes"])}
    src, mode = mounts[argv[2]]
    assert (DOCKER / src).resolve() == DOCKER / "streamwatch.compose.yaml"
    assert mode == "ro"
    model = Path(_compose_config().model.path)
    ((src, mode),) = [v for dst, v in mounts.items() if model.is_relative_to(dst)]
    assert (DOCKER / src).resolve() == ROOT / "models"
    assert mode == "ro"


def test_compose_kafka_advertises_what_the_daemon_dials() -> None:
    env = _compose()["kafka"]["environment"]
    advertised = {x.split("://", 1)[1] for x in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for server in _compose_config().kafka.bootstrap_servers.split(","):
        assert server.strip() in advertised
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}


def test_compose_publishes_and_scrapes_the_metrics_port() -> None:
    port = _compose_config().metrics.port
    assert f"{port}:{port}" in _compose()["streamwatch"]["ports"]
    prom = _yaml(DOCKER / "prometheus.yml")
    targets = {
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert f"streamwatch:{port}" in targets


# -- Kubernetes --------------------------------------------------------------------------------


def _k8s() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc["kind"] not in objects, f"two {doc['kind']} objects"
            objects[doc["kind"]] = doc
    return objects


def _pod() -> dict[str, Any]:
    spec: dict[str, Any] = _k8s()["StatefulSet"]["spec"]["template"]["spec"]
    return spec


def _container() -> dict[str, Any]:
    (container,) = [c for c in _pod()["containers"] if c["name"] == "streamwatch"]
    return container


def _k8s_config_path() -> str:
    argv = _container().get("command", []) + _container().get("args", [])
    i = argv.index("run")
    assert argv[i + 1] == "--config", argv
    path: str = argv[i + 2]
    return path


def _mounted_configmap_file() -> str:
    """Text of the ConfigMap key that sits at the path the container is told to run with."""
    cm = _k8s()["ConfigMap"]
    volumes = {v["name"]: v for v in _pod()["volumes"]}
    files: dict[str, str] = {}
    for mount in _container()["volumeMounts"]:
        # a volume claim template's mount has no pod volume of its own
        source = volumes.get(mount["name"], {}).get("configMap")
        if not source or source["name"] != cm["metadata"]["name"]:
            continue
        assert mount.get("readOnly") is True
        items = source.get("items") or [{"key": k, "path": k} for k in cm["data"]]
        by_path = {item["path"]: item["key"] for item in items}
        if "subPath" in mount:
            files[mount["mountPath"]] = by_path[mount["subPath"]]
        else:
            for rel, key in by_path.items():
                files[f"{mount['mountPath'].rstrip('/')}/{rel}"] = key
    path = _k8s_config_path()
    assert path in files, f"--config {path} is not where the ConfigMap is mounted: {files}"
    text: str = cm["data"][files[path]]
    return text


def _k8s_config() -> Config:
    return parse(yaml.safe_load(_mounted_configmap_file()))


def test_kustomization_lists_every_manifest() -> None:
    kust = _yaml(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == manifests


def test_the_pods_run_the_configmap_config_and_it_is_valid() -> None:
    cfg = _k8s_config()
    assert cfg.kafka.input_topics
    assert cfg.metrics.host == "0.0.0.0"  # probes and Prometheus come from outside the pod


def _port(value: int | str) -> int:
    if isinstance(value, int):
        return value
    (port,) = [p["containerPort"] for p in _container()["ports"] if p.get("name") == value]
    return int(port)


def _readiness_argv() -> list[str]:
    """The readiness probe's command: python -I -S -c SCRIPT PORT."""
    argv: list[str] = _container()["readinessProbe"]["exec"]["command"]
    assert argv[0] == "/opt/streamwatch/venv/bin/python"  # the image's venv (Dockerfile)
    assert argv[1:4] == ["-I", "-S", "-c"], argv
    return argv


def test_probes_and_scraping_use_the_metrics_port() -> None:
    port = _k8s_config().metrics.port
    container = _container()
    probe = container["livenessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    assert _port(probe["httpGet"]["port"]) == port
    script, probe_port = _readiness_argv()[4:]
    assert "GET /readyz" in script
    assert int(probe_port) == port
    assert port in [p["containerPort"] for p in container["ports"]]
    workload = _k8s()["StatefulSet"]
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    service = _k8s()["Service"]
    (sport,) = service["spec"]["ports"]
    assert _port(sport["targetPort"]) == port
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["clusterIP"] == "None"  # the StatefulSet's governing Service
    assert workload["spec"]["serviceName"] == service["metadata"]["name"]


# The readiness probe, run against the daemon's own HTTP edge (streamwatch.http) in each state
# of its Health: ready unless something other than partitions is missing, so that a replica
# without partitions (none yet, or more replicas than partitions) does not stall a rollout.
@pytest.mark.parametrize(
    ("state", "ready"),
    [
        ({}, True),
        ({"partitions_assigned": False}, True),
        ({"model_loaded": False}, False),  # still loading (the server starts before the daemon)
        ({"state_ready": False}, False),  # restoring checkpoints after an assignment
        ({"broker_reachable": False}, False),
        ({"partitions_assigned": False, "broker_reachable": False}, False),
    ],
    ids=lambda v: str(v),
)
def test_readiness_probe_ignores_only_missing_partitions(
    state: dict[str, bool], ready: bool
) -> None:
    import subprocess
    import sys

    from prometheus_client import CollectorRegistry

    from streamwatch.http import Health, serve

    health = Health(model_loaded=True, partitions_assigned=True, state_ready=True)
    for key, value in state.items():
        setattr(health, key, value)
    server = serve("127.0.0.1", 0, CollectorRegistry(), health)
    try:
        script = _readiness_argv()[4]
        port = str(server.server_address[1])
        # the image's python is 3.11, as this one: the same flags, the same standard library
        run = subprocess.run(
            [sys.executable, "-I", "-S", "-c", script, port],
            capture_output=True,
            text=True,
            timeout=_container()["readinessProbe"]["timeoutSeconds"],
        )
    finally:
        server.shutdown()
    assert (run.returncode == 0) == ready, run.stderr
    if not ready:
        assert run.stderr.startswith("waiting for "), run.stderr  # kubelet shows it in events


def test_readiness_probe_fails_while_nothing_listens() -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])  # bound, not listening: connections are refused
        run = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _readiness_argv()[4], port],
            capture_output=True,
            text=True,
            timeout=5,
        )
    assert run.returncode != 0
    assert "ConnectionRefusedError" in run.stderr


def test_model_comes_from_the_read_only_claim() -> None:
    model = Path(_k8s_config().model.path)
    volumes = {v["name"]: v for v in _pod()["volumes"]}
    (mount,) = [m for m in _container()["volumeMounts"] if model.is_relative_to(m["mountPath"])]
    assert mount.get("readOnly") is True
    claim = volumes[mount["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == "streamwatch-models"


def test_each_replica_checkpoints_to_its_own_volume_as_a_static_member() -> None:
    cfg = _k8s_config()
    where = Path(cfg.state.checkpoint_dir or "")
    (mount,) = [m for m in _container()["volumeMounts"] if where == Path(m["mountPath"])]
    assert not mount.get("readOnly")
    claims = {
        t["metadata"]["name"]: t for t in _k8s()["StatefulSet"]["spec"]["volumeClaimTemplates"]
    }
    assert claims[mount["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert mount["name"] not in {v["name"] for v in _pod()["volumes"]}  # not a shared volume
    # the group instance id is the pod's name, stable across restarts
    assert cfg.kafka is not None and cfg.kafka.group_instance_id_env == "POD_NAME"
    (env,) = [e for e in _container()["env"] if e["name"] == "POD_NAME"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert cfg.kafka.partition_assignment == "cooperative-sticky"


def test_pods_run_locked_down_and_drain_in_time() -> None:
    workload = _k8s()["StatefulSet"]
    assert workload["spec"]["replicas"] == 2
    pod = _pod()
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = _container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    resources = _container()["resources"]
    assert resources["requests"] and resources["limits"]["memory"]
    # One drain budget everywhere: Kubernetes, systemd and compose.
    assert pod["terminationGracePeriodSeconds"] == 60
    assert _unit()["TimeoutStopSec"] == ["60"]
    assert _compose()["streamwatch"]["stop_grace_period"] == "60s"


# -- systemd -----------------------------------------------------------------------------------


def _unit() -> dict[str, list[str]]:
    """Keys of the [Service] section; a key may repeat, so each maps to a list."""
    section = ""
    out: dict[str, list[str]] = {}
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_unit_runs_the_daemon_with_a_config() -> None:
    unit = _unit()
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/streamwatch/venv/bin/streamwatch"
    assert argv[1:3] == ["run", "--config"]
    read_only = [p.lstrip("-") for v in unit["ReadOnlyPaths"] for p in v.split()]
    assert any(Path(argv[3]).is_relative_to(p) for p in read_only), read_only
    assert unit["Type"] == ["notify"]  # READY=1 and the watchdog: test_systemd_unit.py
    assert unit["User"] and unit["User"] != ["root"]


def test_systemd_unit_does_not_restart_on_a_bad_config() -> None:
    unit = _unit()
    assert unit["Restart"] == ["on-failure"]
    prevented = [s for v in unit["RestartPreventExitStatus"] for s in v.split()]
    assert ConfigError.exit_code == 78
    assert str(ConfigError.exit_code) in prevented
    assert unit["KillSignal"] == ["SIGTERM"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
    ],
)
def test_systemd_unit_is_hardened(key: str, value: str) -> None:
    assert _unit()[key] == [value]

"""The Kubernetes manifests as a cluster would get them, without a cluster.

Each rendering (the kustomize base, every overlay, the kafka-auth component, the Helm chart
with its default values and with every option on) is built with the real tools (helm and
kustomize, built from the Go module proxy by deploy/k8s/tools.sh, cached in .build/tools), and
then:

- decoded strictly into the Kubernetes API types, and every pod template checked against the
  restricted Pod Security Standard, by deploy/k8s/validate (k8s.io/api, prometheus-operator's
  monitoring/v1, KEDA's types written out in keda.go; k8s.io/pod-security-admission/policy);
- checked for the facts the deployment depends on: the config the pods run passes
  streamwatch's own parser, the group instance id is the pod's name, the checkpoint volume is
  sized from the state settings, the PDB, PodMonitor and ScaledObject point at the pods and
  their metrics port, and KEDA never scales past the partition count.

The validator is shown to fail on an unknown field, a duplicated key, a wrong type and a Pod
Security violation, and the chart's values.schema.json to refuse bad values by key path.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamwatch.config import Config, parse

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
CHART = ROOT / "deploy/helm/streamwatch"
EVERYTHING = CHART / "ci/everything-values.yaml"
TOOLS = Path(os.environ.get("K8S_TOOLS_DIR", ROOT / ".build/tools"))
RELEASE = "sw"
# bytes a stream in a full checkpoint segment at LSTM 1x64 without scoring.window
# (bench/results-state-2026-12-03.txt); the chart's state.bytesPerStream default
BYTES_PER_STREAM = 658

KUSTOMIZE = ["base", "overlays/production", "overlays/keda", "kafka-auth"]
HELM = ["helm-default", "helm-everything"]


@pytest.fixture(scope="module")
def tools() -> Path:
    """helm, kustomize and streamwatch-k8s-validate, built if missing (minutes the first time;
    Go and the module proxy are on every machine of this project, CI's too)."""
    env = {**os.environ, "K8S_TOOLS_DIR": str(TOOLS)}
    subprocess.run(["bash", str(K8S / "tools.sh")], check=True, env=env, timeout=1800)
    return TOOLS


def _run(argv: list[str | Path], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, **kw)


def _helm(tools: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    # HELM_* homes in a temporary place: no repository config or cache of the user's is read
    home = TOOLS / "helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return _run([tools / "helm", *args], env=env)


@pytest.fixture(scope="module")
def rendered(tools: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rendered")
    # the component applied to the base, as an overlay would
    auth = out / "kafka-auth-overlay"
    auth.mkdir()
    (auth / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "base", auth)],
                "components": [os.path.relpath(K8S / "components/kafka-auth", auth)],
            }
        )
    )
    dirs = {name: K8S / name for name in KUSTOMIZE if name != "kafka-auth"}
    dirs["kafka-auth"] = auth
    files: dict[str, Path] = {}
    for name, where in dirs.items():
        run = _run([tools / "kustomize", "build", where])
        assert run.returncode == 0, run.stderr
        files[name] = out / f"{name.replace('/', '-')}.yaml"
        files[name].write_text(run.stdout)
    for name, values in (("helm-default", []), ("helm-everything", ["-f", str(EVERYTHING)])):
        run = _helm(tools, "template", RELEASE, CHART, *values)
        assert run.returncode == 0, run.stderr
        files[name] = out / f"{name}.yaml"
        files[name].write_text(run.stdout)
    return files


def _objects(path: Path) -> dict[str, dict[str, Any]]:
    """The rendering's objects by kind (one of each here)."""
    objects: dict[str, dict[str, Any]] = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            assert doc["kind"] not in objects, f"two {doc['kind']} objects"
            objects[doc["kind"]] = doc
    return objects


def _container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pod = objects["StatefulSet"]["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "streamwatch"]
    return container


def _mounts(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in _container(objects)["volumeMounts"]}


def _volumes(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in objects["StatefulSet"]["spec"]["template"]["spec"]["volumes"]}


def _config(objects: dict[str, dict[str, Any]]) -> Config:
    """The config file the container is told to run, from the ConfigMap mounted there."""
    argv = _container(objects).get("command", []) + _container(objects)["args"]
    path = Path(argv[argv.index("--config") + 1])
    mount = _mounts(objects)[str(path.parent)]
    assert mount["readOnly"] is True
    source = _volumes(objects)[mount["name"]]["configMap"]
    cm = objects["ConfigMap"]
    assert source["name"] == cm["metadata"]["name"]
    (item,) = [i for i in source["items"] if i["path"] == path.name]
    return parse(yaml.safe_load(cm["data"][item["key"]]))


def _gibibytes(quantity: str) -> float:
    m = re.fullmatch(r"(\d+)(Mi|Gi|Ti)", quantity)
    assert m, quantity
    return int(m[1]) * {"Mi": 2**-10, "Gi": 1, "Ti": 2**10}[m[2]]


def _labels_selected(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, selector  # the manifests use no expressions
    return bool(selector["matchLabels"]) and selector["matchLabels"].items() <= labels.items()


# -- rendering, linting, validating ------------------------------------------------------------


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["default", "everything"])
def test_helm_lint_strict(tools: Path, values: Path | None) -> None:
    run = _helm(tools, "lint", "--strict", CHART, *(["-f", str(values)] if values else []))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 chart(s) failed" in run.stdout


@pytest.mark.parametrize("name", KUSTOMIZE + HELM)
def test_every_object_decodes_strictly_and_passes_restricted_pod_security(
    tools: Path, rendered: dict[str, Path], name: str
) -> None:
    run = _run([tools / "streamwatch-k8s-validate", rendered[name]])
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok: "), run.stdout
    assert '1 pod template(s) pass PodSecurity "restricted:latest"' in run.stdout


# -- what the deployment depends on --------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZE + HELM)
def test_pods_run_a_valid_config_as_static_members_with_their_own_volume(
    rendered: dict[str, Path], name: str
) -> None:
    objects = _objects(rendered[name])
    cfg = _config(objects)  # streamwatch.config.parse: unknown keys and bad values raise
    assert cfg.kafka is not None
    # the group instance id is the pod's name: static membership (docs/operations.md)
    env = {e["name"]: e for e in _container(objects)["env"]}
    assert cfg.kafka.group_instance_id_env == "POD_NAME"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert cfg.kafka.partition_assignment == "cooperative-sticky"
    # the checkpoints go to the replica's own volume, one per pod from the claim template
    sts = objects["StatefulSet"]
    mount = _mounts(objects)[cfg.state.checkpoint_dir or ""]
    (claim,) = [t for t in sts["spec"]["volumeClaimTemplates"] if t["metadata"]["name"]]
    assert claim["metadata"]["name"] == mount["name"]
    assert mount["name"] not in _volumes(objects)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    # probes and the metrics port agree with the config
    port = cfg.metrics.port
    assert cfg.metrics.host == "0.0.0.0"
    assert [p["containerPort"] for p in _container(objects)["ports"]] == [port]
    assert int(_container(objects)["readinessProbe"]["exec"]["command"][-1]) == port


@pytest.mark.parametrize(
    ("name", "bytes_per_stream"),
    [*((n, BYTES_PER_STREAM) for n in [*KUSTOMIZE, "helm-default"]), ("helm-everything", 9076)],
)
def test_the_state_volume_is_sized_from_the_state_settings(
    rendered: dict[str, Path], name: str, bytes_per_stream: int
) -> None:
    """bytes a stream x state.max_streams x 3 (a partition's newest full segment, the one
    before it and their deltas), with room for the chains of partitions that moved away."""
    objects = _objects(rendered[name])
    cfg = _config(objects)
    (claim,) = objects["StatefulSet"]["spec"]["volumeClaimTemplates"]
    size = _gibibytes(claim["spec"]["resources"]["requests"]["storage"])
    need = bytes_per_stream * cfg.state.max_streams * 3 / 2**30
    assert need * 1.4 <= size <= need * 1.5 + 1, (size, need)


def test_the_chart_sizes_the_volume_for_the_streams_it_is_given(tools: Path) -> None:
    sizes = {}
    for streams in (100_000, 1_000_000, 10_000_000):
        run = _helm(tools, "template", RELEASE, CHART, "--set", f"state.maxStreams={streams}")
        assert run.returncode == 0, run.stderr
        (sts,) = [d for d in yaml.safe_load_all(run.stdout) if d and d["kind"] == "StatefulSet"]
        sizes[streams] = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
    assert sizes == {
        100_000: {"storage": "1Gi"},  # 0.28 GiB, rounded up
        1_000_000: {"storage": "3Gi"},  # the kustomize base's
        10_000_000: {"storage": "28Gi"},
    }
    run = _helm(tools, "template", RELEASE, CHART, "--set", "persistence.size=50Gi")
    assert "storage: 50Gi" in run.stdout


def test_the_chart_renders_the_same_config_as_the_kustomize_base(
    rendered: dict[str, Path],
) -> None:
    assert _config(_objects(rendered["helm-default"])) == _config(_objects(rendered["base"]))


@pytest.mark.parametrize("name", ["overlays/production", "overlays/keda", *HELM])
def test_disruptions_and_scraping_reach_the_pods(rendered: dict[str, Path], name: str) -> None:
    objects = _objects(rendered[name])
    template = objects["StatefulSet"]["spec"]["template"]
    labels = template["metadata"]["labels"]
    pdb = objects["PodDisruptionBudget"]
    assert _labels_selected(pdb["spec"]["selector"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    if name == "helm-default":
        assert "PodMonitor" not in objects  # optional in the chart
        return
    monitor = objects["PodMonitor"]
    assert _labels_selected(monitor["spec"]["selector"], labels)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (port,) = [p for p in _container(objects)["ports"] if p["name"] == endpoint["port"]]
    assert port["containerPort"] == _config(objects).metrics.port
    assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize("name", ["overlays/production", "overlays/keda", *HELM])
def test_replicas_spread_over_nodes_and_zones(rendered: dict[str, Path], name: str) -> None:
    objects = _objects(rendered[name])
    template = objects["StatefulSet"]["spec"]["template"]
    spread = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1
        assert _labels_selected(constraint["labelSelector"], template["metadata"]["labels"])


@pytest.mark.parametrize("name", ["overlays/keda", "helm-everything"])
def test_keda_scales_on_lag_no_further_than_the_partitions(
    rendered: dict[str, Path], name: str
) -> None:
    objects = _objects(rendered[name])
    sts = objects["StatefulSet"]
    so = objects["ScaledObject"]
    cfg = _config(objects)
    assert cfg.kafka is not None
    assert "replicas" not in sts["spec"]  # KEDA's HPA owns the count
    target = so["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "StatefulSet",
        sts["metadata"]["name"],
    )
    partitions = int(so["metadata"]["annotations"]["streamwatch/input-partitions"])
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"] <= partitions
    triggers = so["spec"]["triggers"]
    assert {t["metadata"]["topic"] for t in triggers} == set(cfg.kafka.input_topics)
    for trigger in triggers:
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["consumerGroup"] == cfg.kafka.group_id
        assert meta["bootstrapServers"] == cfg.kafka.bootstrap_servers
        assert meta["allowIdleConsumers"] == "false"
        assert meta["offsetResetPolicy"] == cfg.kafka.auto_offset_reset


def test_the_chart_refuses_more_keda_replicas_than_partitions(tools: Path) -> None:
    run = _helm(
        tools,
        "template",
        RELEASE,
        CHART,
        "--set",
        "keda.enabled=true",
        "--set",
        "kafka.inputPartitions=6",
        "--set",
        "keda.maxReplicas=8",
    )
    assert run.returncode != 0
    assert "keda.maxReplicas: 8 is more than kafka.inputPartitions (6)" in run.stderr
    run = _helm(
        tools,
        "template",
        RELEASE,
        CHART,
        "--set",
        "keda.enabled=true",
        "--set",
        "kafka.inputPartitions=6",
    )
    assert run.returncode == 0, run.stderr
    assert "maxReplicaCount: 6\n" in run.stdout  # the default: one replica per partition


def test_sasl_and_tls_come_from_the_secrets_the_config_names(rendered: dict[str, Path]) -> None:
    objects = _objects(rendered["helm-everything"])
    cfg = _config(objects)
    assert cfg.kafka is not None
    assert cfg.kafka.security_protocol == "SASL_SSL"
    env = {e["name"]: e for e in _container(objects)["env"]}
    password = env[cfg.kafka.sasl_password_env or ""]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "streamwatch-kafka", "key": "password"}
    # every TLS file the config names is a key of the TLS Secret, mounted read-only
    volumes = _volumes(objects)
    for path in (cfg.kafka.ssl_cafile, cfg.kafka.ssl_certfile, cfg.kafka.ssl_keyfile):
        assert path
        mount = _mounts(objects)[str(Path(path).parent)]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["secret"]["secretName"] == "streamwatch-kafka-tls"
    # KEDA reads the lag with the same credentials
    auth = objects["TriggerAuthentication"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "password": ("streamwatch-kafka", "password"),
        "ca": ("streamwatch-kafka-tls", Path(cfg.kafka.ssl_cafile or "").name),
        "cert": ("streamwatch-kafka-tls", Path(cfg.kafka.ssl_certfile or "").name),
        "key": ("streamwatch-kafka-tls", Path(cfg.kafka.ssl_keyfile or "").name),
    }
    (user,) = auth["spec"]["env"]
    assert env[user["name"]]["value"] == cfg.kafka.sasl_username
    for trigger in objects["ScaledObject"]["spec"]["triggers"]:
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert trigger["metadata"]["sasl"] == "scram_sha_512"
        assert trigger["metadata"]["tls"] == "enable"


def test_the_kafka_auth_component_provides_what_its_config_keys_name(
    rendered: dict[str, Path],
) -> None:
    """The component's comment gives the config keys to add; the pod must have the variable
    and the files they name."""
    objects = _objects(rendered["kafka-auth"])
    note = (K8S / "components/kafka-auth/kustomization.yaml").read_text()
    keys = dict(re.findall(r"^#\s+(sasl_password_env|ssl_cafile): (\S+)", note, re.M))
    env = {e["name"]: e for e in _container(objects)["env"]}
    assert env[keys["sasl_password_env"]]["valueFrom"]["secretKeyRef"]["name"]
    mount = _mounts(objects)[str(Path(keys["ssl_cafile"]).parent)]
    assert mount["readOnly"] is True
    assert _volumes(objects)[mount["name"]]["secret"]["secretName"]


def test_the_readiness_probe_is_the_same_everywhere(rendered: dict[str, Path]) -> None:
    """tests/unit/test_deploy_files.py runs the base's probe against the daemon's HTTP edge."""
    probes = {name: _container(_objects(path))["readinessProbe"] for name, path in rendered.items()}
    assert len({yaml.safe_dump(p) for p in probes.values()}) == 1, probes


# -- the checks can fail -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (["--set-string", "replicas=two"], "at '/replicas': got string, want integer"),
        (
            ["--set", "kafka.bootstrapServer=kafka:9092"],
            "at '/kafka': additional properties 'bootstrapServer' not allowed",
        ),
        (["--set", "replica=3"], "additional properties 'replica' not allowed"),
        (["--set", "kafka.sasl.enabled=true"], "at '/kafka/sasl/existingSecret'"),
        (["--set", "metrics.port=70000"], "at '/metrics/port'"),
        (["--set", "persistence.size=3GB"], "at '/persistence/size'"),
    ],
    ids=["wrong-type", "unknown-key", "unknown-top-level-key", "sasl-no-secret", "port", "size"],
)
def test_the_values_schema_refuses_bad_values_by_key(
    tools: Path, values: list[str], error: str
) -> None:
    run = _helm(tools, "template", RELEASE, CHART, *values)
    assert run.returncode != 0
    assert "values don't meet the specifications of the schema" in run.stderr
    assert error in run.stderr, run.stderr


def _base_docs(rendered: dict[str, Path]) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered["base"].read_text()) if d]


def _sts(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    return sts


def _unknown_field(docs: list[dict[str, Any]]) -> None:
    _sts(docs)["spec"]["replica"] = 3


def _unknown_nested_field(docs: list[dict[str, Any]]) -> None:
    _sts(docs)["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = (
        "/"
    )


def _wrong_type(docs: list[dict[str, Any]]) -> None:
    _sts(docs)["spec"]["replicas"] = "two"


def _bad_quantity(docs: list[dict[str, Any]]) -> None:
    _sts(docs)["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = (
        "3GB!"
    )


def _privilege_escalation(docs: list[dict[str, Any]]) -> None:
    _sts(docs)["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "allowPrivilegeEscalation"
    ] = True


def _root_allowed(docs: list[dict[str, Any]]) -> None:
    pod = _sts(docs)["spec"]["template"]["spec"]
    del pod["securityContext"]["runAsNonRoot"]
    pod["securityContext"]["runAsUser"] = 0


def _capability_added(docs: list[dict[str, Any]]) -> None:
    caps = _sts(docs)["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "capabilities"
    ]
    caps["add"] = ["NET_ADMIN"]


def _host_path(docs: list[dict[str, Any]]) -> None:
    pod = _sts(docs)["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}})


def _selector_mismatch(docs: list[dict[str, Any]]) -> None:
    _sts(docs)["spec"]["selector"]["matchLabels"] = {"app": "other"}


def _missing_volume(docs: list[dict[str, Any]]) -> None:
    container = _sts(docs)["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"].append({"name": "nowhere", "mountPath": "/x"})


def _service_misses_pods(docs: list[dict[str, Any]]) -> None:
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    svc["spec"]["selector"] = {"app.kubernetes.io/name": "streamwatsh"}


_MUTATIONS = [
    (_unknown_field, 'unknown field "spec.replica"'),
    (
        _unknown_nested_field,
        'unknown field "spec.template.spec.containers[0].livenessProbe.httpGet.paht"',
    ),
    (_wrong_type, "cannot unmarshal string into Go struct field"),
    (_bad_quantity, "quantities must match the regular expression"),
    (
        _privilege_escalation,
        'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false',
    ),
    (_root_allowed, "runAsNonRoot != true"),
    (
        _capability_added,
        'unrestricted capabilities (container "streamwatch" must not include "NET_ADMIN"',
    ),
    (_host_path, 'restricted volume types (volume "host" uses restricted volume type "hostPath")'),
    (_selector_mismatch, "spec.selector: app=other does not select the template's labels"),
    (_missing_volume, 'volumeMount "nowhere" names no volume'),
    (_service_misses_pods, "selects no pod template among the objects"),
]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [pytest.param(m, e, id=m.__name__.strip("_")) for m, e in _MUTATIONS],
)
def test_the_validator_refuses(
    tools: Path, rendered: dict[str, Path], tmp_path: Path, mutate: Any, error: str
) -> None:
    docs = copy.deepcopy(_base_docs(rendered))
    mutate(docs)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    run = _run([tools / "streamwatch-k8s-validate", bad])
    assert run.returncode == 1, run.stdout
    assert error in run.stdout, run.stdout


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nmetadata: {name: b}\n",
            "already set in map",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: 1}\n",
            "cannot unmarshal number",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: A_b}\n",
            "metadata.name: a lowercase RFC 1123",
        ),
        (
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: a}\n",
            "not a type this validator knows",
        ),
        (
            "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: a}\n"
            "spec: {selector: {}, podMetricsEndpoints: [{port: metrics, scrapeEvery: 5s}]}\n",
            'unknown field "spec.podMetricsEndpoints[0].scrapeEvery"',
        ),
        (
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a}\n"
            "spec: {scaleTargetRef: {name: s}, maxReplicaCount: 2, minReplicaCount: 3,"
            " triggers: [{type: kafka, metadata: {topic: t, lagThreshhold: '5'}}]}\n",
            "spec.minReplicaCount 3 > spec.maxReplicaCount 2",
        ),
        (
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a}\n"
            "spec: {scaleTargetRef: {name: s},"
            " triggers: [{type: kafka, metadata: {lagThreshhold: '5'}}]}\n",
            "spec.triggers[0].metadata.lagThreshhold: not a key of the kafka scaler",
        ),
        (
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a}\n"
            "spec: {scaleTargetRef: {name: s}, minReplicas: 1, triggers: []}\n",
            'unknown field "spec.minReplicas"',
        ),
    ],
    ids=[
        "duplicate-key",
        "wrong-type",
        "bad-name",
        "unknown-kind",
        "podmonitor-unknown-field",
        "scaledobject-min-over-max",
        "scaledobject-unknown-kafka-key",
        "scaledobject-unknown-field",
    ],
)
def test_the_validator_refuses_documents(
    tools: Path, tmp_path: Path, text: str, error: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    run = _run([tools / "streamwatch-k8s-validate", bad])
    assert run.returncode == 1, run.stdout
    assert error in run.stdout, run.stdout

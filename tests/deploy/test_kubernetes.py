"""The Kubernetes manifests (deploy/kubernetes) checked against the Kubernetes schemas and against the code,
since no cluster runs here: every resource validates against the API's own schemas (kubernetes-validate ships
them); the KEDA ScaledObjects have the fields KEDA requires; every BATCHERY_ variable is a setting, every port the
settings' port, every probe a route the API serves without a key or a command the CLI has; the autoscalers read
a metric the API exports, for exactly the models each worker Deployment serves.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from batchery import keys
from batchery.app import create_app
from batchery.app.auth import OPEN_RULES
from batchery.cli import main as cli
from batchery.cli.pool import single_slot
from batchery.models.registry import load_registry
from batchery.settings import PREFIX, Settings
from batchery.store.backlog import Backlog
from tests.compose.test_compose import exported_series, metric_names
from tests.deploy.kustomize import containers, render

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
VARIANTS = ["base", "overlays/scale-to-zero", "overlays/cpu-only"]
#: The oldest Kubernetes these manifests are for, and the newest whose schemas kubernetes-validate ships.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
WORKERS = {"worker-cpu", "worker-gpu"}
#: What KEDA's redis scaler can count (it asks TYPE, then LLEN, SCARD, ZCARD or HLEN).
KEDA_REDIS_TYPES = {"list", "set", "zset", "hash", "none"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {variant: render(KUBERNETES / variant) for variant in VARIANTS}


@pytest.fixture(scope="module")
def base(rendered) -> list[dict[str, Any]]:
    return rendered["base"]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = containers(doc)
    return only


def literal_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def settings_of(c: dict[str, Any]) -> Settings:
    """The settings the container runs with: its literal BATCHERY_ values (URLs with $(VAR) in them aside)."""
    env = {k: v for k, v in literal_env(c).items() if k.startswith(PREFIX) and "$(" not in v}
    return Settings.from_env(env)


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_validates_against_the_kubernetes_schemas(rendered, variant, version):
    docs = rendered[variant]
    assert {"Namespace", "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet"} <= {d["kind"] for d in docs}
    for doc in docs:
        if doc["kind"] != "ScaledObject":
            kubernetes_validate.validate(doc, version, strict=True)


#: The fields of KEDA's ScaledObject CRD (keda.sh/v1alpha1) these manifests use, with the types and bounds the
#: CRD gives them; KEDA's CRD is not shipped with a package, so its required part is restated here.
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "apiVersion": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "additionalProperties": False,
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer", "minimum": 1},
                    },
                },
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            # KEDA reads every trigger parameter as a string
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_TRIGGER = {"required": ["serverAddress", "query", "threshold"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_scaled_object_has_the_fields_keda_requires_and_scales_a_worker_deployment(rendered, variant):
    docs = rendered[variant]
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    workers = {name for name in deployments(docs) if name in WORKERS}
    assert sorted(s["spec"]["scaleTargetRef"]["name"] for s in scaled) == sorted(workers), "one per worker Deployment"
    for doc in scaled:
        jsonschema.validate(doc, SCALED_OBJECT)
        spec = doc["spec"]
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
        assert {"pollingInterval", "cooldownPeriod"} <= set(spec)
        for trigger in spec["triggers"]:
            assert trigger["type"] == "prometheus", "see test_no_trigger_counts_a_redis_key"
            jsonschema.validate(trigger["metadata"], PROMETHEUS_TRIGGER)
            assert (
                float(trigger["metadata"]["threshold"]) > 0 and float(trigger["metadata"]["activationThreshold"]) >= 0
            )
            assert trigger["metadata"]["serverAddress"].startswith("http")
            assert trigger["metadata"]["ignoreNullValues"] == "false", "a backlog nobody can read holds the fallback"


def backlog_models(query: str) -> set[str]:
    """The models a query's ``model=~"a|b"`` or ``model="a"`` matcher names."""
    (matcher,) = re.findall(r'model=~?"([^"]*)"', query)
    return set(matcher.split("|"))


def test_each_worker_scales_on_the_exported_backlog_of_exactly_the_models_it_serves(base):
    exported = exported_series()
    for doc in (d for d in base if d["kind"] == "ScaledObject"):
        worker = container(find(base, "Deployment", doc["spec"]["scaleTargetRef"]["name"]))
        (trigger,) = doc["spec"]["triggers"]
        query = trigger["metadata"]["query"]
        assert metric_names(query) == {"batchery_backlog_items"} <= exported
        assert "max by (model) (batchery_backlog_items" in query, "every API pod reports the same backlog: max, not sum"
        assert backlog_models(query) == set(option(worker["args"], "--models").split(","))


def test_no_trigger_counts_a_redis_key(rendered, redis_client):
    """KEDA's redis scaler counts a list, set, sorted set or hash. The backlog is a counter (a string), and the
    broker's lists hold only the chunks a lane released (tests/app/test_without_workers.py shows one held back),
    so no Redis key gives KEDA the backlog: the triggers read it through Prometheus."""
    backlog = Backlog(redis_client)
    backlog.reserve("echo-orphan", 1, bound=0)
    try:
        assert redis_client.type(keys.backlog("echo-orphan")).decode() not in KEDA_REDIS_TYPES
    finally:
        backlog.release("echo-orphan", 1)
    for docs in rendered.values():
        triggers = [t for d in docs if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"]]
        assert not [t for t in triggers if t["type"].startswith("redis")]


def test_scale_to_zero_is_an_overlay_and_cpu_only_drops_the_gpu_worker(rendered):
    def minimums(variant: str) -> dict[str, int]:
        scaled = [d for d in rendered[variant] if d["kind"] == "ScaledObject"]
        return {d["metadata"]["name"]: d["spec"]["minReplicaCount"] for d in scaled}

    assert minimums("base") == {"worker-cpu": 1, "worker-gpu": 1}
    assert minimums("overlays/scale-to-zero") == {"worker-cpu": 0, "worker-gpu": 0}
    assert minimums("overlays/cpu-only") == {"worker-cpu": 1}
    assert "worker-gpu" not in deployments(rendered["overlays/cpu-only"])
    api = settings_of(container(find(rendered["overlays/scale-to-zero"], "Deployment", "api")))
    assert api.accept_without_workers, "with workers at zero the API must take jobs, or nothing starts one"


def test_every_batchery_variable_is_a_setting_and_every_reference_resolves(base):
    fields = set(Settings.__dataclass_fields__)
    secrets = {d["metadata"]["name"]: d["stringData"] for d in base if d["kind"] == "Secret"}
    config_maps = {d["metadata"]["name"] for d in base if d["kind"] == "ConfigMap"}
    for name, doc in deployments(base).items():
        c = container(doc)
        defined: set[str] = set()
        for entry in c["env"]:
            if entry["name"].startswith(PREFIX):
                assert entry["name"].removeprefix(PREFIX).lower() in fields, f"{name}: {entry['name']} is no setting"
            for used in re.findall(r"\$\((\w+)\)", entry.get("value", "")):
                assert used in defined, f"{name}: {entry['name']} uses $({used}) before it is defined"
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                assert ref["key"] in secrets[ref["name"]], f"{name}: no key {ref['key']} in {ref['name']}"
            defined.add(entry["name"])
        for arg in c.get("args", []):
            assert set(re.findall(r"\$\((\w+)\)", arg)) <= defined, f"{name}: {arg} names an undefined variable"
        settings_of(c)
        for volume in doc["spec"]["template"]["spec"].get("volumes", []):
            assert "configMap" not in volume or volume["configMap"]["name"] in config_maps


def test_ports_and_redis_address_match_the_settings_and_the_services(base):
    api = container(find(base, "Deployment", "api"))
    port = settings_of(api).port
    assert port == Settings().port == api["ports"][0]["containerPort"]
    (service_port,) = find(base, "Service", "api")["spec"]["ports"]
    assert service_port["targetPort"] == api["ports"][0]["name"]
    (redis_port,) = find(base, "Service", "redis")["spec"]["ports"]
    assert find(base, "StatefulSet", "redis")["spec"]["serviceName"] == "redis"
    for name, doc in deployments(base).items():
        c = container(doc)
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        if name.startswith("worker"):
            metrics = settings_of(c).worker_metrics_port
            assert metrics == Settings().worker_metrics_port == c["ports"][0]["containerPort"]
            assert int(annotations["prometheus.io/port"]) == metrics
        if name != "redis":
            assert settings_of(c).host == "0.0.0.0", f"{name} must listen beyond the pod's loopback"
            url = literal_env(c)["BATCHERY_REDIS_URL"]
            assert re.fullmatch(rf"redis://:\$\(REDIS_PASSWORD\)@redis:{redis_port['port']}/0", url), url
    assert (
        int(find(base, "Deployment", "api")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
        == port
    )


def test_api_probes_are_routes_the_api_serves_without_a_key(base, settings):
    rules = {rule.rule for rule in create_app(settings).url_map.iter_rules()}
    api = container(find(base, "Deployment", "api"))
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz/api", "/readyz waits for workers, which may be at zero"
    for probe in ("livenessProbe", "readinessProbe"):
        path = api[probe]["httpGet"]["path"]
        assert path in rules and path in OPEN_RULES, path
        assert api[probe]["httpGet"]["port"] == api["ports"][0]["name"]


def test_workers_run_real_commands_and_are_probed_by_the_worker_check_of_their_own_name(base):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["batchery"]' in dockerfile, "args are batchery's, and `batchery` is on the image's PATH"
    for name in WORKERS:
        c = container(find(base, "Deployment", name))
        command = cli.commands[c["args"][0]]
        assert {a for a in c["args"][1:] if a.startswith("--")} <= {o for p in command.params for o in p.opts}
        for probe in ("startupProbe", "livenessProbe"):
            argv = c[probe]["exec"]["command"]
            assert argv[0] == "batchery" and argv[1] == "worker-check" and argv[1] in cli.commands
            options = {o for p in cli.commands[argv[1]].params for o in p.opts}
            assert {a for a in argv[2:] if a.startswith("--")} <= options
            assert option(argv, "--name") == option(c["args"], "--name"), f"{name}: the probe checks another worker"
            assert c[probe]["timeoutSeconds"] > 3, "worker-check gives Redis 3 s"
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300, "warm-up time"
        settings = settings_of(c)
        liveness = c["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] > settings.worker_heartbeat_ttl_s * 2


def test_each_worker_serves_models_placed_on_its_device_with_its_share_of_cores(base):
    (models,) = [d for d in base if d["kind"] == "ConfigMap"]
    for name in WORKERS:
        doc = find(base, "Deployment", name)
        c, pod = container(doc), doc["spec"]["template"]["spec"]
        settings = settings_of(c)
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "models"]
        (file,) = models["data"]
        assert settings.models_file == f"{mount['mountPath']}/{file}"
        registry = load_registry(str(BASE / file))
        single_slot(
            registry, option(c["args"], "--name"), settings.worker_device, option(c["args"], "--models").split(",")
        )
        limits = c["resources"]["limits"]
        assert settings.worker_threads == int(limits["cpu"]) == int(c["resources"]["requests"]["cpu"])
        assert pod["terminationGracePeriodSeconds"] > settings.worker_drain_timeout_s, "the drain must finish"
        if name == "worker-gpu":
            assert limits["nvidia.com/gpu"] == 1 and settings.worker_device == "cuda:0", "one GPU, seen as cuda:0"
        else:
            assert "nvidia.com/gpu" not in limits and settings.worker_device == "cpu"


def kustomize(folder: Path) -> list[tuple[str, str]]:
    text = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return sorted((d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])) for d in yaml.safe_load_all(text))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_renderer_agrees_with_kubectl(rendered, variant, tmp_path):
    shutil.copytree(KUBERNETES, tmp_path / "kubernetes")
    shutil.copy(BASE / "secrets.env.example", tmp_path / "kubernetes" / "base" / "secrets.env")
    ours = sorted((d["kind"], d["metadata"]["name"]) for d in rendered[variant])
    assert kustomize(tmp_path / "kubernetes" / variant) == ours

"""The compose stack's files checked against each other and against the code, since Docker does not run here.

Every Prometheus target is a compose service exposing that port; every metric an alert or a dashboard panel
queries is one the code exports (names collected from the code's own registry and collectors); every
``BATCHERY_*`` variable the stack sets is a setting; every ``OTEL_*`` variable one OpenTelemetry's SDK reads, and
the exporter it builds from them reaches the Jaeger service; every path a config names is one compose mounts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from opentelemetry import environment_variables as api_variables
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk import environment_variables as sdk_variables
from prometheus_client import REGISTRY

import batchery.monitoring.metrics  # noqa: F401 (defines the families in the process registry)
from batchery.cli import main as cli
from batchery.models.registry import load_registry
from batchery.monitoring.exporter import api_collectors
from batchery.monitoring.worker_exporter import worker_collectors
from batchery.settings import PREFIX, Settings
from batchery.tasks.celery_app import create_celery
from batchery.tracing import setup as tracing_setup

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
STACK = {"redis", "api", "worker-cpu", "worker-gpu0", "worker-gpu1", "flower", "prometheus", "grafana", "jaeger"}
#: The services that trace (Flower runs no batchery code that does).
TRACED = {"api", "worker-cpu", "worker-gpu0", "worker-gpu1"}
#: A scratch image has no shell or client to probe itself with; Prometheus's `up` for it is its health.
NO_HEALTHCHECK = {"redis-exporter"}
#: Redis speaks no Prometheus; its exporter is scraped in its place.
SCRAPED_THROUGH = {"redis": "redis-exporter"}
ALERTS = {
    "BatcheryLatencyP95AboveTarget",
    "BatcheryItemErrorRateHigh",
    "BatcheryNoLiveWorker",
    "BatcheryQueueGrowing",
    "BatcheryGpuMemoryNearlyFull",
}


def load(name: str) -> dict:
    return yaml.safe_load((COMPOSE / name).read_text())


@pytest.fixture(scope="module")
def services() -> dict:
    return load("docker-compose.yml")["services"]


@pytest.fixture(scope="module")
def prometheus() -> dict:
    return load("prometheus.yml")


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_series()


def exported_series() -> set[str]:
    """Every series name the API's and the workers' /metrics can carry, from the code's registry and collectors."""
    settings = Settings()
    collectors = [
        *api_collectors(create_celery(settings), load_registry(settings.models_file), None),
        *worker_collectors({}),
    ]
    families = [*REGISTRY.collect(), *(f for c in collectors for f in c.describe())]
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["_count", "_sum"]}
    return {f.name + suffix for f in families for suffix in suffixes.get(f.type, [""])}


PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, matchers, ranges, label lists,
    Grafana variables, numbers and function calls are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    names = re.findall(r"(?<![\w.])[a-zA-Z_:][\w:]*\b(?!\s*\()", expr)
    return {n for n in names if n.lower() not in PROMQL_WORDS}


def test_metric_names_finds_metrics_and_only_metrics():
    expr = 'histogram_quantile(0.95, sum by (model, le) (rate(a_seconds_bucket{status="x", m=~"$model"}[$__rate_interval]))) > 1e3 and on(model) b_total offset 5m / ignoring(x) c'
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(entry.split("=", 1) for entry in env)
    return {k: str(v) for k, v in env.items()}


def settings_of(service: dict) -> Settings:
    return Settings.from_env({k: v for k, v in env_of(service).items() if k.startswith(PREFIX)})


def test_the_stack_has_every_service_each_restarting_and_health_checked(services):
    assert STACK <= set(services)
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        assert name in NO_HEALTHCHECK or service["healthcheck"]["test"][0] == "CMD", name


def test_redis_persists_with_aof_on_a_volume(services):
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert all(
        settings_of(s).redis_url == "redis://redis:6379/0"
        for n, s in services.items()
        if "BATCHERY_REDIS_URL" in env_of(s)
    )


def test_each_gpu_worker_reserves_its_own_gpu_and_cpu_workers_can_scale(services):
    gpus = {name: s for name, s in services.items() if name.startswith("worker-gpu")}
    device_ids = []
    for name, service in gpus.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        device_ids += device["device_ids"]
        assert settings_of(service).worker_device == "cuda:0", "the container sees its one GPU as cuda:0"
        assert service["profiles"] == ["gpu"] and "--name" in service["command"]
    assert sorted(device_ids) == [str(i) for i in range(len(gpus))], "one container per GPU, each a different one"
    assert len({s["command"][s["command"].index("--name") + 1] for s in gpus.values()}) == len(gpus)
    cpu = services["worker-cpu"]
    assert "container_name" not in cpu and "ports" not in cpu and "deploy" not in cpu, (
        "`--scale worker-cpu=N` needs no fixed name or host port"
    )


def test_batchery_services_run_real_commands_with_real_settings(services):
    dockerfile = (COMPOSE / services["api"]["build"]["context"] / services["api"]["build"]["dockerfile"]).read_text()
    assert 'ENTRYPOINT ["batchery"]' in dockerfile and "pip install ." in dockerfile
    fields = set(Settings.__dataclass_fields__)
    for name, service in services.items():
        for variable in env_of(service):
            if variable.startswith(PREFIX):
                assert variable.removeprefix(PREFIX).lower() in fields, f"{name}: {variable} is no setting"
        if "build" in service and "entrypoint" not in service:
            command = cli.commands[service["command"][0]]
            options = {opt for param in command.params for opt in param.opts}
            assert {arg for arg in service["command"][1:] if arg.startswith("--")} <= options, name
    assert services["flower"]["entrypoint"][:3] == ["celery", "-A", "batchery.workers"]


def targets(prometheus: dict) -> list[tuple[str, str, int]]:
    """(job, service, port) of every target, static or found through Docker's DNS."""
    found = []
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                found.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            found += [(job["job_name"], name, int(dns["port"])) for name in dns["names"]]
    return found


def test_every_scrape_target_is_a_service_exposing_that_port(services, prometheus):
    for job, host, port in targets(prometheus):
        assert host in services, f"{job}: no service {host}"
        assert str(port) in [str(p) for p in services[host]["expose"]], f"{job}: {host} does not expose {port}"
    for name in ("api", "worker-cpu", "worker-gpu0", "worker-gpu1"):
        settings = settings_of(services[name])
        port = settings.port if name == "api" else settings.worker_metrics_port
        assert (name, port) in {(h, p) for _, h, p in targets(prometheus)}, f"{name} serves /metrics on {port}"


def test_prometheus_scrapes_every_service(services, prometheus):
    scraped = {host for _, host, _ in targets(prometheus)}
    for name in services:
        assert SCRAPED_THROUGH.get(name, name) in scraped, name
    assert env_of(services["redis-exporter"])["REDIS_ADDR"] == "redis://redis:6379"


def mounts(service: dict) -> dict[str, str]:
    """Container path -> host path of the service's bind mounts."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", []) if v.startswith(".")}


def test_prometheus_reads_the_mounted_config_and_alert_rules(services, prometheus):
    service = services["prometheus"]
    config = next(a.split("=", 1)[1] for a in service["command"] if a.startswith("--config.file="))
    assert mounts(service)[config] == "./prometheus.yml"
    (rules,) = prometheus["rule_files"]
    assert mounts(service)[rules] == "./alerts.yml"


def test_alerts_cover_the_operations_that_matter_on_exported_metrics(exported):
    rules = [rule for group in load("alerts.yml")["groups"] for rule in group["rules"]]
    assert ALERTS <= {rule["alert"] for rule in rules}
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"} and rule["annotations"]["summary"]
        names = metric_names(rule["expr"])
        assert names and names <= exported, f"{rule['alert']}: {names - exported} not exported"


def dashboard() -> dict:
    return json.loads((COMPOSE / "grafana" / "dashboards" / "batchery.json").read_text())


def queries(board: dict) -> list[str]:
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        exprs += re.findall(r"label_values\(([\w:]+)\s*,", variable["query"]["query"])
    return exprs


def test_grafana_is_provisioned_with_the_prometheus_service_and_the_mounted_dashboard(services):
    grafana = services["grafana"]
    (source,) = yaml.safe_load((COMPOSE / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    host, port = source["url"].removeprefix("http://").split(":")
    assert host == "prometheus" and port in services["prometheus"]["expose"]
    (provider,) = yaml.safe_load((COMPOSE / "grafana/provisioning/dashboards/batchery.yml").read_text())["providers"]
    assert mounts(grafana)[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts(grafana)["/etc/grafana/provisioning"] == "./grafana/provisioning"
    board = dashboard()
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == source["uid"] for p in panels)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_every_dashboard_query_names_exported_metrics_and_every_family_has_a_panel(exported):
    used = set()
    for expr in queries(dashboard()):
        names = metric_names(expr)
        assert names and names <= exported, f"{expr}: {names - exported} not exported"
        used |= names
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exported if n.startswith("batchery_")}
    shown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert families <= shown, f"no panel for {families - shown}"


def otel_variables() -> set[str]:
    """Every OTEL_* variable OpenTelemetry's API and SDK name."""
    return {
        value
        for module in (api_variables, sdk_variables)
        for value in vars(module).values()
        if isinstance(value, str) and value.startswith("OTEL_")
    }


def test_every_otel_variable_is_one_opentelemetry_reads(services):
    known = otel_variables()
    for name, service in services.items():
        for variable in env_of(service):
            if variable.startswith("OTEL_"):
                assert variable in known, f"{name}: {variable} is no OpenTelemetry variable"


def test_the_api_and_the_workers_export_traces_to_jaeger_by_otlp(services, monkeypatch):
    """The exporter and sampler the SDK builds from each traced service's environment, as its process would."""
    jaeger = services["jaeger"]
    assert env_of(jaeger)["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "16686:16686" in jaeger["ports"], "the UI on the host"
    for name in TRACED:
        env = {k: v for k, v in env_of(services[name]).items() if k.startswith("OTEL_")}
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        settings = settings_of(services[name])
        assert tracing_setup.wanted(settings, env), name
        (exporter,) = tracing_setup.exporters(settings, env)
        assert isinstance(exporter, OTLPSpanExporter), f"{name}: {tracing_setup.HTTP_PROTOBUF} is what batchery installs"
        host, port = exporter._endpoint.removeprefix("http://").split("/", 1)[0].split(":")
        assert exporter._endpoint.endswith("/v1/traces") and host == "jaeger" and port in jaeger["expose"], name
        assert port == "4318", f"{name}: OTLP/HTTP is Jaeger's 4318 (4317 is gRPC)"
        provider = tracing_setup.build_provider(settings, "batchery")
        assert "TraceIdRatioBased{1.0}" in provider.sampler.get_description(), f"{name}: a sampler the SDK knows"
        provider.shutdown()

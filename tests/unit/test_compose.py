"""deploy/docker-compose.yml, checked without Docker: the services, their wiring and that every
``MA_*`` variable it sets is one the pipeline actually reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
APP_SERVICES = ("migrate", "worker", "collector")
#: Publishers whose images we accept: Docker's official library and the projects' own.
OFFICIAL_IMAGES = ("apache/kafka", "clickhouse/clickhouse-server")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def published_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["published"]))
        else:
            ports.add(int(str(port).split(":")[-2] if ":" in str(port) else port))
    return ports


def test_the_five_services_exist(compose: dict[str, Any]) -> None:
    assert {"kafka", "clickhouse", "migrate", "worker", "collector"} <= set(services(compose))


def test_collector_publishes_8080(compose: dict[str, Any]) -> None:
    assert 8080 in published_ports(services(compose)["collector"])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_reach_kafka_clickhouse_and_the_rules(
    compose: dict[str, Any], name: str
) -> None:
    env = environment(services(compose)[name])
    assert env["MA_KAFKA_BOOTSTRAP"] == "kafka:19092"
    assert urlsplit(env["MA_CLICKHOUSE_URL"]).hostname == "clickhouse"
    assert env["MA_CONFIG"] == "/app/config/rules.yaml"
    assert env["MA_HTTP_HOST"] == "0.0.0.0"
    assert "MA_LINK_SECRETS" in env


def test_apps_use_the_internal_listener_kafka_advertises(compose: dict[str, Any]) -> None:
    kafka = environment(services(compose)["kafka"])
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:19092" in advertised
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_apps_log_in_with_the_clickhouse_user_compose_creates(compose: dict[str, Any]) -> None:
    clickhouse = environment(services(compose)["clickhouse"])
    for name in APP_SERVICES:
        url = urlsplit(environment(services(compose)[name])["MA_CLICKHOUSE_URL"])
        assert (url.username, url.password) == (
            clickhouse["CLICKHOUSE_USER"],
            clickhouse["CLICKHOUSE_PASSWORD"],
        )


def test_images_are_official_and_pinned(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        if "build" in service:
            continue  # our own image, built from deploy/Dockerfile
        image, _, tag = service["image"].partition(":")
        assert image in OFFICIAL_IMAGES, f"{name}: {image} is not an official image"
        assert tag and tag != "latest", f"{name}: pin a version tag, not {tag or 'none'}"
    assert services(compose)["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services(compose)["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:25.")


def test_app_image_builds_from_the_official_python_image(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        build = services(compose)[name]["build"]
        dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile == DEPLOY / "Dockerfile", name
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert "pip install -c requirements.lock ." in text


def test_every_ma_variable_is_a_setting() -> None:
    known = {f"MA_{name.upper()}" for name in Settings.model_fields}
    used = set(re.findall(r"\bMA_[A-Z0-9_]+\b", COMPOSE_FILE.read_text()))
    assert used, "the compose file configures the pipeline through MA_* variables"
    assert used <= known, f"not read by pipeline.settings.Settings: {sorted(used - known)}"


def test_dependencies_wait_for_health_and_migration(compose: dict[str, Any]) -> None:
    all_services = services(compose)
    for name in APP_SERVICES:
        for dependency, rule in all_services[name]["depends_on"].items():
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in all_services[dependency], f"{dependency} has none"
            else:
                assert condition == "service_completed_successfully", (name, dependency)
    for name in ("worker", "collector"):
        depends = all_services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["kafka"]["condition"] == "service_healthy"


def test_the_mounted_rules_file_exists(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        mounts = [v for v in services(compose)[name]["volumes"] if v.endswith(":/app/config:ro")]
        assert mounts, f"{name} does not mount the rules folder"
        host = mounts[0].split(":")[0]
        assert (DEPLOY / host / "rules.yaml").is_file()


def test_docker_context_leaves_local_state_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".cache", "data"} <= ignored

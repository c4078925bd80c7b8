"""The local stack's static files: docker-compose.yml, .env.example and the Dockerfile.

No Docker engine is needed: the structure is checked with PyYAML, and the two tools that read
these files for real (`docker-compose config -q`, `hadolint`) run on them. Those tests fail,
not skip, when the tool is missing in CI: .ci/run installs docker-compose, the dev extra hadolint.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from producers.drift import DriftSettings
from producers.gateway_auth import GatewaySettings
from tests.support.tools import tool
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def env_example() -> dict[str, str]:
    """The variables .env.example sets (commented lines set nothing)."""
    lines = (line.strip() for line in ENV_EXAMPLE.read_text().splitlines())
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def test_every_service_has_a_healthcheck_or_is_one_shot() -> None:
    for name, service in services().items():
        if service.get("restart") == "no":
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_nothing_starts_before_what_it_needs() -> None:
    stack = services()
    assert stack["zenml"]["depends_on"] == {"mysql": {"condition": "service_healthy"}}
    assert stack["init"]["depends_on"] == {"zenml": {"condition": "service_healthy"}}
    assert stack["worker"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "zenml": {"condition": "service_healthy"},
        "init": {"condition": "service_completed_successfully"},
    }
    for name in ("gateway", "flower"):
        assert stack[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_every_dependency_is_a_condition_on_a_service_that_can_meet_it() -> None:
    stack = services()
    for name, service in stack.items():
        for needed, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert stack[needed].get("healthcheck", {}).get("test"), f"{name} waits on {needed}'s health"
            else:
                assert rule["condition"] == "service_completed_successfully"
                assert stack[needed]["restart"] == "no", f"{name} waits for {needed} to finish"


def test_workers_scale() -> None:
    """`--scale worker=3` fails on a fixed container name or a fixed host port."""
    worker = services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "trigger worker" in " ".join(worker["command"])


def test_workers_run_in_parallel_and_get_time_for_a_soft_shutdown() -> None:
    worker = services()["worker"]
    assert int(env_example()["TRIGGER_CONCURRENCY"]) > 1
    assert worker["environment"]["TRIGGER_CONCURRENCY"] == "${TRIGGER_CONCURRENCY:-2}"
    assert worker["stop_grace_period"] in {"5m", "10m", "15m", "30m"}
    assert re.search(r"^\s*(ENV\s+)?REMAP_SIGTERM=SIGQUIT\s*$", DOCKERFILE.read_text(), re.MULTILINE)


def test_redis_keeps_what_it_was_given() -> None:
    """AOF fsynced every second, and no eviction: evicting kombu's bindings loses messages."""
    redis = services()["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_every_variable_the_compose_file_uses_is_in_env_example() -> None:
    used = set(VARIABLE.findall(COMPOSE.read_text()))
    assert used, "the pattern finds nothing: it is broken"
    assert used - set(env_example()) == set()


def test_env_example_names_every_trigger_setting() -> None:
    """Commented or set, every TRIGGER_* variable the settings read is documented there."""
    text = ENV_EXAMPLE.read_text()
    for settings in (WorkerSettings, GatewaySettings, DriftSettings):
        prefix = settings.model_config["env_prefix"]
        for field in settings.model_fields:
            assert re.search(rf"^#? ?{prefix}{field.upper()}=", text, re.MULTILINE), f"{prefix}{field.upper()}"


def test_the_stacks_secrets_stay_out_of_workers_and_gateway() -> None:
    """They read .env for their TRIGGER_* settings; the database and admin passwords are blanked."""
    secrets = {name for name in env_example() if re.search("PASSWORD|SECRET|AUTH", name)}
    assert {"MYSQL_PASSWORD", "ZENML_ADMIN_PASSWORD", "FLOWER_BASIC_AUTH"} <= secrets
    for name in ("worker", "gateway"):
        environment = services()[name]["environment"]
        assert {secret: environment.get(secret) for secret in secrets} == dict.fromkeys(secrets, "")


def test_zenml_server_image_matches_the_installed_zenml() -> None:
    assert services()["zenml"]["image"] == f"zenmldocker/zenml-server:{version('zenml')}"


def test_images_are_pinned() -> None:
    for name, service in services().items():
        if "build" in service:  # our image, built from the Dockerfile
            continue
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", service["image"]), f"{name}: {service['image']}"


def test_dockerfile_pins_a_slim_python_and_runs_as_a_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)


def test_dependencies_install_before_the_code_is_copied() -> None:
    """The slow layer is rebuilt only when pyproject.toml changes, not on every edit."""
    lines = DOCKERFILE.read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if "pip install" in line and "requirements" in line)
    assert lines.index("COPY pyproject.toml ./") < install < lines.index("COPY worker ./worker")


@pytest.mark.parametrize("profile", [[], ["--profile", "observability"]], ids=["default", "observability"])
@pytest.mark.parametrize("env_name", [".env", ".env.example"])
def test_docker_compose_accepts_the_file_with_env_example_as_env(
    tmp_path: Path, env_name: str, profile: list[str]
) -> None:
    """What `cp .env.example .env && docker compose [--profile observability] up` reads, checked by compose
    itself; and a fresh clone, before that copy, validates too (the containers' settings file then is
    .env.example)."""
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / env_name)
    result = subprocess.run(
        [tool("docker-compose"), "-f", str(tmp_path / "docker-compose.yml"), *profile, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

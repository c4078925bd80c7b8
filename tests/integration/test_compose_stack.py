"""The compose smoke test: docker-compose.yml's services run as local processes, and the stack works.

No Docker engine runs here, so each service's command is started the way compose would start it
(tests/support/compose_stack.py says how each one is made local): with its own environment from
`docker-compose config` and .env.example, in `depends_on` order, each waited for with its own
healthcheck. Then a request sent through the gateway runs on the ZenML server with init's API key,
and the schedules file beat is given (the way compose gives it) fires. A wrong command, a missing
variable or a broken healthcheck fails here, without containers.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from producers.schedules import load_schedules, slot_key, slot_request_id, slot_time
from tests.support.compose_stack import REPO, LocalStack, compose_config, dockerfile_env

pytestmark = pytest.mark.slow

SCHEDULES = """\
- name: smoke
  every: 10s
  pipeline: training_pipeline
  steps: {train_model: {n_estimators: 5}}
"""
TERMINAL = {"succeeded", "failed", "rejected", "duplicate", "coalesced", "cancelled", "dead_lettered", "submitted"}


def env_file(directory: Path, **overrides: str) -> Path:
    """.env.example as `cp .env.example .env` makes it, with `overrides` in place of their lines."""
    lines = (REPO / ".env.example").read_text().splitlines()
    kept = [line for line in lines if line.split("=", 1)[0] not in overrides]
    path = directory / ".env"
    path.write_text("\n".join([*kept, *(f"{name}={value}" for name, value in overrides.items())]) + "\n")
    return path


@pytest.fixture
def compose_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """The stack up: every service started and healthy (or, for init, finished); all stopped afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the compose smoke test gives each service its own namespaces (unshare, nsenter): run it as root")
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(SCHEDULES)
    env = env_file(tmp_path, STACK_ENV_FILE=str(tmp_path / ".env"), TRIGGER_SCHEDULES_HOST_FILE=str(schedules))
    stack = LocalStack(compose_config(REPO, env), tmp_path / "stack", dockerfile_env(REPO / "Dockerfile"))
    stack.prepare()
    try:
        stack.up(timeout=150)
        yield stack
    finally:
        stack.down()


def http(stack: LocalStack, service: str, port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    """JSON from a service's local port; an HTTP error's JSON body is returned too."""
    data = json.dumps(body).encode() if body is not None else None
    url = f"http://127.0.0.1:{stack.local_port(service, port)}{path}"
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.load(error)


def wait_terminal(stack: LocalStack, request_id: str, timeout: float) -> dict[str, Any]:
    """The request's state through the gateway once terminal; the stack must stay up meanwhile."""
    deadline = time.monotonic() + timeout
    state = http(stack, "gateway", 8080, f"/v1/triggers/{request_id}")
    while state.get("status") not in TERMINAL and time.monotonic() < deadline:
        stack.assert_running()
        time.sleep(1)
        state = http(stack, "gateway", 8080, f"/v1/triggers/{request_id}")
    assert state.get("status") in TERMINAL, f"{request_id} is still {state}:\n{stack.logs()}"
    return state


def first_fired_slot(stack: LocalStack, schedules: Path, since: datetime, timeout: float) -> str:
    """The request id of the first slot beat fired after `since`."""
    schedule = load_schedules(schedules)[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.assert_running()
        slot = slot_time(schedule, since)
        while slot <= datetime.now(UTC):
            request_id = slot_request_id(slot_key(schedule, slot))
            if http(stack, "gateway", 8080, f"/v1/triggers/{request_id}").get("status"):
                return request_id
            slot += timedelta(seconds=schedule.every or 0)
        time.sleep(1)
    raise AssertionError(f"beat fired no slot within {timeout:g} s:\n{stack.logs()}")


def server_run(stack: LocalStack, run_id: str, monkeypatch: pytest.MonkeyPatch, config: Path) -> Any:
    """The run as the ZenML server has it, asked with the API key init wrote for the workers."""
    from zenml.client import Client
    from zenml.config.global_config import GlobalConfiguration

    key = (stack.workdir / "volumes" / "zenml-credentials" / "zenml-api-key").read_text().strip()
    monkeypatch.setenv("ZENML_CONFIG_PATH", str(config))
    monkeypatch.setenv("ZENML_STORE_URL", f"http://127.0.0.1:{stack.local_port('zenml', 8080)}")
    monkeypatch.setenv("ZENML_STORE_API_KEY", key)
    GlobalConfiguration._reset_instance()
    Client._reset_instance()
    try:
        return Client().get_pipeline_run(run_id)
    finally:
        GlobalConfiguration._reset_instance()
        Client._reset_instance()


def flower_status(stack: LocalStack, credentials: str | None) -> int:
    """The status Flower's dashboard answers with, signed in with `user:password` or not at all."""
    request = urllib.request.Request(f"http://127.0.0.1:{stack.local_port('flower', 5555)}/")
    if credentials is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_stack_comes_up_runs_a_gateway_request_on_the_server_and_fires_a_schedule(
    compose_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = datetime.now(UTC)
    body = {"pipeline_name": "training_pipeline", "steps": {"train_model": {"parameters": {"n_estimators": 5}}}}
    accepted = http(compose_stack, "gateway", 8080, "/v1/triggers", {**body, "source": "compose-smoke"})
    assert accepted.get("status") == "queued", accepted

    state = wait_terminal(compose_stack, accepted["request_id"], timeout=120)
    assert state["status"] == "succeeded", f"{state}\n{compose_stack.logs()}"
    run = server_run(compose_stack, state["run_id"], monkeypatch, tmp_path / "client")
    assert (run.pipeline.name, str(run.status)) == ("training_pipeline", "completed")
    assert run.user is not None and run.user.name == "trigger-workers", "the run is not the workers' account's"
    assert any((compose_stack.workdir / "volumes" / "artifacts").iterdir()), "no artifact in the shared volume"

    fired = first_fired_slot(compose_stack, tmp_path / "schedules.yaml", started, timeout=60)
    scheduled = wait_terminal(compose_stack, fired, timeout=120)
    assert scheduled["status"] == "succeeded", f"{scheduled}\n{compose_stack.logs()}"
    assert scheduled["source"] == "schedule:smoke"

    credentials = compose_stack.services["flower"].env["FLOWER_BASIC_AUTH"]
    assert (flower_status(compose_stack, None), flower_status(compose_stack, credentials)) == (401, 200)

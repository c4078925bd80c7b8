"""Templates with ZenML connected to a real local ZenML server (REST store), not the local SQL store."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.state import Status
from tests.integration.conftest import REPO, Stack


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def zenml_server(stack: Stack) -> Iterator[str]:
    """`zenml login --local` on a free port, in this test's ZenML config; stopped afterwards."""
    zenml = str(Path(sys.executable).with_name("zenml"))
    env = {**stack.env(), "ZENML_AUTO_OPEN_DASHBOARD": "false"}
    port = _free_port()
    subprocess.run(
        [zenml, "login", "--local", "--port", str(port)], env=env, check=True, capture_output=True, timeout=180
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([zenml, "logout", "--local"], env=env, capture_output=True, timeout=60)


def test_template_runs_through_a_zenml_server_store(stack: Stack, zenml_server: str) -> None:
    from zenml.client import Client
    from zenml.enums import StoreType

    from tests.integration.conftest import _reset_zenml

    _reset_zenml()
    assert Client().zen_store.type == StoreType.REST and Client().zen_store.url == zenml_server
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "templates",
            "create",
            "served",
            "--pipeline",
            "training_pipeline",
            "-s",
            "train_model.n_estimators=8",
            "--allow",
            "data_url",
            "--json",
        ],
        cwd=REPO,
        env=stack.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    snapshot_id = json.loads(created.stdout.strip().splitlines()[-1])["snapshot_id"]
    stack.start_worker()

    request_id = stack.client.trigger(template="served", parameters={"data_url": "s3://bucket/served.csv"})
    state = stack.wait(request_id, timeout=180)

    assert state.status is Status.SUCCEEDED, stack.logs()
    run = Client().get_pipeline_run(state.run_id)  # read back through the server
    assert run.steps["load_data"].config.parameters["data_url"] == "s3://bucket/served.csv"
    assert run.steps["train_model"].config.parameters["n_estimators"] == 8
    assert run.run_metadata["trigger_template_snapshot_id"] == snapshot_id


def test_the_servers_refusal_is_classified_permanent(stack: Stack, zenml_server: str) -> None:
    """This server's snapshots are not runnable (no remote stack): the real refusal is a permanent error."""
    from zenml.client import Client

    from tests.integration.conftest import _reset_zenml
    from worker.errors import PermanentError
    from worker.server_backend import ServerBackend
    from worker.templates import TemplateStore

    _reset_zenml()
    subprocess.run(
        [sys.executable, "-m", "producers.cli", "templates", "create", "refused", "--pipeline", "training_pipeline"],
        cwd=REPO,
        env=stack.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    template = TemplateStore().get("refused")
    backend = ServerBackend(Client, wait=False)

    assert backend.available(template) is False  # so the worker runs it in-process instead
    with pytest.raises(PermanentError, match="refused the run"):
        backend.run(template, {}, {}, "refused-run-1")

"""The ZenML step a real run is in reaches its request's state, and `trigger status --wait` shows it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from producers.state import Status
from tests.integration.conftest import REPO, Stack


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_running_request_shows_its_zenml_step_and_ends_with_the_last_one(stack: Stack, pool: str) -> None:
    stack.start_worker(pool=pool, TRIGGER_STEP_INTERVAL="0.5")
    request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 6})
    status = [sys.executable, "-m", "producers.cli", "status", request_id, "--wait", "120"]
    shown = subprocess.run(status, cwd=REPO, env=stack.env(), capture_output=True, text=True, timeout=180)

    final = stack.wait(request_id)
    assert final.status is Status.SUCCEEDED and final.step == "wait_a_while", stack.logs()
    progress = shown.stderr.splitlines()  # piped: a plain line per change, the step's among them
    assert any("running · attempt 1" in line and line.endswith("· step wait_a_while") for line in progress), (
        shown.stderr + stack.logs()
    )
    assert "  step: wait_a_while" in shown.stdout.splitlines(), shown.stdout  # the final state, on stdout

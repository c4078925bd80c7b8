"""One log stream: with TRIGGER_LOG_FORMAT=json every line a real worker, beat or gateway prints is JSON.

Each program runs for real (a run to success and a rejected request for the worker, a few firings
for beat, requests for the gateway), is stopped, and then every line of its output is parsed.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from producers.state import Status
from tests.integration.conftest import REPO, Stack
from tests.integration.test_schedules import SCHEDULES, scheduled_states, start_beat, stop
from tests.support.gateway import start_gateway
from tests.support.gateway import stop as stop_gateway


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of `log` as a JSON object; the first that is not one fails the test, quoted."""
    lines = log.read_text(errors="replace").splitlines()
    assert lines, f"{log.name} is empty"
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{log.name} line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), f"{log.name} line {number} is not a JSON object: {line!r}"
        parsed.append(record)
    return parsed


def loggers(records: list[dict[str, Any]]) -> set[str]:
    return {str(r.get("logger", "")).split(".")[0] for r in records}


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_every_line_a_worker_prints_is_json(stack: Stack, pool: str) -> None:
    stack.start_worker(pool=pool)  # its readiness probe is a rejected request
    ran = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.2})
    assert stack.wait(ran).status is Status.SUCCEEDED, stack.logs()
    stack.stop()

    records = json_lines(stack.log_dir / "w1.log")
    events = {r["event"] for r in records}
    assert {"trigger.rejected", "trigger.succeeded", "trigger.worker_shutting_down"} <= events
    assert {"celery", "zenml", "stdout", "tests"} <= loggers(records), "Celery's, ZenML's and the step's own lines"
    printed = next(r for r in records if r["event"] == "waiting 0.2s")  # the step's print()
    assert printed["request_id"] == ran and printed["pipeline"] == "slow_pipeline"


def test_zenml_still_stores_the_step_output_without_our_request_context(stack: Stack) -> None:
    stack.start_worker()
    ran = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.3})
    assert stack.wait(ran).status is Status.SUCCEEDED, stack.logs()

    stored = "\n".join(p.read_text(errors="replace") for p in stack.zenml_path.rglob("logs/*.log"))
    assert "waiting 0.3s" in stored, "ZenML's capture of the step's output still works"
    assert "request_id" not in stored and ran not in stored


def test_every_line_beat_prints_is_json(stack: Stack, tmp_path: Path) -> None:
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(SCHEDULES)
    beat = start_beat(stack, schedules, "beat")
    try:
        wait_for_a_firing(stack, beat)
    finally:
        stop([beat])
    records = json_lines(stack.log_dir / "beat.log")
    assert "celery" in loggers(records) and any(r["event"].startswith("trigger.schedule_fired") for r in records)


def wait_for_a_firing(stack: Stack, beat: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until beat enqueued a request (a deadline for a hung beat, not a timed assertion); no worker runs it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not scheduled_states(stack):
        assert beat.poll() is None, f"beat exited:\n{stack.logs()}"
        time.sleep(0.2)
    assert scheduled_states(stack), f"beat fired nothing within {timeout:g}s:\n{stack.logs()}"


def test_every_line_the_gateway_prints_is_json(stack: Stack) -> None:
    env = stack.env()
    process, base = start_gateway(env, REPO, stack.log_dir / "gateway.log", log_level="info")
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.post("/v1/triggers", json={"pipeline_name": "slow_pipeline"}).status_code == 202
            assert http.post("/v1/triggers", json={"parameters": {}}).status_code == 422
    finally:
        stop_gateway(process)
    records = json_lines(stack.log_dir / "gateway.log")
    access = [r for r in records if r.get("logger") == "uvicorn.access"]
    assert len(access) >= 3 and any('"POST /v1/triggers HTTP/1.1" 422' in r["event"] for r in access)

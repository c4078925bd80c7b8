"""Issue 7, coalescing: a storm of drift alerts runs once on the newest data, across real workers."""

from __future__ import annotations

import signal
import time

import pytest

from producers.state import Status
from tests.integration.conftest import Stack, zenml_runs

KEY = "drift:churn"
FAST_RECOVERY = {"TRIGGER_LEASE_TIMEOUT": "5", "TRIGGER_HEARTBEAT_INTERVAL": "1"}


def _wait_running(stack: Stack, request_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while stack.client.status(request_id).status is not Status.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.client.status(request_id).status is Status.RUNNING, stack.logs()


def _seconds_of(run: object) -> float:
    return float(run.steps["wait_a_while"].config.parameters["seconds"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("workers", [1, 2])
def test_fifty_alerts_during_a_run_end_as_one_trailing_run_on_the_newest(stack: Stack, workers: int) -> None:
    for index in range(workers):
        stack.start_worker(f"w{index}")
    first = stack.client.trigger("slow_pipeline", parameters={"seconds": 6}, coalesce_key=KEY)
    _wait_running(stack, first)
    alerts = [
        stack.client.trigger("slow_pipeline", parameters={"seconds": round(0.01 * (i + 1), 2)}, coalesce_key=KEY)
        for i in range(50)
    ]

    states = stack.wait_all([first, *alerts], timeout=240)

    statuses = [states[a].status for a in alerts]
    assert states[first].status is Status.SUCCEEDED, stack.logs()
    assert statuses.count(Status.COALESCED) == 49 and states[alerts[-1]].status is Status.SUCCEEDED, statuses
    assert all(states[a].coalesced_into == alerts[-1] for a in alerts[:-1])
    assert states[alerts[-1]].coalesced_count == 49 and len(states[alerts[-1]].coalesced_from) == 49
    runs = zenml_runs("slow_pipeline")
    assert sorted(_seconds_of(r) for r in runs) == [0.5, 6.0]  # the trailing run used the 50th alert's data
    assert len(runs) == 2
    trailing = next(r for r in runs if _seconds_of(r) == 0.5)
    assert trailing.run_metadata["trigger_request_id"] == alerts[-1]  # why it started, on the dashboard
    assert trailing.run_metadata["trigger_coalesce_key"] == KEY
    assert "trigger-source:python-client" in [tag.name for tag in trailing.tags]


def test_a_worker_killed_mid_run_leaves_the_key_runnable(stack: Stack) -> None:
    stack.env_overrides.update({**FAST_RECOVERY, "TRIGGER_RETRY_BASE_DELAY": "0.2"})
    worker = stack.start_worker("doomed")
    first = stack.client.trigger("slow_pipeline", parameters={"seconds": 30}, coalesce_key=KEY)
    _wait_running(stack, first)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    newer = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.2}, coalesce_key=KEY)
    stack.start_worker("rescuer", wait=False)

    states = stack.wait_all([first, newer], timeout=180)

    assert states[newer].status is Status.SUCCEEDED, stack.logs()
    assert states[first].status is Status.COALESCED and states[first].coalesced_into == newer

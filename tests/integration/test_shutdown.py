"""Issue 9, section 5: SIGTERM to a real prefork worker, as `docker compose stop` sends it with the image's
`REMAP_SIGTERM=SIGQUIT`: a run it cuts off goes on at once on the next worker, never after the lease timeout."""

from __future__ import annotations

import signal
import subprocess
from datetime import timedelta

import pytest

from producers import keys
from producers.state import RequestState, Status
from tests.integration.conftest import Stack, zenml_runs
from tests.support.waiting import wait_for

LEASE_TIMEOUT = 60
"""Long on purpose: the test ends well before one lease timeout could have recovered anything."""

IMAGE_ENV = {
    "REMAP_SIGTERM": "SIGQUIT",
    "TRIGGER_LEASE_TIMEOUT": str(LEASE_TIMEOUT),
    "TRIGGER_HEARTBEAT_INTERVAL": "5",
    "TRIGGER_SOFT_SHUTDOWN_TIMEOUT": "2",
}


def exits(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or None if the process was still running after `timeout` seconds."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_sigterm_mid_run_hands_the_request_to_the_next_worker_without_waiting_for_the_lease(
    stack: Stack, pool: str
) -> None:
    """prefork: the cancelled child hands the request on, and kombu's restored copy is skipped. solo: ZenML's
    own SIGTERM handler interrupts the step in the worker's process, which hands the request on likewise."""
    stack.env_overrides.update(IMAGE_ENV)
    first = stack.start_worker("first", pool=pool, TRIGGER_CONCURRENCY="1")
    request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 6})
    assert wait_for(lambda: stack.logged("wait_a_while` has started")), stack.logs()

    first.send_signal(signal.SIGTERM)
    assert exits(first, timeout=45) is not None, f"the worker did not stop:\n{stack.logs()}"
    handed_on = stack.client.states.get(request_id)
    lease_left = stack.redis.exists(keys.lease_key(request_id))
    stack.start_worker("second", pool="prefork", wait=False, TRIGGER_CONCURRENCY="1")
    state = stack.wait(request_id, timeout=120)

    assert handed_on is not None and handed_on.status is Status.RETRYING, stack.logs()
    assert handed_on.error is not None and handed_on.error.type == "WorkerShutdown"
    assert lease_left == 0, "the stopped worker gave its lease back instead of letting it expire"
    assert state.status is Status.SUCCEEDED and state.attempts == 2 and state.lost_attempts == 0, stack.logs()
    assert_not_recovered_by_lease_expiry(stack, handed_on, state)
    if pool == "prefork":
        assert stack.logged("stale copy; its retry is scheduled"), "kombu's restored copy was skipped"
    runs = {run.name: run.status.value for run in zenml_runs("slow_pipeline")}
    assert runs == {f"slow_pipeline-{request_id}-1": "failed", f"slow_pipeline-{request_id}-2": "completed"}


def assert_not_recovered_by_lease_expiry(stack: Stack, handed_on: RequestState, final: RequestState) -> None:
    """The second attempt started less than a lease timeout after the first was handed on, and no copy waited."""
    assert final.started_at is not None
    assert final.started_at - handed_on.updated_at < timedelta(seconds=LEASE_TIMEOUT), (handed_on, final)
    assert not stack.logged("trigger.worker_lost"), "counted as a lost attempt: recovered by the lease path"
    assert not stack.logged("its lease is held") and not stack.logged("earlier attempt's worker is alive")


def test_sigterm_to_an_idle_worker_exits_without_the_soft_shutdown_wait(stack: Stack) -> None:
    stack.env_overrides.update(IMAGE_ENV | {"TRIGGER_SOFT_SHUTDOWN_TIMEOUT": "600"})
    worker = stack.start_worker("idle", pool="prefork", TRIGGER_CONCURRENCY="2")
    # idle: the readiness probe's task has returned (its state is recorded a moment before)
    assert wait_for(lambda: stack.logged("succeeded in"), timeout=30), stack.logs()

    worker.send_signal(signal.SIGTERM)

    assert exits(worker, timeout=60) is not None, f"an idle worker waited for its soft shutdown:\n{stack.logs()}"
    assert stack.logged('"how": "Cold"') and not stack.logged("Initiating Soft Shutdown"), stack.logs()

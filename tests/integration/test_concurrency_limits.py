"""Issue 10, concurrency limits: at most one run of a limited pipeline at once across three real workers,
other pipelines flowing past, and the slot of a killed worker freeing itself."""

from __future__ import annotations

import itertools
import signal
from datetime import datetime, timezone

from producers import keys
from producers.state import Status
from tests.integration.conftest import Stack, zenml_runs
from tests.support.waiting import wait_for

LIMITED = {
    "TRIGGER_CONCURRENCY_LIMITS": '{"slow_pipeline": 1}',
    "TRIGGER_LEASE_TIMEOUT": "5",
    "TRIGGER_HEARTBEAT_INTERVAL": "1",
    "TRIGGER_RETRY_BASE_DELAY": "0.2",
}
FULL = "concurrency limit 'slow_pipeline' (1) is full"


def _deferred_by_the_limit(stack: Stack, request_id: str) -> bool:
    lines = [line for path in stack.log_dir.glob("*.log") for line in path.read_text().splitlines()]
    return any("trigger.deferred" in line and request_id in line and FULL in line for line in lines)


def _started(stack: Stack, name: str) -> bool:
    return "trigger.worker_started" in (stack.log_dir / f"{name}.log").read_text(errors="replace")


def _running(stack: Stack, request_id: str) -> bool:
    state = stack.client.states.get(request_id)
    return state is not None and state.status is Status.RUNNING


def _runner_of(stack: Stack, request_id: str) -> str:
    """The name of the worker whose log says it started `request_id`."""
    for path in stack.log_dir.glob("*.log"):
        if any("trigger.started" in line and request_id in line for line in path.read_text().splitlines()):
            return path.stem
    raise AssertionError(f"no worker started {request_id}:\n{stack.logs()}")


def test_one_run_at_once_across_three_workers_and_a_killed_holder_frees_its_slot(stack: Stack) -> None:
    stack.env_overrides.update(LIMITED)
    zenml_runs()  # creates the ZenML store here, so three workers starting at once do not race to
    workers = {name: stack.start_worker(name, wait=False) for name in ("w1", "w2", "w3")}
    assert wait_for(lambda: all(_started(stack, name) for name in workers), timeout=120), stack.logs()

    limited = [stack.client.trigger("slow_pipeline", parameters={"seconds": 0.3}) for _ in range(10)]
    other = stack.client.trigger("training_pipeline")
    states = stack.wait_all([*limited, other], timeout=240)

    assert {states[r].status for r in [*limited, other]} == {Status.SUCCEEDED}, stack.logs()
    assert {states[r].attempts for r in limited} == {1}, "waiting for a slot burns no attempt"
    runs = sorted(zenml_runs("slow_pipeline"), key=lambda run: run.start_time)
    assert len(runs) == 10
    for before, after in itertools.pairwise(runs):
        assert after.start_time >= before.end_time, f"{after.name} started while {before.name} ran"
    second_start = sorted(states[r].started_at for r in limited if states[r].started_at)[1]
    assert states[other].started_at and states[other].started_at < second_start, "the other pipeline waited"
    assert any(_deferred_by_the_limit(stack, r) for r in limited)
    slots = keys.concurrency_slots_key(stack.queue, "slow_pipeline")
    assert stack.redis.zcard(slots) == 0, "every slot given back"

    holder = stack.client.trigger("slow_pipeline", parameters={"seconds": 6})
    assert wait_for(lambda: _running(stack, holder), timeout=60), stack.logs()
    waiting = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.2})
    assert wait_for(lambda: _deferred_by_the_limit(stack, waiting), timeout=30), stack.logs()
    doomed = workers[_runner_of(stack, holder)]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    killed_at = datetime.now(timezone.utc)

    states = stack.wait_all([waiting, holder], timeout=120)

    assert states[waiting].status is Status.SUCCEEDED, stack.logs()
    assert states[waiting].started_at and states[waiting].started_at > killed_at
    assert states[holder].status is Status.SUCCEEDED and states[holder].lost_attempts == 1, stack.logs()
    assert stack.redis.zcard(slots) == 0

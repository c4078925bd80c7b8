"""Fencing with real processes: a worker paused past its lease (SIGSTOP) and resumed after another took
its request over records nothing, though its run goes on."""

from __future__ import annotations

import signal
import time

from producers import keys
from producers.state import Status
from tests.integration.conftest import Stack, zenml_runs
from tests.support.waiting import wait_for

STALLS = {
    "TRIGGER_LEASE_TIMEOUT": "5",
    "TRIGGER_HEARTBEAT_INTERVAL": "1",
    "TRIGGER_STEP_INTERVAL": "0",  # A stopped inside a ZenML store read would hold the SQLite lock B needs
    "TRIGGER_RETRY_BASE_DELAY": "16",  # attempt 2 is due 8-16 s after B counts A's attempt lost: A writes first
}


def test_a_worker_resumed_after_a_takeover_records_nothing(stack: Stack) -> None:
    stack.env_overrides.update(STALLS)
    a = stack.start_worker("a")
    request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 4}, idempotency_key="drift:fence")
    assert wait_for(lambda: stack.logged("wait_a_while` has started"), timeout=60), stack.logs()
    time.sleep(1)  # inside the step's sleep now, not in a ZenML store write B would wait behind
    a.send_signal(signal.SIGSTOP)  # a long GC pause, swap: A's lease and its message's visibility run out
    try:
        # A BRPOP that A had in flight takes the next message pushed, into a stopped process: feed it this one.
        stack.client.trigger("no_such_pipeline", source="readiness-probe")
        stack.start_worker("b", wait=False)  # kombu restores A's message to B, which counts A's attempt lost
        taken_over = lambda: (s := stack.client.states.get(request_id)) is not None and s.status is Status.RETRYING  # noqa: E731
        assert wait_for(taken_over, timeout=90), stack.logs()
    finally:
        a.send_signal(signal.SIGCONT)  # B frees the lease: A's heartbeat would once have taken it back
    a_log = stack.log_dir / "a.log"
    assert wait_for(lambda: "refused to record: fenced" in a_log.read_text(), timeout=30), stack.logs()

    state = stack.wait(request_id, timeout=60)

    assert state.status is Status.SUCCEEDED, stack.logs()
    assert state.attempts == 2 and state.run_name == f"slow_pipeline-{request_id}-2"
    completed = [r for r in zenml_runs("slow_pipeline") if r.status.value == "completed"]
    assert [str(r.id) for r in completed if r.name == state.run_name] == [state.run_id]
    assert stack.redis.zcard(keys.retry_schedule_key(stack.queue)) == 0, "A scheduled no retry"
    assert stack.redis.get(keys.dead_letter_key(request_id)) is None
    assert stack.redis.get(keys.idempotency_key("drift:fence")) == request_id.encode(), "the claim is intact"
    assert stack.redis.hget(keys.lease_token_key(request_id), "owner") != b"1", "attempt 1's lease owns nothing"

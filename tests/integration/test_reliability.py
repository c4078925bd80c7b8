"""Issue 3: nothing lost, nothing run twice, proven by killing real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from producers import keys
from producers.errors import EnqueueError
from producers.state import Status
from tests.integration.conftest import REPO, Stack, zenml_runs
from tests.support.redis_server import free_port, start_redis
from tests.support.waiting import wait_for

FAST_RECOVERY = {"TRIGGER_LEASE_TIMEOUT": "5", "TRIGGER_HEARTBEAT_INTERVAL": "1"}


def test_sigkill_mid_run_is_recovered_and_run_once_more(stack: Stack) -> None:
    stack.env_overrides.update(FAST_RECOVERY)
    first = stack.start_worker("first")
    request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 8})
    assert wait_for(lambda: stack.logged("wait_a_while` has started"), timeout=90), stack.logs()
    time.sleep(1)  # inside the step now
    first.send_signal(signal.SIGKILL)
    first.wait()

    stack.start_worker("second", wait=False)
    state = stack.wait(request_id, timeout=120)

    assert state.status is Status.SUCCEEDED, stack.logs()
    assert state.attempts == 2
    runs = zenml_runs("slow_pipeline")
    assert len([r for r in runs if r.status.value == "completed"]) == 1
    assert len(runs) == 2  # the interrupted run and the one that finished


def test_sigkill_of_a_prefork_child_mid_run_is_recovered(stack: Stack) -> None:
    """The default pool: Celery requeues the lost child's message at once, while its lease still runs."""
    import psutil

    stack.env_overrides.update(FAST_RECOVERY)
    worker = stack.start_worker("prefork", pool="prefork", TRIGGER_CONCURRENCY="1")
    request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 8})
    assert wait_for(lambda: stack.logged("wait_a_while` has started"), timeout=90), stack.logs()
    (child,) = psutil.Process(worker.pid).children()
    child.send_signal(signal.SIGKILL)

    state = stack.wait(request_id, timeout=120)

    assert state.status is Status.SUCCEEDED, stack.logs()
    assert state.attempts == 2
    assert stack.logged("trigger.deferred"), stack.logs()  # the requeued copy waited for the dead child's lease
    assert len([r for r in zenml_runs("slow_pipeline") if r.status.value == "completed"]) == 1


def test_a_storm_of_1000_identical_alerts_starts_one_run(stack: Stack) -> None:
    stack.start_worker()
    sent = [
        stack.client.trigger("slow_pipeline", parameters={"seconds": 0.1}, idempotency_key="drift:storm")
        for _ in range(1000)
    ]

    states = stack.wait_all(sent, timeout=300)

    statuses = [s.status for s in states.values()]
    assert statuses.count(Status.SUCCEEDED) == 1 and statuses.count(Status.DUPLICATE) == 999, stack.logs()
    assert len(zenml_runs("slow_pipeline")) == 1


def test_a_live_long_run_is_never_taken_twice(stack: Stack) -> None:
    stack.env_overrides.update(FAST_RECOVERY)
    stack.start_worker("a")
    stack.start_worker("b")
    request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 14})  # ~3 lease timeouts

    state = stack.wait(request_id, timeout=120)

    assert state.status is Status.SUCCEEDED, stack.logs()
    assert state.attempts == 1
    assert len(zenml_runs("slow_pipeline")) == 1


def test_conservation_of_mixed_requests(stack: Stack) -> None:
    stack.env_overrides.update({"TRIGGER_MAX_ATTEMPTS": "2", "TRIGGER_RETRY_BASE_DELAY": "0.2"})
    stack.start_worker()
    client = stack.client
    sent = [
        client.trigger("training_pipeline", steps={"train_model": {"n_estimators": 5}}),
        client.trigger("slow_pipeline", parameters={"seconds": 0.1}, idempotency_key="conservation"),
        client.trigger("slow_pipeline", parameters={"seconds": 0.1}, idempotency_key="conservation"),
        client.trigger("slow_pipeline", parameters={"seconds": 0.1}, idempotency_key="conservation"),
        client.trigger("training_pipeline", steps={"nope": {"x": 1}}),
        client.trigger("unregistered_pipeline"),
        client.trigger("failing_pipeline"),
        client.trigger("flaky_pipeline"),
    ]
    stack.redis.lpush(stack.queue, b"garbage that is no request")

    states = stack.wait_all(sent, timeout=240)

    counts = {status: sum(s.status is status for s in states.values()) for status in Status}
    assert all(s.status.terminal for s in states.values()), (counts, stack.logs())
    assert counts[Status.SUCCEEDED] == 2 and counts[Status.DUPLICATE] == 2
    assert counts[Status.REJECTED] == 2 and counts[Status.FAILED] == 1 and counts[Status.DEAD_LETTERED] == 1
    assert states[sent[7]].attempts == 2 and states[sent[7]].error.type == "RunSubmissionFailed"
    expected_letters = {rid for rid, s in states.items() if s.status not in (Status.SUCCEEDED, Status.DUPLICATE)}
    expected_letters |= set(stack.probes)  # readiness probes are rejected requests too
    assert wait_for(lambda: stack.redis.zcard(keys.DEAD_LETTERS_KEY) == len(expected_letters) + 1)
    letters = {m.decode() for m in stack.redis.zrange(keys.DEAD_LETTERS_KEY, 0, -1)}
    assert expected_letters < letters
    (garbage,) = letters - expected_letters
    assert json.loads(stack.redis.get(keys.dead_letter_key(garbage)))["raw_payload"] == "garbage that is no request"


def test_two_workers_same_idempotency_key_200_times_start_one_run(stack: Stack) -> None:
    stack.start_worker("a")
    stack.start_worker("b")
    sent = [
        stack.client.trigger("slow_pipeline", parameters={"seconds": 0.5}, idempotency_key="drift:churn:2026-11-24")
        for _ in range(200)
    ]

    states = stack.wait_all(sent, timeout=240)

    statuses = [s.status for s in states.values()]
    assert statuses.count(Status.SUCCEEDED) == 1, stack.logs()
    assert statuses.count(Status.DUPLICATE) == 199
    winner = next(rid for rid, s in states.items() if s.status is Status.SUCCEEDED)
    assert all(s.duplicate_of == winner for s in states.values() if s.status is Status.DUPLICATE)
    assert len(zenml_runs("slow_pipeline")) == 1


def test_dead_letter_replay_links_both_ways_and_rejects_again(stack: Stack) -> None:
    stack.start_worker()
    bad = stack.client.trigger("training_pipeline", steps={"train_model": {"n_estimators": "many"}})
    assert stack.wait(bad).status is Status.REJECTED
    env = stack.env()

    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", "dlq", "replay", bad],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    new_id = out.strip().split(" -> ")[1]
    replayed = stack.wait(new_id)

    assert replayed.status is Status.REJECTED and replayed.replay_of == bad
    assert stack.client.status(bad).replayed_as == [new_id]
    listed = subprocess.run(
        [sys.executable, "-m", "producers.cli", "dlq", "list", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {bad, new_id} <= {letter["request_id"] for letter in json.loads(listed)}
    purge = subprocess.run(
        [sys.executable, "-m", "producers.cli", "dlq", "purge"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert purge.returncode != 0 and "--yes" in purge.stderr
    subprocess.run([sys.executable, "-m", "producers.cli", "dlq", "purge", "--yes"], cwd=REPO, env=env, check=True)
    assert stack.redis.zcard(keys.DEAD_LETTERS_KEY) == 0


def test_enqueue_fails_fast_when_redis_is_down(stack: Stack) -> None:
    from producers import TriggerClient
    from producers.settings import ProducerSettings

    client = TriggerClient.from_settings(ProducerSettings(redis_url="redis://127.0.0.1:1/0", enqueue_timeout=0.3))
    started = time.monotonic()
    with pytest.raises(EnqueueError, match="could not enqueue"):
        client.trigger("training_pipeline")
    assert time.monotonic() - started < 5  # bounded, not hanging
    assert client.try_send(client_request()) is None and client.failed_enqueues == 1


def client_request():  # type: ignore[no-untyped-def]
    from producers import TriggerRequest

    return TriggerRequest(pipeline_name="training_pipeline")


def test_redis_restart_during_a_burst_loses_nothing_enqueued(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    server = start_redis(port, data_dir)
    stack.redis_url = f"redis://127.0.0.1:{port}/0"
    try:
        stack.start_worker()
        enqueued, refused = [], 0
        for index in range(60):
            if index == 20:
                server.send_signal(signal.SIGKILL)  # appendfsync always: everything acknowledged is on disk
                server.wait()
            if index == 35:
                server = start_redis(port, data_dir)
            try:
                steps = {"train_model": {"n_estimators": 5}} if index % 20 == 0 else {"nope": {}}
                enqueued.append(stack.client.trigger("training_pipeline", steps=steps))
            except EnqueueError:
                refused += 1
            time.sleep(0.05)
        states = stack.wait_all(enqueued, timeout=240)
        assert refused > 0 and len(enqueued) + refused == 60
        assert all(s.status.terminal for s in states.values()), stack.logs()
        assert [s.status for s in states.values()].count(Status.SUCCEEDED) == sum(
            1 for i in range(60) if i % 20 == 0 and not 20 <= i < 35
        )
    finally:
        stack.stop()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        os.environ.pop("UNUSED", None)

"""Priorities and delayed runs with one real worker: an urgent request overtakes a routine backlog, a
request sent `--in 3s` waits `scheduled` in the retry schedule, then runs, and a delayed run survives
a Redis restart while no worker runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from producers import keys
from producers.priority import queue_lists
from producers.state import Status
from tests.integration.conftest import REPO, Stack, zenml_runs
from tests.support.redis_server import free_port, start_redis


def send_in_3s(stack: Stack) -> tuple[str, datetime]:
    """`trigger send --in 3s --json`: the request id and the due time it printed, once checked `scheduled`."""
    command = [sys.executable, "-m", "producers.cli", "send", "slow_pipeline", "-p", "seconds=0.1", "--in", "3s"]
    sent = subprocess.run([*command, "--json"], cwd=REPO, env=stack.env(), capture_output=True, text=True, check=True)
    printed = json.loads(sent.stdout)
    request_id, due = printed["request_id"], datetime.fromisoformat(printed["next_attempt_at"])
    waiting = stack.client.status(request_id)
    assert printed["status"] == "scheduled" and waiting.status is Status.SCHEDULED and waiting.next_attempt_at == due
    assert stack.redis.zcard(keys.retry_schedule_key(stack.queue)) == 1, "held in the retry schedule, not queued"
    return request_id, due


def test_an_urgent_request_overtakes_a_routine_backlog_and_a_delayed_one_runs_when_due(stack: Stack) -> None:
    client = stack.client
    delayed, due = send_in_3s(stack)
    routine = [client.trigger("slow_pipeline", parameters={"seconds": 0.1}) for _ in range(2)]
    middle = client.trigger("slow_pipeline", parameters={"seconds": 0.1}, priority=5)
    urgent = client.trigger("slow_pipeline", parameters={"seconds": 0.1}, priority=9)
    backlog = [*routine, middle, urgent]

    stack.start_worker(wait=False)  # one worker, one run at a time: the backlog is served in priority order
    states = stack.wait_all([*backlog, delayed])

    assert all(state.status is Status.SUCCEEDED for state in states.values()), stack.logs()
    started = sorted(backlog, key=lambda request_id: states[request_id].started_at or datetime.max)
    assert started == [urgent, middle, *routine], "most urgent first; routine ones in the order they were sent"
    runs = sorted(zenml_runs("slow_pipeline"), key=lambda run: run.start_time)
    order = [str(run.id) for run in runs]
    assert [order.index(states[request_id].run_id or "") for request_id in started] == sorted(
        order.index(states[request_id].run_id or "") for request_id in started
    ), "ZenML started the runs in the same order"
    assert sum(stack.redis.llen(name) for name in queue_lists(stack.queue)) == 0

    ran = states[delayed]
    assert ran.started_at is not None and ran.started_at >= due and ran.next_attempt_at is None
    assert stack.redis.zcard(keys.retry_schedule_key(stack.queue)) == 0


def test_a_delayed_run_survives_a_redis_restart_while_no_worker_runs(stack: Stack, tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "redis"
    data_dir.mkdir()
    server = start_redis(port, data_dir)
    stack.redis_url = f"redis://127.0.0.1:{port}/0"
    try:
        due = datetime.now(timezone.utc) + timedelta(seconds=4)
        request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.1}, not_before=due)
        server.send_signal(signal.SIGKILL)  # appendfsync always: the acknowledged enqueue is on disk
        server.wait()
        server = start_redis(port, data_dir)
        assert stack.client.status(request_id).status is Status.SCHEDULED, "the state came back with Redis"

        stack.start_worker(wait=False)  # the first worker starts after the restart, the schedule is in Redis
        state = stack.wait_all([request_id])[request_id]

        assert state.status is Status.SUCCEEDED, stack.logs()
        assert state.started_at is not None and state.started_at >= due, "not run before its time"
    finally:
        stack.stop()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)

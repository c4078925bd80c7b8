"""Celery's own tools on a real worker: `celery -A worker status` and `inspect` answer (remote control is on
by default), through the worker's guarded transport."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.conftest import REPO, Stack
from tests.support.waiting import wait_for


def celery(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`celery -A worker ARGS` with the stack's settings, as an operator runs it."""
    command = [sys.executable, "-m", "celery", "-A", "worker", *args, "--timeout", "5"]
    return subprocess.run(command, cwd=REPO, env=stack.env(), capture_output=True, text=True, timeout=120)


def test_status_and_inspect_active_answer_and_show_the_running_request(stack: Stack) -> None:
    stack.start_worker("tools", pool="prefork", TRIGGER_CONCURRENCY="1")
    request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 20})
    assert wait_for(lambda: stack.logged("wait_a_while` has started")), stack.logs()

    status = celery(stack, "status")
    active = celery(stack, "inspect", "active")
    ping = celery(stack, "inspect", "ping")

    assert status.returncode == 0 and "node online" in status.stdout, status.stdout + status.stderr
    assert any(line.startswith("->  tools-") and line.endswith(": OK") for line in status.stdout.splitlines())
    assert active.returncode == 0 and request_id in active.stdout, active.stdout + active.stderr
    assert "zenml_trigger.run" in active.stdout
    assert ping.returncode == 0 and "pong" in ping.stdout


def test_with_remote_control_off_nothing_answers(stack: Stack) -> None:
    stack.start_worker("silent", TRIGGER_REMOTE_CONTROL="false")

    status = celery(stack, "status")

    assert status.returncode != 0 and "No nodes replied" in status.stdout + status.stderr, status.stdout

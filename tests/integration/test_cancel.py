"""`trigger cancel` against a real worker: a request queued behind a slow run never runs and ends `cancelled`;
the slow run itself (ZenML's local orchestrator, in the worker's process) cannot be stopped and is left alone."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from producers.cli import cli
from producers.state import Status
from producers.stats import read_stats
from tests.integration.conftest import Stack, zenml_runs
from tests.support.waiting import wait_for


def cancel(*args: str) -> Result:
    return CliRunner().invoke(cli, ["cancel", *args], prog_name="trigger")


def test_a_queued_request_is_cancelled_and_never_runs_while_the_running_one_is_left_alone(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIGGER_REDIS_URL", stack.redis_url)
    monkeypatch.setenv("TRIGGER_QUEUE", stack.queue)
    stack.start_worker("cancel")
    client = stack.client
    slow = client.trigger("slow_pipeline", parameters={"seconds": 8})
    behind = client.trigger("slow_pipeline", parameters={"seconds": 0.1}, idempotency_key="nightly")
    assert wait_for(lambda: len(zenml_runs("slow_pipeline")) == 1, timeout=60), stack.logs()
    assert client.status(slow).status is Status.RUNNING

    refused = cancel(slow, "--reason", "too slow")
    cancelled = cancel(behind, "--reason", "wrong data", "--by", "ops")
    again = client.trigger("slow_pipeline", parameters={"seconds": 0.1}, idempotency_key="nightly")

    run_name = client.status(slow).run_name
    assert refused.exit_code == 1, refused.output
    assert f"request {slow} is running and was not cancelled: ZenML run {run_name} was left alone" in refused.output
    assert "local orchestrator" in refused.output
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.output.startswith(f"{behind}: cancelled") and "by ops" in cancelled.output
    states = stack.wait_all([slow, again], timeout=120)
    assert states[slow].status is Status.SUCCEEDED, "the run it could not stop went on to its end"
    assert states[again].status is Status.SUCCEEDED, "the cancel freed the idempotency key for the next request"
    assert client.status(behind).status is Status.CANCELLED, (
        "its copy on the queue, handled before `again`, ran nothing"
    )
    assert not any(behind in run.name for run in zenml_runs("slow_pipeline")), "no ZenML run for the cancelled one"
    assert stack.logged("already finished")
    assert read_stats(stack.redis, stack.queue).outcomes["slow_pipeline"]["cancelled"] == 1

    ended = cancel(slow)
    assert ended.exit_code == 1
    assert (
        ended.output.strip()
        == f"Error: request {slow} already ended succeeded; a request that ended cannot be cancelled"
    )

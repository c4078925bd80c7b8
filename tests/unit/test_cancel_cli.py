"""`trigger cancel ID`: what it prints, and its one-line errors with exit code 1 (CliRunner over fakeredis)."""

from __future__ import annotations

import base64
import json

import fakeredis
import pytest
from click.testing import CliRunner, Result

from producers.cli import cli
from producers.state import RequestState, Status
from worker.processing import Delivery, Processor
from worker.transport import safe_loads


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="trigger")


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    """Every client the CLI builds talks to one fakeredis."""
    monkeypatch.setattr("producers.client.connect", lambda settings: fake_redis)
    return fake_redis


def sent(broker: fakeredis.FakeRedis) -> str:
    return invoke("send", "training_pipeline").output.strip()


def test_cancel_prints_the_cancelled_state_with_who_and_why(broker: fakeredis.FakeRedis) -> None:
    request_id = sent(broker)

    result = invoke("cancel", request_id, "--reason", "wrong data", "--by", "ops")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{request_id}: cancelled"
    assert any(line.startswith("  cancelled: by ops at ") and line.endswith(": wrong data") for line in lines)
    assert "cancelled: by ops" in invoke("status", request_id).output


def test_cancel_json(broker: fakeredis.FakeRedis) -> None:
    request_id = sent(broker)
    printed = json.loads(invoke("cancel", request_id, "--json").output)
    assert printed["status"] == "cancelled" and "@" in printed["cancelled"]["by"]
    assert printed["cancelled"]["reason"] is None and printed["finished_at"] is not None


def test_a_request_that_ended_is_refused_with_exit_1(broker: fakeredis.FakeRedis, processor: Processor) -> None:
    request_id = sent(broker)
    message = safe_loads(broker.rpop("zenml-triggers"), "zenml-triggers")
    args, _, _ = json.loads(base64.b64decode(message["body"]))
    assert processor.handle(Delivery(raw=args[0], task_id=request_id)).status is Status.SUCCEEDED

    result = invoke("cancel", request_id)

    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: request {request_id} already ended succeeded; a request that ended cannot be cancelled"
    )


def test_an_unknown_id_exits_1(broker: fakeredis.FakeRedis) -> None:
    result = invoke("cancel", "nope")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no request with id 'nope' is known (never sent, or expired)"


def test_a_running_request_whose_run_zenml_cannot_find_is_left_running(broker: fakeredis.FakeRedis) -> None:
    request_id = sent(broker)
    state = RequestState.model_validate_json(broker.get(f"zenml-trigger:request:{request_id}") or b"")
    running = state.advance(Status.RUNNING, run_name=f"training_pipeline-{request_id}-1")
    broker.set(f"zenml-trigger:request:{request_id}", running.to_json())

    result = invoke("cancel", request_id)

    assert result.exit_code == 1
    assert result.output.startswith(f"Error: request {request_id} is running and was not cancelled: ZenML run ")
    assert f"training_pipeline-{request_id}-1 was not found from here" in result.output
    assert json.loads(invoke("status", request_id, "--json").output)["status"] == "running"


def test_help_names_the_options_and_the_limits() -> None:
    text = invoke("cancel", "--help").output
    assert "--reason" in text and "--by WHO" in text and "local orchestrator" in text
    assert "cancel" in invoke("--help").output

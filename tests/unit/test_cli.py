"""The `trigger` command's send side: argument parsing, clear one-line errors, send + status over fakeredis."""

from __future__ import annotations

import base64
import json
from typing import Any

import click
import fakeredis
import pytest
from click.testing import CliRunner, Result

from producers.cli import cli, parse_assignment, parse_step_assignments, parse_value
from producers.state import Status
from worker.processing import Delivery, Processor
from worker.transport import safe_loads

STATUS_FIELDS = {
    "request_id",
    "status",
    "pipeline_name",
    "template",
    "attempts",
    "run_id",
    "metrics",
    "error",
    "created_at",
    "updated_at",
}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="trigger")


def error_lines(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    """Every client the CLI builds talks to one fakeredis."""
    monkeypatch.setattr("producers.client.connect", lambda settings: fake_redis)
    return fake_redis


def queued_payloads(client: fakeredis.FakeRedis, queue: str = "zenml-triggers") -> list[dict[str, Any]]:
    payloads = []
    for item in client.lrange(queue, 0, -1):
        args, _, _ = json.loads(base64.b64decode(json.loads(item)["body"]))
        payloads.append(json.loads(args[0]))
    return payloads


class TestParsing:
    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("10", 10),
            ("0.5", 0.5),
            ("true", True),
            ("null", None),
            ("[1,2]", [1, 2]),
            ('{"a": 1}', {"a": 1}),
            ('"10"', "10"),
            ("gradient_boosting", "gradient_boosting"),
            ("s3://bucket/new.csv", "s3://bucket/new.csv"),
            ("", ""),
        ],
    )
    def test_parse_value(self, text: str, value: Any) -> None:
        assert parse_value(text) == value
        assert type(parse_value(text)) is type(value)

    def test_assignment_splits_on_the_first_equals(self) -> None:
        assert parse_assignment("url=s3://b/k?x=1", "-p") == ("url", "s3://b/k?x=1")

    @pytest.mark.parametrize("text", ["novalue", "=1", " =1"])
    def test_assignment_without_a_key_is_a_usage_error(self, text: str) -> None:
        with pytest.raises(click.UsageError, match="expected KEY=VALUE"):
            parse_assignment(text, "-p")

    def test_step_assignments(self) -> None:
        steps = parse_step_assignments(
            ("train_model.model_type=gradient_boosting", "train_model.n_estimators=10", "load_data.n_samples=50")
        )
        assert steps == {
            "train_model": {"model_type": "gradient_boosting", "n_estimators": 10},
            "load_data": {"n_samples": 50},
        }

    @pytest.mark.parametrize("item", ["foo=1", ".x=1", "step.=1"])
    def test_step_assignment_without_step_and_key_is_a_usage_error(self, item: str) -> None:
        with pytest.raises(click.UsageError, match=r"expected STEP\.KEY=VALUE"):
            parse_step_assignments((item,))


class TestSendErrors:
    def test_step_param_without_a_dot(self) -> None:
        result = invoke("send", "training_pipeline", "-s", "foo=1")
        assert result.exit_code == 2
        assert error_lines(result) == [
            "Error: -s 'foo=1': expected STEP.KEY=VALUE, e.g. train_model.model_type=gradient_boosting"
        ]
        assert "Traceback" not in result.output

    @pytest.mark.parametrize(
        "args",
        [["send"], ["send", "training_pipeline", "--template", "nightly"]],
        ids=["none", "both"],
    )
    def test_exactly_one_target(self, args: list[str]) -> None:
        result = invoke(*args)
        assert result.exit_code == 2
        assert error_lines(result) == ["Error: give a PIPELINE or --template NAME (exactly one)"]

    def test_invalid_name_is_a_usage_error_with_its_path(self) -> None:
        result = invoke("send", "not a name")
        assert result.exit_code == 2
        [line] = error_lines(result)
        assert line.startswith("Error: pipeline_name:")

    def test_unreachable_broker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TRIGGER_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
        result = invoke("send", "training_pipeline")
        assert result.exit_code == 1
        assert "could not enqueue" in result.output
        assert "127.0.0.1:1" in result.output
        assert "hunter2" not in result.output
        assert "Traceback" not in result.output
        assert len(error_lines(result)) == 1
        assert isinstance(result.exception, SystemExit)

    def test_status_of_an_unknown_request(self, broker: fakeredis.FakeRedis) -> None:
        result = invoke("status", "nope")
        assert result.exit_code == 1
        assert error_lines(result) == ["Error: no request with id 'nope' is known (never sent, or expired)"]


class TestSendAndStatus:
    def test_send_enqueues_the_request_and_prints_its_id(self, broker: fakeredis.FakeRedis) -> None:
        result = invoke(
            "send",
            "training_pipeline",
            "-p",
            "data_url=s3://b/new.csv",
            "-s",
            "train_model.n_estimators=10",
            "--idempotency-key",
            "k-1",
            "--source",
            "ci",
        )
        assert result.exit_code == 0, result.output
        request_id = result.output.strip()
        [payload] = queued_payloads(broker)
        assert payload["request_id"] == request_id
        assert payload["parameters"] == {"data_url": "s3://b/new.csv"}
        assert payload["steps"] == {"train_model": {"parameters": {"n_estimators": 10}}}
        assert payload["idempotency_key"] == "k-1"
        assert payload["source"] == "ci"

    def test_send_json(self, broker: fakeredis.FakeRedis) -> None:
        result = invoke("send", "training_pipeline", "--json")
        assert result.exit_code == 0
        printed = json.loads(result.output)
        assert printed["status"] == "queued"
        assert printed["request_id"] == queued_payloads(broker)[0]["request_id"]

    def test_status_json_of_a_queued_request(self, broker: fakeredis.FakeRedis) -> None:
        request_id = json.loads(invoke("send", "training_pipeline", "--json").output)["request_id"]
        result = invoke("status", request_id, "--json")
        assert result.exit_code == 0, result.output
        state = json.loads(result.output)
        assert STATUS_FIELDS <= set(state)
        assert state["request_id"] == request_id
        assert state["status"] == "queued"
        assert state["pipeline_name"] == "training_pipeline"
        assert state["template"] is None
        assert state["attempts"] == 0
        assert state["run_id"] is None
        assert state["metrics"] is None
        assert state["error"] is None

    def test_status_after_the_worker_ran_it(self, broker: fakeredis.FakeRedis, processor: Processor) -> None:
        sent = invoke("send", "training_pipeline", "-s", "train_model.model_type=gradient_boosting")
        request_id = sent.output.strip()
        message = safe_loads(broker.rpop("zenml-triggers"), "zenml-triggers")
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        processor.handle(Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs))
        state = json.loads(invoke("status", request_id, "--json").output)
        assert state["status"] == Status.SUCCEEDED.value
        assert state["attempts"] == 1
        assert state["run_id"] == "run-1"
        assert state["metrics"] == {"accuracy": 0.9}
        assert state["updated_at"] >= state["created_at"]

    def test_status_json_shows_the_error_with_details(self, broker: fakeredis.FakeRedis, processor: Processor) -> None:
        request_id = invoke("send", "training_pipeline", "-s", "train_model.n_estimators=many").output.strip()
        message = safe_loads(broker.rpop("zenml-triggers"), "zenml-triggers")
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        processor.handle(Delivery(raw=args[0]))
        state = json.loads(invoke("status", request_id, "--json").output)
        assert state["status"] == "rejected"
        assert state["error"]["type"] == "InvalidParameters"
        assert [d["path"] for d in state["error"]["details"]] == ["steps.train_model.parameters.n_estimators"]
        readable = invoke("status", request_id)
        assert readable.output.startswith(f"{request_id}: rejected")
        assert "steps.train_model.parameters.n_estimators" in readable.output

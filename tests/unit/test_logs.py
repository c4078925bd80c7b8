"""Secrets in logged parameters are redacted, at any depth, by the configured outcome log."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from worker.logs import REDACTED, SecretRedactor, configure_logging, get_logger
from worker.settings import WorkerSettings


@pytest.fixture
def redactor() -> SecretRedactor:
    return SecretRedactor(WorkerSettings().redact_keys)


def test_redacts_nested_secret_keys_and_keeps_the_rest(redactor: SecretRedactor) -> None:
    event = {
        "event": "trigger.started",
        "request_id": "r-1",
        "parameters": {
            "data_url": "s3://bucket/new.csv",
            "api_token": "tok-123",
            "db": {"Password": "hunter2", "host": "db.local", "creds": [{"private_key": "k", "user": "u"}]},
        },
        "steps": {"train_model": {"n_estimators": 10, "AWS_SECRET_ACCESS_KEY": "s"}},
    }
    cleaned = redactor(None, "info", event)
    assert cleaned == {
        "event": "trigger.started",
        "request_id": "r-1",
        "parameters": {
            "data_url": "s3://bucket/new.csv",
            "api_token": REDACTED,
            "db": {"Password": REDACTED, "host": "db.local", "creds": [{"private_key": REDACTED, "user": "u"}]},
        },
        "steps": {"train_model": {"n_estimators": 10, "AWS_SECRET_ACCESS_KEY": REDACTED}},
    }
    assert event["parameters"]["api_token"] == "tok-123", "the caller's dict is not mutated"


def test_whole_value_under_a_secret_key_is_hidden(redactor: SecretRedactor) -> None:
    cleaned = redactor(None, "info", {"credentials": {"user": "u", "pass": "p"}})
    assert cleaned == {"credentials": REDACTED}


def test_no_markers_redacts_nothing() -> None:
    event = {"password": "p", "nested": {"token": "t"}}
    assert SecretRedactor([])(None, "info", event) == event


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_configured_json_log_redacts_and_keeps_event_names(
    restore_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "INFO", ["password", "token"])  # binds the current (captured) stderr
    get_logger().info("trigger.started", parameters={"db_password": "hunter2", "n": 1}, run_name="r")
    get_logger().debug("trigger.debug_noise")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "trigger.started"
    assert record["level"] == "info"
    assert record["parameters"] == {"db_password": REDACTED, "n": 1}
    assert "hunter2" not in lines[0]
    assert "timestamp" in record

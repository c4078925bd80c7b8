"""The log stream (`producers.logs`): our events and every library's records, one JSON object a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from producers.logs import (
    REDACTED,
    SecretRedactor,
    StreamHandler,
    bound_context,
    configure_logging,
    get_logger,
)
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
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def json_stream(redact: tuple[str, ...] = ()) -> io.StringIO:
    stream = io.StringIO()
    configure_logging("json", "INFO", redact, stream=stream)
    return stream


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line as JSON; a line that is not names itself in the failure."""
    parsed = []
    for line in stream.getvalue().splitlines():
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


def test_our_events_are_json_redacted_and_filtered_by_level(restore_logging: None) -> None:
    stream = json_stream(("password", "token"))
    get_logger().info("trigger.started", parameters={"db_password": "hunter2", "n": 1}, run_name="r")
    get_logger().debug("trigger.debug_noise")
    [record] = records(stream)
    assert record["event"] == "trigger.started"
    assert record["level"] == "info" and record["logger"] == "zenml_trigger"
    assert record["parameters"] == {"db_password": REDACTED, "n": 1}
    assert "hunter2" not in stream.getvalue()
    assert "timestamp" in record


def test_library_records_are_json_lines_too(restore_logging: None) -> None:
    stream = json_stream()
    logging.getLogger("celery.worker.strategy").info("Task %s received", "zenml_trigger.run[abc]")
    logging.getLogger("zenml.pipelines").warning("two\nlines")
    logging.getLogger("kombu").debug("below the level")
    celery_line, zenml_line = records(stream)
    assert celery_line["event"] == "Task zenml_trigger.run[abc] received"
    assert celery_line["logger"] == "celery.worker.strategy" and celery_line["level"] == "info"
    assert zenml_line["event"] == "two\nlines" and zenml_line["level"] == "warning"


def test_a_traceback_stays_inside_its_line(restore_logging: None) -> None:
    stream = json_stream()
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("zenml.orchestrators").exception("step failed")
        get_logger().exception("trigger.record_failed")
    library, ours = records(stream)
    assert "ValueError: boom" in library["exception"] and "ValueError: boom" in ours["exception"]


def test_the_request_context_reaches_every_line_but_not_structlogs_contextvars(restore_logging: None) -> None:
    """ZenML copies structlog's contextvars onto the records it stores with step logs: ours are not there."""
    stream = json_stream()
    with bound_context(request_id="r-9", pipeline="training_pipeline"):
        assert structlog.contextvars.get_contextvars() == {}
        get_logger().info("trigger.started")
        logging.getLogger("zenml.steps").info("Step started")
        get_logger().info("trigger.overridden", pipeline="explicit")
    get_logger().info("trigger.after")
    ours, library, overridden, after = records(stream)
    assert ours["request_id"] == library["request_id"] == "r-9"
    assert library["pipeline"] == "training_pipeline" and overridden["pipeline"] == "explicit"
    assert "request_id" not in after


def test_configured_twice_it_is_still_one_handler(restore_logging: None) -> None:
    json_stream()
    stream = json_stream()
    logging.getLogger("celery").info("once")
    assert len([h for h in logging.getLogger().handlers if isinstance(h, StreamHandler)]) == 1
    assert [r["event"] for r in records(stream)] == ["once"]


def test_console_format_stays_readable(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("console", "INFO", stream=stream)
    get_logger().info("trigger.succeeded", run_id="run-1")
    logging.getLogger("celery.apps.worker").info("%s ready.", "w1@host")
    ours, celery_line = stream.getvalue().splitlines()
    assert "trigger.succeeded" in ours and "run_id" in ours and not ours.startswith("{")
    assert "w1@host ready." in celery_line

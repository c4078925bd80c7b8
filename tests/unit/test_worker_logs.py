"""The worker's side of the log stream (`worker.logs`): ZenML's handlers tamed, the standard streams logged."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog
from celery.utils.log import LoggingProxy

from producers.logs import bound_context, configure_logging
from worker.app import create_app
from worker.logs import NotOurs, adopt_zenml_logging, redirect_std_streams
from worker.settings import WorkerSettings


@pytest.fixture
def root_handlers() -> Iterator[list[logging.Handler]]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield root.handlers
    structlog.reset_defaults()
    root.handlers[:] = saved
    root.setLevel(level)


def test_zenml_console_handler_goes_and_its_log_storage_refuses_our_records(
    root_handlers: list[logging.Handler],
) -> None:
    import zenml.logger

    root = logging.getLogger()
    root.addHandler(zenml.logger.ZenMLConsoleHandler())
    storage = zenml.logger.ZenMLLoggingHandler()
    root.addHandler(storage)
    adopt_zenml_logging()
    adopt_zenml_logging()  # again, as each prefork child does: one filter still
    assert not any(isinstance(h, zenml.logger.ZenMLConsoleHandler) for h in root_handlers)
    assert storage in root_handlers and len([f for f in storage.filters if isinstance(f, NotOurs)]) == 1
    ours = logging.LogRecord("zenml_trigger", logging.INFO, "", 0, "trigger.started", (), None)
    step_output = logging.LogRecord("stdout", logging.INFO, "", 0, "epoch 1", (), None)
    assert not storage.filter(ours) and storage.filter(step_output)


def test_redirected_streams_are_log_records_and_the_original_stdout_has_no_descriptor(
    root_handlers: list[logging.Handler], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery writes shutdown notices to `sys.__stdout__`'s descriptor: the proxy has none, so none is written."""
    for name in ("stdout", "stderr", "__stdout__"):
        monkeypatch.setattr(sys, name, getattr(sys, name))
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    redirect_std_streams()
    with bound_context(request_id="r-1"):
        print("epoch 1 of 3")
        print("deprecated thing", file=sys.stderr)
    assert isinstance(sys.__stdout__, LoggingProxy) and not hasattr(sys.__stdout__, "fileno")
    out, err = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (out["event"], out["logger"], out["level"], out["request_id"]) == ("epoch 1 of 3", "stdout", "info", "r-1")
    assert (err["event"], err["logger"], err["level"]) == ("deprecated thing", "stderr", "warning")


def test_worker_and_beat_drop_their_banner_only_with_json_lines() -> None:
    for log_format, quiet in (("json", True), ("console", False)):
        app = create_app(WorkerSettings(log_format=log_format))
        assert app.Beat(app=app).quiet is quiet
        assert app.Beat(app=app, quiet=True).quiet is True

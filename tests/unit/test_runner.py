"""The ZenML backend's error classification, and its run/find flow over a fake pipeline object."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import requests
import sqlalchemy.exc
from zenml.config.pipeline_configurations import PipelineConfiguration
from zenml.enums import ExecutionStatus

from pipelines.registry import RegisteredPipeline
from producers.errors import PermanentError, TransientError
from worker.errors import InvalidParameters, PipelineRunFailed, RunSubmissionFailed, StoreUnavailable
from worker.runner import RunOutcome, ZenMLRunner, classify
from worker.validation import RunPlan


class TestClassify:
    @pytest.mark.parametrize(
        "exc",
        [
            ConnectionError("refused"),
            ConnectionRefusedError("refused"),
            TimeoutError("slow"),
            sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("database is locked")),
            requests.ConnectionError("no route"),
            requests.Timeout("read timed out"),
        ],
    )
    def test_dependency_failures_are_transient(self, exc: BaseException) -> None:
        error = classify(exc, "run-a", None)
        assert isinstance(error, StoreUnavailable)
        assert isinstance(error, TransientError)
        assert "run run-a" in error.message
        assert type(exc).__name__ in error.message

    def test_transient_after_the_run_exists_is_a_submission_failure(self) -> None:
        error = classify(ConnectionError("lost"), "run-a", "zen-1")
        assert isinstance(error, RunSubmissionFailed)
        assert isinstance(error, TransientError)

    @pytest.mark.parametrize("exc", [ValueError("no target column"), KeyError("x"), RuntimeError("boom")])
    def test_anything_else_is_a_failed_run(self, exc: BaseException) -> None:
        error = classify(exc, "run-b", "zen-2")
        assert isinstance(error, PipelineRunFailed)
        assert isinstance(error, PermanentError)
        assert error.run_id == "zen-2"
        assert error.run_name == "run-b"
        assert "run run-b failed" in error.message

    def test_our_own_errors_pass_through(self) -> None:
        original = InvalidParameters()
        assert classify(original, "run-c", None) is original


def fake_run(status: ExecutionStatus, output: Any) -> Any:
    step = SimpleNamespace(output=SimpleNamespace(load=lambda: output))
    return SimpleNamespace(id="zen-7", name="run-x", status=status, steps={"evaluate": step})


class FakePipeline:
    """Stands in for a ZenML `Pipeline`: `with_options(...)` then a call with the pipeline arguments."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.configuration = PipelineConfiguration(name="p")
        self.options: dict[str, Any] = {}
        self.arguments: dict[str, Any] = {}

    def with_options(self, **options: Any) -> Any:
        self.options = options

        def call(**arguments: Any) -> Any:
            self.arguments = arguments
            if isinstance(self.result, BaseException):
                raise self.result
            return self.result

        return call


@pytest.fixture
def zen_runner(monkeypatch: pytest.MonkeyPatch) -> ZenMLRunner:
    runner = ZenMLRunner()
    monkeypatch.setattr(runner, "run_id", lambda run_name: None)
    return runner


PLAN = RunPlan("p", {"model_type": "gradient_boosting"}, {"train_model": {"n_estimators": 10}})


class TestZenMLRunner:
    def test_runs_with_the_plan_and_reports_metrics(self, zen_runner: ZenMLRunner) -> None:
        pipeline = FakePipeline(fake_run(ExecutionStatus.COMPLETED, {"accuracy": 1}))
        outcome = zen_runner.run(RegisteredPipeline("p", "m:p", pipeline), PLAN, "run-x")
        assert outcome == RunOutcome("zen-7", "run-x", "completed", {"accuracy": 1.0})
        assert pipeline.options["run_name"] == "run-x"
        assert pipeline.options["steps"] == {"train_model": {"parameters": {"n_estimators": 10}}}
        assert pipeline.arguments == {"model_type": "gradient_boosting"}

    def test_metrics_that_are_not_numbers_are_dropped(self, zen_runner: ZenMLRunner) -> None:
        pipeline = FakePipeline(fake_run(ExecutionStatus.COMPLETED, {"model": "a string"}))
        assert zen_runner.run(RegisteredPipeline("p", "m:p", pipeline), PLAN, "run-x").metrics is None

    def test_failed_status_raises_pipeline_run_failed(self, zen_runner: ZenMLRunner) -> None:
        pipeline = FakePipeline(fake_run(ExecutionStatus.FAILED, None))
        with pytest.raises(PipelineRunFailed) as info:
            zen_runner.run(RegisteredPipeline("p", "m:p", pipeline), PLAN, "run-x")
        assert info.value.run_id == "zen-7"

    @pytest.mark.parametrize(
        ("raised", "expected"),
        [(ConnectionError("store down"), StoreUnavailable), (ValueError("bad csv"), PipelineRunFailed)],
    )
    def test_exceptions_are_classified(self, zen_runner: ZenMLRunner, raised: Exception, expected: type) -> None:
        with pytest.raises(expected) as info:
            zen_runner.run(RegisteredPipeline("p", "m:p", FakePipeline(raised)), PLAN, "run-x")
        assert info.value.__cause__ is raised

"""Templates on a ZenML server, at the `Client` boundary: error classification, submission, following a run."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from zenml import exceptions as zx
from zenml.enums import StoreType

from producers.contract import TriggerRequest, encode_request
from producers.errors import PermanentError, TransientError
from producers.state import Status
from tests.unit.conftest import FakeRunner, FakeTemplates
from worker.errors import PipelineRunFailed, RunSubmissionFailed, UnknownTemplate
from worker.processing import Delivery, Processor
from worker.server_backend import ServerBackend, TemplateRunRefused, classify_server_error, run_configuration
from worker.templates import Template


def make_template(**fields: Any) -> Template:
    defaults: dict[str, Any] = {
        "name": "nightly",
        "version": 2,
        "snapshot_id": "snap-2",
        "pipeline_name": "training_pipeline",
        "source": "pipelines.training.training_pipeline",
        "runnable": True,
    }
    return Template(**{**defaults, **fields})


class TestClassifyServerError:
    @pytest.mark.parametrize(
        "exc",
        [
            requests.ConnectionError("refused"),
            requests.Timeout("slow"),
            ConnectionError("reset"),
            TimeoutError("timed out"),
            zx.MaxConcurrentTasksError("too many"),
        ],
    )
    def test_unavailable_server_is_transient(self, exc: Exception) -> None:
        error = classify_server_error(exc, "nightly@2")
        assert isinstance(error, RunSubmissionFailed)
        assert isinstance(error, TransientError)
        assert "nightly@2" in error.message
        assert type(exc).__name__ in error.message

    def test_missing_snapshot_is_unknown_template(self) -> None:
        error = classify_server_error(KeyError("snap-2"), "nightly@2")
        assert isinstance(error, UnknownTemplate)
        assert error.details[0].path == "template"
        assert "nightly@2" in error.details[0].problem

    @pytest.mark.parametrize(
        ("exc", "words"),
        [
            (zx.AuthorizationException("no"), "not authorized"),
            (RuntimeError("no remote stack"), "refused the run"),
            (ValueError("bad config"), "refused the run"),
        ],
    )
    def test_refusals_are_permanent(self, exc: Exception, words: str) -> None:
        error = classify_server_error(exc, "nightly@2")
        assert isinstance(error, TemplateRunRefused)
        assert isinstance(error, PermanentError)
        assert not isinstance(error, TransientError)
        assert words in error.message
        assert str(exc) in error.message


def test_run_configuration_merges_run_config_parameters_and_step_parameters() -> None:
    base = {"enable_cache": False, "steps": {"train_model": {"enable_cache": True}, "evaluate": {"enable_cache": True}}}
    configuration = run_configuration(
        base, {"model_type": "random_forest"}, {"train_model": {"n_estimators": 5}, "load_data": {}}, "run-a"
    )
    assert configuration == {
        "enable_cache": False,
        "run_name": "run-a",
        "parameters": {"model_type": "random_forest"},
        "steps": {
            "train_model": {"enable_cache": True, "parameters": {"n_estimators": 5}},
            "evaluate": {"enable_cache": True},
        },
    }
    assert base["steps"]["train_model"] == {"enable_cache": True}


class FakeClient:
    """The slice of `zenml.client.Client` that `ServerBackend` uses; `statuses` scripts successive polls."""

    def __init__(
        self, statuses: list[Any] | None = None, trigger_error: Exception | None = None, store: Any = StoreType.REST
    ) -> None:
        self.zen_store = SimpleNamespace(type=store)
        self.statuses = list(statuses or [])
        self.trigger_error = trigger_error
        self.triggered: list[dict[str, Any]] = []
        self.polled: list[str] = []

    def trigger_pipeline(self, **kwargs: Any) -> Any:
        self.triggered.append(kwargs)
        if self.trigger_error is not None:
            raise self.trigger_error
        return SimpleNamespace(id="run-uuid-1", name=kwargs["run_configuration"]["run_name"])

    def get_pipeline_run(self, run_id: str) -> Any:
        self.polled.append(run_id)
        status = self.statuses.pop(0)
        if isinstance(status, BaseException):
            raise status
        return SimpleNamespace(id=run_id, status=status)


def backend(client: FakeClient, wait: bool = True) -> ServerBackend:
    return ServerBackend(client_factory=lambda: client, wait=wait, poll_interval=0.001)


def enum_like(value: str) -> SimpleNamespace:
    """A status object like ZenML's `ExecutionStatus`, which carries its string in `.value`."""
    return SimpleNamespace(value=value)


class TestServerBackendRun:
    def test_submits_the_snapshot_with_the_run_configuration(self) -> None:
        client = FakeClient()
        template = make_template(run_config={"enable_cache": False})
        backend(client, wait=False).run(
            template, {"model_type": "random_forest"}, {"train_model": {"n_estimators": 5}}, "run-a"
        )
        [call] = client.triggered
        assert call["snapshot_name_or_id"] == "snap-2"
        configuration = call["run_configuration"]
        assert configuration["run_name"] == "run-a"
        assert configuration["parameters"] == {"model_type": "random_forest"}
        assert configuration["steps"] == {"train_model": {"parameters": {"n_estimators": 5}}}
        assert configuration["enable_cache"] is False

    def test_without_waiting_the_outcome_is_submitted(self) -> None:
        client = FakeClient()
        outcome = backend(client, wait=False).run(make_template(), {}, {}, "run-a")
        assert (outcome.run_id, outcome.run_name, outcome.status) == ("run-uuid-1", "run-a", "submitted")
        assert client.polled == []

    def test_connection_error_on_submit_is_run_submission_failed(self) -> None:
        client = FakeClient(trigger_error=requests.ConnectionError("connection refused"))
        with pytest.raises(RunSubmissionFailed) as caught:
            backend(client).run(make_template(), {}, {}, "run-a")
        assert isinstance(caught.value.__cause__, requests.ConnectionError)

    def test_refused_submit_is_permanent(self) -> None:
        client = FakeClient(trigger_error=RuntimeError("not allowed when not connected to a ZenML Server"))
        with pytest.raises(TemplateRunRefused):
            backend(client).run(make_template(), {}, {}, "run-a")

    @pytest.mark.parametrize(
        "statuses",
        [
            ["initializing", "running", "completed"],
            [enum_like("initializing"), enum_like("running"), enum_like("completed")],
            ["running", enum_like("cached")],
        ],
    )
    def test_waiting_polls_until_the_run_succeeds(self, statuses: list[Any]) -> None:
        client = FakeClient(statuses=statuses)
        outcome = backend(client).run(make_template(), {}, {}, "run-a")
        assert (outcome.run_id, outcome.run_name, outcome.status) == ("run-uuid-1", "run-a", "completed")
        assert outcome.succeeded
        assert client.polled == ["run-uuid-1"] * len(statuses)

    @pytest.mark.parametrize("final", ["failed", enum_like("failed"), "stopped", "cancelled"])
    def test_a_run_that_ends_unsuccessfully_is_pipeline_run_failed(self, final: Any) -> None:
        client = FakeClient(statuses=["running", final])
        with pytest.raises(PipelineRunFailed) as caught:
            backend(client).run(make_template(), {}, {}, "run-a")
        assert caught.value.run_id == "run-uuid-1"
        assert caught.value.run_name == "run-a"
        assert "nightly@2" in caught.value.message
        assert len(client.polled) == 2

    def test_connection_blip_while_polling_is_transient(self) -> None:
        client = FakeClient(statuses=["running", requests.ConnectionError("reset")])
        with pytest.raises(RunSubmissionFailed):
            backend(client).run(make_template(), {}, {}, "run-a")


class TestAvailable:
    def test_rest_store_and_runnable_snapshot(self) -> None:
        assert backend(FakeClient(store=StoreType.REST)).available(make_template(runnable=True)) is True

    def test_local_sql_store_is_not_available(self) -> None:
        assert backend(FakeClient(store=StoreType.SQL)).available(make_template(runnable=True)) is False

    def test_snapshot_not_runnable_is_not_available(self) -> None:
        assert backend(FakeClient(store=StoreType.REST)).available(make_template(runnable=False)) is False


def test_polling_blip_does_not_submit_the_run_twice(make_services: Callable[..., Any]) -> None:
    client = FakeClient(statuses=[requests.ConnectionError("reset"), "completed"])
    runner = FakeRunner()
    services = make_services(runner, templates=FakeTemplates(make_template()), server=backend(client))
    processor = Processor(services)
    request = TriggerRequest(request_id="s-1", template="nightly")
    first = processor.handle(Delivery(raw=encode_request(request), task_id="s-1"))
    assert first.status is Status.RETRYING
    second = processor.handle(Delivery(raw=encode_request(request), task_id="s-1", attempt=2))
    assert second.status is Status.SUCCEEDED
    assert runner.calls == []
    assert len(client.triggered) == 1  # fails: the retry triggered the snapshot again

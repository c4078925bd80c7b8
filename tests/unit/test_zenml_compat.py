"""`producers.zenml_compat.trigger_pipeline`: ZenML's keywords, enqueued; unhonoured fields refused with paths."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import fakeredis
import pytest

from producers import InvalidRequest, ProducerSettings, TriggerClient, decode_request
from producers.state import Status
from producers.zenml_compat import QueuedRun, run_configuration_fields, trigger_pipeline

QUEUE = "compat-q"
TUTORIAL_STEPS = {
    "load_data": {"parameters": {"data_url": "s3://test-bucket/latest-data.csv"}},
    "train_model": {"parameters": {"model_type": "gradient_boosting"}},
}


@pytest.fixture
def client() -> TriggerClient:
    return TriggerClient(fakeredis.FakeRedis(), ProducerSettings(queue=QUEUE))


def queued(client: TriggerClient) -> Any:
    [item] = client.redis.lrange(QUEUE, 0, -1)
    return decode_request(json.loads(base64.b64decode(json.loads(item)["body"]))[0][0])


def test_the_tutorials_template_call_enqueues_the_template_with_its_step_parameters(client: TriggerClient) -> None:
    snapshot = UUID("5f3c6a1e-0000-4000-8000-000000000001")
    config = {"run_name": None, "enable_cache": None, "settings": {}, "steps": TUTORIAL_STEPS}

    run = trigger_pipeline(template_id=snapshot, run_configuration=config, client=client)

    request = queued(client)
    assert isinstance(run, QueuedRun) and run.id == run.request_id == request.request_id
    assert request.template == str(snapshot) and request.pipeline_name is None
    assert request.step_parameters() == {k: v["parameters"] for k, v in TUTORIAL_STEPS.items()}
    assert request.source == "zenml-compat" and run.status().status is Status.QUEUED


def test_a_pipeline_name_alone_runs_the_registered_pipeline_with_pipeline_parameters(client: TriggerClient) -> None:
    trigger_pipeline(pipeline_name_or_id="training_pipeline", run_configuration={"parameters": {"x": 1}}, client=client)
    request = queued(client)
    assert request.pipeline_name == "training_pipeline" and dict(request.parameters) == {"x": 1}


def test_fields_the_queue_would_ignore_are_refused_with_their_paths(client: TriggerClient) -> None:
    config = {
        "enable_cache": False,
        "schedule": {"cron_expression": "* * * * *"},
        "steps": {"train_model": {"parameters": {"a": 1}, "settings": {"docker": {}}, "enable_cache": None}},
    }
    with pytest.raises(InvalidRequest) as caught:
        trigger_pipeline(pipeline_name_or_id="training_pipeline", run_configuration=config, client=client)
    assert {d.path for d in caught.value.details} == {"enable_cache", "schedule", "steps.train_model.settings"}
    assert client.redis.llen(QUEUE) == 0


def test_stack_and_project_are_the_workers_business(client: TriggerClient) -> None:
    with pytest.raises(InvalidRequest) as caught:
        trigger_pipeline(pipeline_name_or_id="p", stack_name_or_id="gpu", project="default", client=client)
    assert [d.path for d in caught.value.details] == ["stack_name_or_id", "project"]


def test_nothing_to_run_and_two_configurations_are_refused(client: TriggerClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="pipeline_name_or_id"):
        trigger_pipeline(run_configuration={}, client=client)
    path = tmp_path / "run.yaml"
    path.write_text("steps:\n  train_model:\n    parameters:\n      n_estimators: 50\n")
    with pytest.raises(InvalidRequest, match="not both"):
        trigger_pipeline(pipeline_name_or_id="p", run_configuration={}, config_path=str(path), client=client)
    trigger_pipeline(pipeline_name_or_id="training_pipeline", config_path=str(path), client=client)
    assert queued(client).step_parameters() == {"train_model": {"n_estimators": 50}}


def test_a_pydantic_run_configuration_is_read_without_zenml(client: TriggerClient) -> None:
    from pydantic import BaseModel

    class RunConfiguration(BaseModel):  # the shape of ZenML's PipelineRunConfiguration
        steps: dict[str, Any] | None = None
        enable_cache: bool | None = None

    trigger_pipeline(
        snapshot_name_or_id="nightly", run_configuration=RunConfiguration(steps=TUTORIAL_STEPS), client=client
    )
    assert queued(client).template == "nightly"


def test_steps_that_are_not_an_object_are_a_problem_at_steps() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run_configuration_fields({"steps": [1, 2]}, where="body")
    assert [d.path for d in caught.value.details] == ["body.steps"]


@pytest.mark.parametrize(
    ("configuration", "paths"),
    [
        ({"parameters": "x"}, ["parameters"]),
        ({"parameters": ["ab", ["lr", 0.1]]}, ["parameters"]),
        ({"steps": {"a": [1]}}, ["steps.a"]),
        ({"steps": {"a": "s"}}, ["steps.a"]),
        ({"steps": False}, ["steps"]),
        ({"steps": {"a": {"parameters": 3}}}, ["steps.a.parameters"]),
    ],
)
def test_a_section_that_is_not_an_object_is_refused_never_converted(configuration: Any, paths: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        run_configuration_fields(configuration)
    assert [d.path for d in caught.value.details] == paths


def test_a_templates_whole_config_with_its_run_name_is_taken(client: TriggerClient) -> None:
    config = {"run_name": "training_pipeline-{date}_{time}", "enable_cache": None, "steps": TUTORIAL_STEPS}
    trigger_pipeline(template_id="nightly", run_configuration=config, client=client)
    assert queued(client).template == "nightly"

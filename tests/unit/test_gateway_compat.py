"""The tutorial's routes and ZenML's run-template route on the gateway (fakeredis): same bodies, 202, paths."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient

from producers import AsyncTriggerClient, ProducerSettings, decode_request
from producers.gateway import create_app
from tests.support.tutorial import TUTORIAL_TEMPLATE, TUTORIAL_TRIGGER, ZENML_REST

QUEUE = "compat-gw"
JSON = {"content-type": "application/json", "accept": "application/json"}


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def http(server: fakeredis.FakeServer) -> Iterator[TestClient]:
    client = AsyncTriggerClient(fakeredis.FakeAsyncRedis(server=server), ProducerSettings(queue=QUEUE))
    with TestClient(create_app(client=client), raise_server_exceptions=False) as test_client:
        yield test_client


def queued(server: fakeredis.FakeServer) -> list[Any]:
    items = fakeredis.FakeRedis(server=server).lrange(QUEUE, 0, -1)[::-1]
    return [decode_request(json.loads(base64.b64decode(json.loads(i)["body"]))[0][0]) for i in items]


def test_the_tutorials_trigger_body_is_queued_with_its_step_parameters(
    http: TestClient, server: fakeredis.FakeServer
) -> None:
    answer = http.post("/trigger", content=TUTORIAL_TRIGGER, headers=JSON)

    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "success" and body["queued"] is True and body["run_id"] is None
    assert "queued" in body["message"] and body["status_url"].endswith(body["request_id"])
    [request] = queued(server)
    assert request.pipeline_name == "training_pipeline" and request.source == "tutorial-api"
    assert request.step_parameters() == {
        "load_data": {"data_url": "s3://some-bucket/new-data.csv"},
        "train_model": {"model_type": "gradient_boosting"},
    }


def test_the_tutorials_template_body_queues_that_template(http: TestClient, server: fakeredis.FakeServer) -> None:
    answer = http.post("/trigger-template", content=TUTORIAL_TEMPLATE, headers=JSON)
    assert answer.status_code == 202, answer.text
    assert answer.json()["template_id"] == "YOUR_TEMPLATE_ID"
    [request] = queued(server)
    assert request.template == "YOUR_TEMPLATE_ID" and request.pipeline_name is None


def test_zenmls_rest_body_queues_the_template_in_the_path(http: TestClient, server: fakeredis.FakeServer) -> None:
    answer = http.post("/api/v1/run_templates/nightly@2/runs", content=ZENML_REST, headers=JSON)
    assert answer.status_code == 202, answer.text
    [request] = queued(server)
    assert request.template == "nightly@2" and request.source == "zenml-rest"
    assert request.step_parameters()["load_data"] == {"data_url": "s3://production-bucket/latest-data.csv"}


def test_what_would_be_ignored_is_refused_with_its_path(http: TestClient, server: fakeredis.FakeServer) -> None:
    zenml = json.loads(ZENML_REST) | {"enable_cache": False, "settings": {"docker": {"image": "x"}}}
    answers = [
        http.post("/api/v1/run_templates/nightly/runs", json=zenml),
        http.post("/trigger", json=json.loads(TUTORIAL_TRIGGER) | {"config_path": "/etc/passwd"}),
        http.post("/trigger", json={"pipeline_name": "training_pipeline", "steps": {"load_data": {"parameter": {}}}}),
        http.post("/trigger-template", json={"steps": {}}),
        http.post("/api/v1/run_templates/nightly/runs", content=b"[1]", headers=JSON),
        http.post("/trigger", content=b"not json", headers=JSON),
    ]
    paths = [sorted(p["path"] for p in a.json()["problems"]) for a in answers]
    assert [a.status_code for a in answers] == [422] * 6
    assert paths[:4] == [
        ["enable_cache", "settings"],
        ["config_path"],
        ["steps.load_data.parameter"],
        ["template_id"],
    ]
    assert queued(server) == []


@pytest.mark.parametrize("body", [{"parameters": "x"}, {"steps": {"a": [1]}}, {"steps": {"a": "s"}}, {"steps": 7}])
def test_a_run_configuration_of_the_wrong_shape_is_a_422_not_a_500(http: TestClient, body: dict[str, Any]) -> None:
    answer = http.post("/api/v1/run_templates/nightly/runs", json=body)
    assert answer.status_code == 422, answer.text

"""The HTTP gateway on fakeredis: 202 with an id, 422 with every path, 413, 404, 503, idempotent retries."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient

from pipelines.registry import PipelineRegistry
from producers import AsyncTriggerClient, ProducerSettings, decode_request
from producers.gateway import create_app
from worker.catalog import CatalogPublisher
from worker.settings import WorkerSettings
from worker.signature import inspect_pipeline

QUEUE = "gw-q"


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def gateway(server: fakeredis.FakeServer, **settings: Any) -> TestClient:
    client = AsyncTriggerClient(fakeredis.FakeAsyncRedis(server=server), ProducerSettings(queue=QUEUE, **settings))
    return TestClient(create_app(client=client), raise_server_exceptions=False)


@pytest.fixture
def http(server: fakeredis.FakeServer) -> Iterator[TestClient]:
    with gateway(server) as client:
        yield client


def queued(server: fakeredis.FakeServer) -> list[Any]:
    """The requests on the queue, oldest first."""
    items = fakeredis.FakeRedis(server=server).lrange(QUEUE, 0, -1)[::-1]
    return [decode_request(json.loads(base64.b64decode(json.loads(i)["body"]))[0][0]) for i in items]


def test_a_valid_request_is_queued_and_answered_202_with_its_status_url(
    http: TestClient, server: fakeredis.FakeServer
) -> None:
    body = {"pipeline_name": "training_pipeline", "parameters": {"model_type": "random_forest"}, "source": "ci"}
    answer = http.post("/v1/triggers", json=body)

    assert answer.status_code == 202
    request_id = answer.json()["request_id"]
    assert answer.json()["status_url"].endswith(f"/v1/triggers/{request_id}")
    assert answer.headers["location"] == answer.json()["status_url"]
    [request] = queued(server)
    assert request.request_id == request_id and request.source == "ci"
    assert request.parameters == {"model_type": "random_forest"}
    state = http.get(f"/v1/triggers/{request_id}")
    assert state.status_code == 200 and state.json()["status"] == "queued"


def test_every_problem_comes_back_with_its_path_and_nothing_is_queued(
    http: TestClient, server: fakeredis.FakeServer
) -> None:
    body = {"pipeline_name": "bad name!", "steps": {"train_model": {"parameters": 3}}, "colour": "red"}
    answer = http.post("/v1/triggers", json=body)

    assert answer.status_code == 422 and answer.json()["error"] == "invalid_request"
    paths = {p["path"] for p in answer.json()["problems"]}
    assert {"pipeline_name", "steps.train_model.parameters", "colour"} <= paths
    assert queued(server) == []


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", b'{"pipeline_name": "p", "source": "\\ud800"}', b"", b'"\\udfff"', b"{" * 10_000],
)
def test_garbage_bodies_get_a_422_never_a_500(http: TestClient, raw: bytes) -> None:
    answer = http.post("/v1/triggers", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_request" and answer.json()["problems"]


def test_an_oversized_body_is_refused_with_413(server: fakeredis.FakeServer) -> None:
    with gateway(server, max_payload_bytes=1000) as http:
        body = {"pipeline_name": "p", "metadata": {"blob": "x" * 5000}}
        answer = http.post("/v1/triggers", json=body)
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"
    assert queued(server) == []


def test_an_unknown_or_malformed_id_is_404_or_422(http: TestClient) -> None:
    assert http.get("/v1/triggers/never-sent").status_code == 404
    assert http.get("/v1/triggers/never-sent").json()["error"] == "unknown_request"
    assert http.get("/v1/triggers/" + "x" * 500).status_code == 422
    assert http.get("/v1/triggers/bad%20id").status_code == 422


def test_a_retried_post_with_the_same_idempotency_key_gets_the_first_id_back(
    http: TestClient, server: fakeredis.FakeServer
) -> None:
    body = {"pipeline_name": "training_pipeline"}
    first = http.post("/v1/triggers", json=body, headers={"Idempotency-Key": "deploy-42"})
    again = http.post("/v1/triggers", json=body, headers={"Idempotency-Key": "deploy-42"})
    other = http.post("/v1/triggers", json=body, headers={"Idempotency-Key": "deploy-43"})

    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["request_id"] == first.json()["request_id"] != other.json()["request_id"]
    assert again.headers.get("idempotent-replayed") == "true" and "idempotent-replayed" not in first.headers
    assert [r.idempotency_key for r in queued(server)] == ["anonymous:deploy-42", "anonymous:deploy-43"]  # per caller


def test_a_body_key_that_contradicts_the_header_is_refused(http: TestClient) -> None:
    body = {"pipeline_name": "training_pipeline", "idempotency_key": "a"}
    answer = http.post("/v1/triggers", json=body, headers={"Idempotency-Key": "b"})
    assert answer.status_code == 422
    assert [p["path"] for p in answer.json()["problems"]] == ["idempotency_key"]


def test_redis_down_is_a_prompt_503_with_a_clear_body(server: fakeredis.FakeServer) -> None:
    with gateway(server) as http:
        server.connected = False
        answer = http.post("/v1/triggers", json={"pipeline_name": "training_pipeline"})
        status = http.get("/v1/triggers/some-id")
        ready = http.get("/readyz")
        alive = http.get("/healthz")
    assert answer.status_code == 503 and answer.json()["error"] == "queue_unavailable"
    assert "could not enqueue" in answer.json()["message"]
    assert status.status_code == 503 and ready.status_code == 503
    assert alive.status_code == 200


def publish_catalog(server: fakeredis.FakeServer) -> Any:
    """What a worker for `QUEUE` publishes at start: its registry's pipelines (no templates listed)."""
    registry = PipelineRegistry.from_paths()
    settings = WorkerSettings(redis_url="redis://unused.invalid:6379/0", queue=QUEUE)
    publisher = CatalogPublisher(fakeredis.FakeRedis(server=server), settings, registry, _signature)
    return publisher.publish(list_templates=False)


def _signature(entry: Any) -> Any:
    return inspect_pipeline(entry.pipeline)


def test_ready_only_when_redis_answers_and_a_worker_published_its_catalog(
    http: TestClient, server: fakeredis.FakeServer
) -> None:
    before = http.get("/readyz")
    assert before.status_code == 503 and "no worker has published a catalog" in before.json()["message"]
    assert http.get("/v1/pipelines").status_code == 503
    catalog = publish_catalog(server)
    gateway_with_fresh_catalog = gateway(server)
    with gateway_with_fresh_catalog as fresh:
        ready = fresh.get("/readyz")
        pipelines = fresh.get("/v1/pipelines").json()["pipelines"]
        templates = fresh.get("/v1/templates").json()
    assert ready.status_code == 200 and ready.json()["catalog"] == catalog.content_hash
    assert [p["name"] for p in pipelines] == ["training_pipeline"]
    assert templates["known"] is False  # the worker had not listed its templates yet


def test_the_gateway_checks_parameters_against_the_catalog_before_enqueueing(server: fakeredis.FakeServer) -> None:
    publish_catalog(server)
    bad = {"pipeline_name": "training_pipeline", "steps": {"train_model": {"parameters": {"n_estimators": "many"}}}}
    with gateway(server) as http:
        refused = http.post("/v1/triggers", json=bad)
        unknown = http.post("/v1/triggers", json={"pipeline_name": "nope"})
        good = http.post("/v1/triggers", json={"pipeline_name": "training_pipeline"})
    assert refused.status_code == 422
    assert [p["path"] for p in refused.json()["problems"]] == ["steps.train_model.parameters.n_estimators"]
    assert unknown.status_code == 422 and "registered: training_pipeline" in unknown.json()["message"]
    assert good.status_code == 202 and good.json()["early_check"] == "passed"
    assert len(queued(server)) == 1


def test_without_a_catalog_the_early_check_is_skipped_and_says_so(http: TestClient) -> None:
    answer = http.post("/v1/triggers", json={"pipeline_name": "anything"})
    assert answer.status_code == 202 and answer.json()["early_check"].startswith("skipped: no worker has published")


def test_the_openapi_spec_documents_the_wire_body(http: TestClient) -> None:
    spec = http.get("/openapi.json").json()
    body = spec["paths"]["/v1/triggers"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "pipeline_name" in body["properties"] and "StepOverride" in spec["components"]["schemas"]

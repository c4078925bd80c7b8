"""The gateway's `GET /metrics`: requests by route template and status code, their durations, out of the schema."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from producers.async_client import AsyncTriggerClient
from producers.gateway import create_app
from producers.settings import ProducerSettings


@pytest.fixture
def http() -> Iterator[TestClient]:
    client = AsyncTriggerClient(fakeredis.FakeAsyncRedis(), ProducerSettings(queue="gw-metrics"))
    with TestClient(create_app(client=client), raise_server_exceptions=False) as test_client:
        yield test_client


def scraped(http: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = http.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def test_requests_are_counted_by_route_template_and_code(http: TestClient) -> None:
    assert http.post("/v1/triggers", json={"pipeline_name": "training_pipeline"}).status_code == 202
    assert http.post("/v1/triggers", json={"pipeline_name": 7}).status_code == 422
    for request_id in ("nope-1", "nope-2"):
        assert http.get(f"/v1/triggers/{request_id}").status_code == 404
    http.get("/no/such/path")
    found = scraped(http)
    assert found[("trigger_gateway_requests_total", (("code", "202"), ("route", "/v1/triggers")))] == 1
    assert found[("trigger_gateway_requests_total", (("code", "422"), ("route", "/v1/triggers")))] == 1
    assert found[("trigger_gateway_requests_total", (("code", "404"), ("route", "/v1/triggers/{request_id}")))] == 2
    assert found[("trigger_gateway_requests_total", (("code", "404"), ("route", "unmatched")))] == 1
    assert found[("trigger_gateway_request_duration_seconds_count", (("route", "/v1/triggers"),))] == 2


def test_metrics_stay_out_of_the_api_schema(http: TestClient) -> None:
    assert "/metrics" not in http.get("/openapi.json").json()["paths"]


def test_two_apps_in_one_process_keep_their_own_counts() -> None:
    for _ in range(2):
        client = AsyncTriggerClient(fakeredis.FakeAsyncRedis(), ProducerSettings(queue="gw-metrics"))
        with TestClient(create_app(client=client)) as http:
            http.get("/healthz")
            assert scraped(http)[("trigger_gateway_requests_total", (("code", "200"), ("route", "/healthz")))] == 1

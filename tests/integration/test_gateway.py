"""The gateway over real uvicorn on loopback, with the real Redis and a real worker: 202, then `succeeded`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from producers.state import Status
from tests.integration.conftest import REPO, Stack, zenml_runs
from tests.support.gateway import start_gateway, stop


@pytest.fixture
def gateway(stack: Stack) -> Iterator[str]:
    """`trigger gateway` as a real process on a free loopback port; its base URL."""
    process, base = start_gateway(stack.env(), REPO, stack.log_dir / "gateway.log")
    try:
        yield base
    finally:
        stop(process)


def test_a_request_posted_to_the_gateway_runs_to_succeeded(stack: Stack, gateway: str) -> None:
    stack.start_worker()
    body = {"pipeline_name": "training_pipeline", "steps": {"train_model": {"parameters": {"n_estimators": 10}}}}
    with httpx.Client(base_url=gateway, timeout=10) as http:
        assert http.get("/readyz").json()["status"] == "ready"  # Redis answers, the worker published its catalog
        assert "training_pipeline" in [p["name"] for p in http.get("/v1/pipelines").json()["pipelines"]]
        answer = http.post("/v1/triggers", json={**body, "source": "webhook"}, headers={"Idempotency-Key": "ci-7"})
        assert answer.status_code == 202, answer.text
        assert answer.json()["early_check"] == "passed"
        request_id = answer.json()["request_id"]
        again = http.post("/v1/triggers", json=body, headers={"Idempotency-Key": "ci-7"})
        state = stack.wait(request_id, 180)
        polled = http.get(answer.json()["status_url"]).json()

    assert again.status_code == 202 and again.json()["request_id"] == request_id
    assert state.status is Status.SUCCEEDED, stack.logs()
    assert polled["status"] == "succeeded" and polled["run_id"] == state.run_id
    assert state.source == "webhook" and state.idempotency_key == "anonymous:ci-7"  # per caller; this gateway is open
    assert len(zenml_runs("training_pipeline")) == 1


def test_invalid_requests_are_422_with_paths_and_a_down_redis_is_503(stack: Stack, gateway: str) -> None:
    with httpx.Client(base_url=gateway, timeout=10) as http:
        bad = http.post("/v1/triggers", json={"pipeline_name": "training_pipeline", "steps": {"x": 1}, "zzz": 1})
        assert bad.status_code == 422
        assert {p["path"] for p in bad.json()["problems"]} >= {"steps.x", "zzz"}
        stack.start_worker()  # publishes the catalog the gateway checks parameters against
        typo = {"pipeline_name": "training_pipeline", "steps": {"train_model": {"parameters": {"n_estimator": 5}}}}
        late = http.post("/v1/triggers", json=typo)
        assert late.status_code == 422, late.text
        assert [p["path"] for p in late.json()["problems"]] == ["steps.train_model.parameters.n_estimator"]
        assert stack.redis.llen(stack.queue) == 0
    env = stack.env(TRIGGER_REDIS_URL="redis://127.0.0.1:1/0", TRIGGER_ENQUEUE_TIMEOUT="0.3")
    down, base = start_gateway(env, REPO, stack.log_dir / "gateway-down.log")
    try:
        answer = httpx.post(f"{base}/v1/triggers", json={"pipeline_name": "p"}, timeout=10)
        ready = httpx.get(f"{base}/readyz", timeout=10)
    finally:
        stop(down)
    assert answer.status_code == 503 and answer.json()["error"] == "queue_unavailable", answer.text
    assert ready.status_code == 503

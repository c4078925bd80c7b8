"""Gateway authentication and scopes: Bearer, X-API-Key, signed webhooks, rotation; 401, 403; signed onward."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient

from producers import AsyncTriggerClient, ProducerSettings
from producers.credentials import load_keyring
from producers.gateway import create_app
from producers.gateway_auth import GatewayAuth
from producers.signing import parse_signature, sign, verify

QUEUE = "auth-gw"
CI_SECRET = "ci-secret-0123456789-0123456789-abcdef"
CI_NEW_SECRET = "ci-new-secret-0123456789-0123456789-xyz"
DRIFT_SECRET = "drift-secret-0123456789-0123456789-abcd"
OLD_SECRET = "expired-secret-0123456789-0123456789-ab"
KEYS = f"""
keys:
  - id: ci
    secrets: ["{CI_SECRET}", "{CI_NEW_SECRET}"]
    pipelines: ["*"]
    templates: [nightly]
  - id: drift-monitor
    secrets: ["{DRIFT_SECRET}"]
    pipelines: [training_pipeline]
    parameters: [steps.load_data.data_url]
  - id: retired
    secrets: ["{OLD_SECRET}"]
    pipelines: ["*"]
    expires_at: 2020-01-01T00:00:00Z
"""
BODY = {"pipeline_name": "training_pipeline", "steps": {"load_data": {"parameters": {"data_url": "s3://b/new.csv"}}}}


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def http(server: fakeredis.FakeServer, tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "keys.yaml"
    path.write_text(KEYS)
    client = AsyncTriggerClient(fakeredis.FakeAsyncRedis(server=server), ProducerSettings(queue=QUEUE))
    app = create_app(client=client, auth=GatewayAuth(load_keyring(path)))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def queued_signatures(server: fakeredis.FakeServer) -> list[tuple[str, str]]:
    """(request text, signature keyword) of each queued message."""
    items = fakeredis.FakeRedis(server=server).lrange(QUEUE, 0, -1)[::-1]
    bodies = [json.loads(base64.b64decode(json.loads(i)["body"])) for i in items]
    return [(args[0], kwargs.get("signature", "")) for args, kwargs, _ in bodies]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_a_known_key_is_accepted_and_its_request_goes_on_signed_with_it(
    http: TestClient, server: fakeredis.FakeServer
) -> None:
    answer = http.post("/v1/triggers", json=BODY, headers=bearer(DRIFT_SECRET))

    assert answer.status_code == 202, answer.text
    [(text, signature)] = queued_signatures(server)
    parsed = parse_signature(signature)
    assert parsed.key_id == "drift-monitor" and verify(text, parsed, [DRIFT_SECRET.encode()])
    status = http.get(answer.json()["status_url"], headers=bearer(DRIFT_SECRET))
    assert status.status_code == 200 and status.json()["status"] == "queued"


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("not-a-key"), bearer(OLD_SECRET), {"Authorization": f"Basic {CI_SECRET}"}, {"X-API-Key": "nope"}],
)
def test_a_missing_unknown_or_expired_credential_is_401_and_queues_nothing(
    http: TestClient, server: fakeredis.FakeServer, headers: dict[str, str]
) -> None:
    answer = http.post("/v1/triggers", json=BODY, headers=headers)
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert CI_SECRET not in answer.text and OLD_SECRET not in answer.text
    assert http.get("/v1/triggers/some-id", headers=headers).status_code == 401
    assert http.get("/v1/pipelines", headers=headers).status_code == 401
    assert queued_signatures(server) == []


def test_a_key_outside_its_scope_is_403_with_what_was_refused(http: TestClient, server: fakeredis.FakeServer) -> None:
    other_param = {"pipeline_name": "training_pipeline", "steps": {"train_model": {"parameters": {"model_type": "x"}}}}
    other_pipeline = {"pipeline_name": "failing_pipeline"}
    template = {"template": "weekly"}
    answers = [http.post("/v1/triggers", json=b, headers=bearer(DRIFT_SECRET)) for b in (other_param, other_pipeline)]
    answers.append(http.post("/v1/triggers", json=template, headers=bearer(CI_SECRET)))

    assert [a.status_code for a in answers] == [403, 403, 403]
    assert [[p["path"] for p in a.json()["problems"]] for a in answers] == [
        ["steps.train_model.parameters.model_type"],
        ["pipeline_name"],
        ["template"],
    ]
    assert queued_signatures(server) == []


def test_both_secrets_work_during_a_rotation_and_the_tutorials_x_api_key_too(http: TestClient) -> None:
    assert http.post("/v1/triggers", json=BODY, headers=bearer(CI_SECRET)).status_code == 202
    assert http.post("/v1/triggers", json=BODY, headers=bearer(CI_NEW_SECRET)).status_code == 202
    tutorial = {"pipeline_name": "training_pipeline", "steps": {}}
    assert http.post("/trigger", json=tutorial, headers={"X-API-Key": CI_SECRET}).status_code == 202
    assert http.post("/trigger", json=tutorial).status_code == 401


def signed_post(http: TestClient, body: bytes, signature: str) -> Any:
    headers = {"content-type": "application/json", "X-Trigger-Signature": signature}
    return http.post("/v1/triggers", content=body, headers=headers)


def test_a_webhook_signs_the_body_instead_of_sending_the_secret(http: TestClient) -> None:
    body = json.dumps(BODY).encode()
    good = sign(body, "drift-monitor", DRIFT_SECRET.encode())
    assert signed_post(http, body, good).status_code == 202
    wrong_body = body.replace(b"new.csv", b"evil.csv")
    assert signed_post(http, wrong_body, good).status_code == 401
    old = sign(body, "drift-monitor", DRIFT_SECRET.encode(), timestamp=int(time.time()) - 600)
    assert "time" in signed_post(http, body, old).json()["message"]
    wrong_key = sign(body, "drift-monitor", CI_SECRET.encode())
    assert signed_post(http, body, wrong_key).status_code == 401
    assert signed_post(http, body, "v1=deadbeef").status_code == 401
    rotated = sign(body, "ci", CI_NEW_SECRET.encode())
    assert signed_post(http, body, rotated).status_code == 202


def test_an_open_gateway_takes_anyone_and_signs_nothing(server: fakeredis.FakeServer) -> None:
    client = AsyncTriggerClient(fakeredis.FakeAsyncRedis(server=server), ProducerSettings(queue=QUEUE))
    with TestClient(create_app(client=client, auth=GatewayAuth(None))) as http:
        assert http.post("/v1/triggers", json=BODY).status_code == 202
    assert [signature for _, signature in queued_signatures(server)] == [""]


OTHER_SECRET = "other-team-secret-0123456789-0123456789"


@pytest.fixture
def two_callers(server: fakeredis.FakeServer, tmp_path: Path) -> Iterator[TestClient]:
    """`ci` as above, and `other` which may trigger only `failing_pipeline`."""
    path = tmp_path / "keys.yaml"
    path.write_text(KEYS + f'  - id: other\n    secrets: ["{OTHER_SECRET}"]\n    pipelines: [failing_pipeline]\n')
    client = AsyncTriggerClient(fakeredis.FakeAsyncRedis(server=server), ProducerSettings(queue=QUEUE))
    with TestClient(create_app(client=client, auth=GatewayAuth(load_keyring(path)))) as test_client:
        yield test_client


def test_a_caller_cannot_choose_a_request_id(http: TestClient, server: fakeredis.FakeServer) -> None:
    victim = http.post("/v1/triggers", json=BODY, headers=bearer(DRIFT_SECRET)).json()["request_id"]
    taken = http.post("/v1/triggers", json={**BODY, "request_id": victim}, headers=bearer(CI_SECRET))
    pre_claim = http.post("/v1/triggers", json={**BODY, "request_id": "idem-" + "0" * 40}, headers=bearer(CI_SECRET))
    assert taken.status_code == pre_claim.status_code == 422
    assert [p["path"] for p in taken.json()["problems"]] == ["request_id"]
    assert len(queued_signatures(server)) == 1


def test_idempotency_keys_are_per_caller(two_callers: TestClient, server: fakeredis.FakeServer) -> None:
    header = {"Idempotency-Key": "order-42"}
    ci = two_callers.post(
        "/v1/triggers", json={"pipeline_name": "failing_pipeline"}, headers=bearer(CI_SECRET) | header
    )
    other = two_callers.post(
        "/v1/triggers", json={"pipeline_name": "failing_pipeline"}, headers=bearer(OTHER_SECRET) | header
    )
    assert ci.status_code == other.status_code == 202
    assert ci.json()["request_id"] != other.json()["request_id"]
    keys_ = [json.loads(text)["idempotency_key"] for text, _ in queued_signatures(server)]
    assert keys_ == ["ci:order-42", "other:order-42"]


def test_a_key_reads_only_the_states_of_what_it_may_trigger(two_callers: TestClient) -> None:
    mine = two_callers.post("/v1/triggers", json=BODY, headers=bearer(CI_SECRET)).json()["status_url"]
    assert two_callers.get(mine, headers=bearer(CI_SECRET)).status_code == 200
    assert two_callers.get(mine, headers=bearer(OTHER_SECRET)).status_code == 404


def test_an_idempotent_retry_is_authorized_like_the_first_post(http: TestClient) -> None:
    header = {"Idempotency-Key": "k1"}
    assert http.post("/v1/triggers", json=BODY, headers=bearer(DRIFT_SECRET) | header).status_code == 202
    out_of_scope = {"pipeline_name": "failing_pipeline"}
    assert http.post("/v1/triggers", json=out_of_scope, headers=bearer(DRIFT_SECRET) | header).status_code == 403


def test_a_webhook_signature_is_good_once_whatever_else_is_sent_with_it(
    http: TestClient, server: fakeredis.FakeServer
) -> None:
    body = json.dumps(BODY).encode()
    signature = sign(body, "drift-monitor", DRIFT_SECRET.encode())
    headers = {"content-type": "application/json", "X-Trigger-Signature": signature}
    first = http.post("/v1/triggers", content=body, headers=headers | {"Idempotency-Key": "r0"})
    again = http.post("/v1/triggers", content=body, headers=headers | {"Idempotency-Key": "r1"})
    elsewhere = http.post("/trigger", content=body, headers=headers)
    assert first.status_code == 202 and again.status_code == elsewhere.status_code == 401
    assert "used already" in again.json()["message"]
    assert len(queued_signatures(server)) == 1


def test_the_compatibility_routes_honour_idempotency_key_too(http: TestClient, server: fakeredis.FakeServer) -> None:
    body = {"pipeline_name": "training_pipeline", "steps": {}}
    headers = {"X-API-Key": CI_SECRET, "Idempotency-Key": "tutorial-1"}
    first, again = (http.post("/trigger", json=body, headers=headers) for _ in range(2))
    assert first.json()["request_id"] == again.json()["request_id"]
    assert again.headers.get("idempotent-replayed") == "true" and len(queued_signatures(server)) == 1

"""The example web apps: 202 with a status URL, a prompt 503 when Redis is down, state look-ups, 404s."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import fakeredis
import pytest
from fastapi.testclient import TestClient

from examples.webapp import fastapi_app, flask_app
from examples.webapp.retrain import PIPELINE, SOURCE, RetrainBody
from producers import (
    AsyncTriggerClient,
    InvalidRequest,
    ProducerSettings,
    TriggerClient,
    TriggerRequest,
    decode_request,
)
from producers.errors import Problem

QUEUE = "webapp-q"
SETTINGS = ProducerSettings(queue=QUEUE)


@dataclass(frozen=True)
class Reply:
    """One answer, whichever framework gave it."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: Any


class Http(Protocol):
    """What a test needs of FastAPI's and Flask's test clients alike."""

    def post(self, url: str, body: Any) -> Reply: ...

    def get(self, url: str) -> Reply: ...


class FrameworkHttp:
    """FastAPI's (httpx) or Flask's (werkzeug) test client, answering `Reply`s.

    Bodies go out as ASCII JSON text (`\\ud800` escaped), as a browser would send them; both
    clients' own `json=` would fail to encode a lone surrogate before sending anything.
    """

    def __init__(self, client: Any, content_arg: str, json_of: Callable[[Any], Any]) -> None:
        self.client = client
        self.content_arg = content_arg
        self.json_of = json_of

    def post(self, url: str, body: Any) -> Reply:
        content = {self.content_arg: json.dumps(body), "headers": {"Content-Type": "application/json"}}
        return self._reply(self.client.post(url, **content))

    def get(self, url: str) -> Reply:
        return self._reply(self.client.get(url))

    def _reply(self, response: Any) -> Reply:
        return Reply(response.status_code, _lower(response.headers), self.json_of(response))


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def fastapi_http(server: fakeredis.FakeServer) -> Iterator[Http]:
    app = fastapi_app.create_app(lambda: AsyncTriggerClient(fakeredis.FakeAsyncRedis(server=server), SETTINGS))
    with TestClient(app, base_url="http://localhost") as client:  # runs the lifespan: the client lives on its loop
        yield FrameworkHttp(client, "content", lambda response: response.json())


def flask_http(server: fakeredis.FakeServer) -> Iterator[Http]:
    app = flask_app.create_app(TriggerClient(fakeredis.FakeRedis(server=server), SETTINGS))
    yield FrameworkHttp(app.test_client(), "data", lambda response: response.get_json())


APPS = {"fastapi": fastapi_http, "flask": flask_http}


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture(params=sorted(APPS))
def http(request: pytest.FixtureRequest, server: fakeredis.FakeServer) -> Iterator[Http]:
    yield from APPS[request.param](server)


def queued_requests(server: fakeredis.FakeServer) -> list[TriggerRequest]:
    """The trigger requests in the task messages on the queue."""
    messages = fakeredis.FakeRedis(server=server).lrange(QUEUE, 0, -1)
    return [decode_request(json.loads(base64.b64decode(json.loads(m)["body"]))[0][0]) for m in messages]


def test_retrain_answers_202_with_the_id_and_a_status_url_and_queues_the_run(
    http: Http, server: fakeredis.FakeServer
) -> None:
    response = http.post("/retrain", {"data_url": "s3://bucket/new.csv", "model_type": "gradient_boosting"})

    assert response.status == 202
    body = response.body
    request_id = body["request_id"]
    assert body == {
        "request_id": request_id,
        "status": "queued",
        "status_url": f"http://localhost/retrain/{request_id}",
    }
    assert response.headers["location"] == body["status_url"]
    [sent] = queued_requests(server)
    assert (sent.request_id, sent.pipeline_name, sent.source) == (request_id, PIPELINE, SOURCE)
    assert sent.parameters == {"data_url": "s3://bucket/new.csv", "model_type": "gradient_boosting"}


def test_the_status_url_returns_the_state_json_while_the_run_waits_for_a_worker(http: Http) -> None:
    accepted = http.post("/retrain", {"data_url": "s3://bucket/new.csv"}).body

    response = http.get(accepted["status_url"].removeprefix("http://localhost"))

    assert response.status == 200
    state = response.body
    assert (state["request_id"], state["status"], state["pipeline_name"]) == (
        accepted["request_id"],
        "queued",
        PIPELINE,
    )
    assert state["source"] == SOURCE and state["attempts"] == 0


def test_an_unknown_request_id_is_404(http: Http) -> None:
    response = http.get("/retrain/no-such-request")
    assert response.status == 404
    assert response.body["error"] == "unknown_request" and "no-such-request" in response.body["message"]


def test_redis_down_gives_a_prompt_503_and_queues_nothing(http: Http, server: fakeredis.FakeServer) -> None:
    server.connected = False

    response = http.post("/retrain", {"data_url": "s3://bucket/new.csv"})

    assert response.status == 503
    assert response.body["error"] == "queue_unavailable" and response.body["request_id"]
    assert "location" not in response.headers
    server.connected = True
    assert queued_requests(server) == []


def test_a_status_look_up_while_redis_is_down_is_503(http: Http, server: fakeredis.FakeServer) -> None:
    server.connected = False
    response = http.get("/retrain/some-request")
    assert response.status == 503 and response.body["error"] == "state_unavailable"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data_url": ""},
        {"data_url": "s3://bucket/new.csv", "learning_rate": 0.1},
        {"data_url": 5},
        {"data_url": "s3://bucket/\ud800.csv"},
        ["s3://bucket/new.csv"],
    ],
    ids=["missing", "empty", "unknown-field", "not-text", "lone-surrogate", "not-an-object"],
)
def test_a_malformed_body_is_422_and_queues_nothing(http: Http, server: fakeredis.FakeServer, body: Any) -> None:
    response = http.post("/retrain", body)
    assert response.status == 422 and response.body["error"] == "invalid_request"
    assert response.body["details"] and all(d["problem"] for d in response.body["details"])
    assert queued_requests(server) == []


def test_both_apps_name_the_paths_of_a_bad_body_alike(http: Http) -> None:
    response = http.post("/retrain", {"data_url": "s3://bucket/\ud800.csv", "model_type": 3, "extra": 1})
    assert sorted(d["path"] for d in response.body["details"]) == ["data_url", "extra", "model_type"]


def test_a_request_the_producer_refuses_is_422_with_every_path(
    http: Http, server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the body model lets through, the trigger request is checked again where it is built."""

    def refuse(body: RetrainBody) -> TriggerRequest:
        raise InvalidRequest(details=[Problem("parameters.data_url", "is not allowed here")])

    monkeypatch.setattr(fastapi_app, "retrain_request", refuse)
    monkeypatch.setattr(flask_app, "retrain_request", refuse)

    response = http.post("/retrain", {"data_url": "s3://bucket/new.csv"})

    assert response.status == 422 and response.body["error"] == "invalid_request"
    assert response.body["details"] == [{"path": "parameters.data_url", "problem": "is not allowed here"}]
    assert queued_requests(server) == []

"""Delayed runs: a future `not_before` is recorded `scheduled` and held in the retry schedule, atomically;
released when due, it runs like a queued request."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner

from producers import keys
from producers.cli import cli
from producers.client import TriggerClient
from producers.contract import decode_request
from producers.delayed import TooFarAhead, parse_at, parse_in
from producers.errors import InvalidRequest, MalformedRequest
from producers.priority import queue_list
from producers.settings import ProducerSettings
from producers.state import Status
from worker.not_before import NotBefore
from worker.processing import Delivery, Processor
from worker.sweeper import Sweeper
from worker.transport import load_item

QUEUE = "zenml-triggers"


def client_on(fake: fakeredis.FakeRedis, **settings: Any) -> TriggerClient:
    return TriggerClient(fake, ProducerSettings(queue=QUEUE, **settings))


def in_seconds(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def test_a_future_not_before_is_recorded_scheduled_and_held_in_the_retry_schedule(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    client = client_on(fake_redis)
    when = in_seconds(600)
    request_id = client.trigger("training_pipeline", not_before=when, priority=5)

    state = client.status(request_id)
    assert state.status is Status.SCHEDULED and not state.status.terminal
    assert state.next_attempt_at == when and state.priority == 5
    assert fake_redis.llen(QUEUE) == 0 and fake_redis.llen(queue_list(QUEUE, 5)) == 0
    ((envelope, due),) = fake_redis.zrange(keys.retry_schedule_key(QUEUE), 0, -1, withscores=True)
    assert json.loads(envelope)["headers"]["id"] == request_id and due == pytest.approx(when.timestamp())
    assert fake_redis.zscore(keys.waiting_key(QUEUE), request_id) == pytest.approx(when.timestamp())


def test_a_cancelled_scheduled_request_leaves_the_retry_schedule(fake_redis: fakeredis.FakeRedis) -> None:
    client = client_on(fake_redis)
    request_id = client.trigger("training_pipeline", not_before=in_seconds(600))
    assert fake_redis.scard(keys.scheduled_envelopes_key(QUEUE, request_id)) == 1, "listed for a cancel"

    state = client.cancel(request_id, by="ops")

    assert state.status is Status.CANCELLED
    assert fake_redis.zcard(keys.retry_schedule_key(QUEUE)) == 0, "its envelope left the schedule"


def test_a_not_before_in_the_past_runs_now(fake_redis: fakeredis.FakeRedis) -> None:
    client = client_on(fake_redis)
    request_id = client.trigger("training_pipeline", not_before=in_seconds(-60))
    assert client.status(request_id).status is Status.QUEUED and client.status(request_id).next_attempt_at is None
    assert fake_redis.llen(QUEUE) == 1 and fake_redis.zcard(keys.retry_schedule_key(QUEUE)) == 0


def test_a_not_before_beyond_the_state_ttl_is_refused_naming_the_limit(fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(TooFarAhead) as caught:
        client_on(fake_redis, state_ttl=3600).trigger("training_pipeline", not_before=in_seconds(7200))
    assert [p.path for p in caught.value.details] == ["not_before"]
    assert "TRIGGER_STATE_TTL=3600s" in str(caught.value) and "2.0 h ahead" in str(caught.value)
    assert fake_redis.keys("*") == [], "nothing was recorded or scheduled"


def test_a_naive_not_before_is_refused_at_its_path(fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(InvalidRequest) as caught:
        client_on(fake_redis).trigger("training_pipeline", not_before=datetime(2026, 11, 27, 2, 0))
    assert [p.path for p in caught.value.details] == ["not_before"]
    assert "timezone" in caught.value.details[0].problem
    with pytest.raises(MalformedRequest, match="not_before"):
        decode_request('{"pipeline_name": "training_pipeline", "not_before": "2026-11-27T02:00:00"}')


def test_released_when_due_it_runs_like_a_queued_request(processor: Processor) -> None:
    fake = processor.s.states.client
    client = client_on(fake)
    request_id = client.trigger("training_pipeline", not_before=in_seconds(30), idempotency_key="nightly")
    assert processor.s.schedule.release_due() == 0, "not due yet"

    assert processor.s.schedule.release_due(now=time.time() + 31) == 1
    [not_before] = [control for control in processor.admissions if isinstance(control, NotBefore)]
    not_before.clock = lambda: time.time() + 31  # the worker's clock agrees it is due
    message, checked = load_item(fake.rpop(QUEUE), QUEUE)
    assert checked is not None and not processor.end_on_arrival(*checked), "a scheduled request is not ended early"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    state = processor.handle(Delivery(raw=args[0], task_id=request_id, **kwargs))
    assert state.status is Status.SUCCEEDED and state.next_attempt_at is None
    assert fake.zscore(keys.waiting_key(QUEUE), request_id) is None, "taken on: no longer waiting"


def test_the_sweeper_leaves_a_scheduled_message_alone_until_it_is_lost(fake_redis: fakeredis.FakeRedis) -> None:
    client = client_on(fake_redis)
    request_id = client.trigger("training_pipeline", not_before=in_seconds(30))
    sweeper = Sweeper(fake_redis, QUEUE, client.states, lost_after=60)
    assert sweeper.sweep(now=time.time() + 10**6) == 0, "still in the schedule (no releaser ran yet)"

    (envelope,) = fake_redis.zrange(keys.retry_schedule_key(QUEUE), 0, -1)
    fake_redis.zrem(keys.retry_schedule_key(QUEUE), envelope)  # released, popped, then lost in flight
    assert sweeper.sweep(now=time.time() + 10**6) == 1
    (resent,) = fake_redis.lrange(QUEUE, 0, -1)
    assert json.loads(resent)["headers"]["id"] == request_id


class TestSendAtOrIn:
    @pytest.fixture(autouse=True)
    def broker(self, monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> None:
        monkeypatch.setattr("producers.client.connect", lambda settings: fake_redis)

    def send(self, *args: str) -> Any:
        return CliRunner().invoke(cli, ["send", "training_pipeline", *args])

    def test_in_schedules_and_says_when(self, fake_redis: fakeredis.FakeRedis) -> None:
        result = self.send("--in", "10m", "--json")
        printed = json.loads(result.output)
        assert result.exit_code == 0 and printed["status"] == "scheduled"
        due = datetime.fromisoformat(printed["next_attempt_at"])
        assert abs((due - in_seconds(600)).total_seconds()) < 30 and fake_redis.llen(QUEUE) == 0
        shown = CliRunner().invoke(cli, ["status", printed["request_id"]])
        assert "scheduled" in shown.output and "next_attempt_at" in shown.output

    def test_at_a_past_time_queues_now(self, fake_redis: fakeredis.FakeRedis) -> None:
        result = self.send("--at", "2020-01-01T00:00:00Z", "--json")
        assert result.exit_code == 0 and json.loads(result.output)["status"] == "queued" and fake_redis.llen(QUEUE)

    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            (("--at", "2026-11-27T02:00:00Z", "--in", "10m"), "not both"),
            (("--at", "2026-11-27T02:00:00"), "has no timezone"),
            (("--at", "tomorrow"), "not an ISO 8601 time"),
            (("--in", "soon"), "not a delay such as"),
        ],
    )
    def test_bad_times_are_usage_errors(self, fake_redis: fakeredis.FakeRedis, args: Any, expected: str) -> None:
        result = self.send(*args)
        assert result.exit_code == 2 and expected in result.output and fake_redis.keys("*") == []

    def test_beyond_the_state_ttl_exits_1_with_one_line(self, fake_redis: fakeredis.FakeRedis) -> None:
        result = self.send("--in", "30d")
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 1 and len(errors) == 1 and "TRIGGER_STATE_TTL" in errors[0]


def test_parsers() -> None:
    assert parse_at("2026-11-27T02:00:00Z") == datetime(2026, 11, 27, 2, tzinfo=timezone.utc)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert [parse_in(t, start) - start for t in ("90", "45s", "10m", "2h", "1d")] == [
        timedelta(seconds=s) for s in (90, 45, 600, 7200, 86400)
    ]


def test_the_gateway_takes_priority_and_not_before_and_answers_scheduled() -> None:
    from fastapi.testclient import TestClient

    from producers.async_client import AsyncTriggerClient
    from producers.gateway import create_app

    server = fakeredis.FakeServer()
    client = AsyncTriggerClient(fakeredis.FakeAsyncRedis(server=server), ProducerSettings(queue=QUEUE))
    body = {"pipeline_name": "training_pipeline", "priority": 9, "not_before": in_seconds(60).isoformat()}
    with TestClient(create_app(client=client), raise_server_exceptions=False) as http:
        answer = http.post("/v1/triggers", json=body)
        naive = http.post("/v1/triggers", json={**body, "not_before": "2026-11-27T02:00:00"})

    assert answer.status_code == 202 and answer.json()["status"] == "scheduled"
    state = client_on(fakeredis.FakeRedis(server=server)).status(answer.json()["request_id"])
    assert state.status is Status.SCHEDULED and state.priority == 9
    assert naive.status_code == 422 and [p["path"] for p in naive.json()["problems"]] == ["not_before"]

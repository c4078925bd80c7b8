"""`AsyncTriggerClient` on fakeredis: the sync client's behaviour and Redis writes, without blocking the loop."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Coroutine
from datetime import datetime, timezone
from typing import Any, TypeVar

import fakeredis
import pytest

from producers import (
    AsyncTriggerClient,
    EnqueueError,
    InvalidRequest,
    ProducerSettings,
    Status,
    TriggerClient,
    TriggerRequest,
    UnknownRequest,
    decode_request,
    keys,
)
from tests.support.redis_dump import snapshot

T = TypeVar("T")
QUEUE = "q"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def async_client(server: fakeredis.FakeServer | None = None, **settings: Any) -> AsyncTriggerClient:
    fake = fakeredis.FakeAsyncRedis(server=server or fakeredis.FakeServer())
    return AsyncTriggerClient(fake, ProducerSettings(queue=QUEUE, **settings))


def down_server() -> fakeredis.FakeServer:
    server = fakeredis.FakeServer()
    server.connected = False
    return server


def queued_request(raw_envelope: bytes) -> TriggerRequest:
    """The trigger request inside a task message on the queue."""
    body = json.loads(base64.b64decode(json.loads(raw_envelope)["body"]))
    return decode_request(body[0][0])


def test_trigger_records_the_state_notes_it_waiting_and_pushes_its_message() -> None:
    server = fakeredis.FakeServer()
    reader = fakeredis.FakeRedis(server=server)

    async def scenario() -> tuple[str, Status]:
        async with async_client(server) as client:
            request_id = await client.trigger(
                "training_pipeline",
                parameters={"data_url": "s3://bucket/new.csv"},
                steps={"train_model": {"model_type": "gradient_boosting"}},
                source="web",
            )
            return request_id, (await client.status(request_id)).status

    request_id, status = run(scenario())

    assert status is Status.QUEUED
    [message] = reader.lrange(QUEUE, 0, -1)
    sent = queued_request(message)
    assert sent.request_id == request_id and sent.source == "web"
    assert sent.parameters == {"data_url": "s3://bucket/new.csv"}
    assert sent.step_parameters() == {"train_model": {"model_type": "gradient_boosting"}}
    assert reader.zrange(keys.waiting_key(QUEUE), 0, -1) == [request_id.encode()]
    assert reader.hget(keys.waiting_messages_key(QUEUE), request_id) == message


def test_both_clients_write_the_same_keys_and_messages_for_the_same_request() -> None:
    request = TriggerRequest(
        request_id="same-1",
        pipeline_name="training_pipeline",
        parameters={"data_url": "s3://bucket/new.csv"},
        coalesce_key="drift:churn",
        created_at=datetime(2026, 11, 24, 14, tzinfo=timezone.utc),
    )
    sync_redis = fakeredis.FakeRedis()
    TriggerClient(sync_redis, ProducerSettings(queue=QUEUE)).send(request)
    async_server = fakeredis.FakeServer()
    run(async_client(async_server).send(request))

    written = snapshot(fakeredis.FakeRedis(server=async_server))
    assert written == snapshot(sync_redis)
    assert sorted(written) == sorted(
        [
            QUEUE,
            keys.state_key("same-1"),
            keys.waiting_key(QUEUE),
            keys.waiting_messages_key(QUEUE),
            keys.coalesce_latest_key("drift:churn"),
            keys.REQUESTS_INDEX_KEY,
        ]
    )


def test_resending_an_id_keeps_its_recorded_state_and_still_pushes_the_copy() -> None:
    server = fakeredis.FakeServer()
    reader = fakeredis.FakeRedis(server=server)
    request = TriggerRequest(request_id="resend-1", pipeline_name="training_pipeline")

    async def scenario() -> Status:
        client = async_client(server)
        await client.send(request)
        done = (await client.status("resend-1")).advance(Status.SUCCEEDED)
        reader.set(keys.state_key("resend-1"), done.to_json())
        await client.send(request)
        return (await client.status("resend-1")).status

    assert run(scenario()) is Status.SUCCEEDED
    assert reader.llen(QUEUE) == 2


def test_send_raises_enqueue_error_when_redis_is_down() -> None:
    client = async_client(down_server())
    with pytest.raises(EnqueueError, match=r"could not enqueue request down-1 onto .* within 0\.5s: ConnectionError"):
        run(client.send(TriggerRequest(request_id="down-1", pipeline_name="training_pipeline")))


def test_try_send_never_raises_it_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    down = async_client(down_server())
    small = async_client(fakeredis.FakeServer(), max_payload_bytes=200)
    caplog.set_level(logging.ERROR, logger="producers.client")

    assert run(down.try_send(TriggerRequest(request_id="down-2", pipeline_name="training_pipeline"))) is None
    assert run(small.try_send(TriggerRequest(pipeline_name="training_pipeline", metadata={"blob": "x" * 1000}))) is None
    assert run(small.try_send(object())) is None  # type: ignore[arg-type]

    assert (down.failed_enqueues, small.failed_enqueues) == (1, 2)
    assert [r.getMessage().split()[0] for r in caplog.records] == ["trigger.enqueue_failed"] * 3
    assert "request_id=down-2" in caplog.records[0].getMessage()


def test_an_invalid_trigger_raises_invalid_request_and_writes_nothing() -> None:
    server = fakeredis.FakeServer()
    client = async_client(server)
    with pytest.raises(InvalidRequest) as raised:
        run(client.trigger("training_pipeline", steps={"train_model": {"model_type": "\ud800"}}))
    assert [d.path for d in raised.value.details] == ["steps.train_model.parameters.model_type"]
    assert fakeredis.FakeRedis(server=server).dbsize() == 0


def test_status_of_an_unknown_id_raises_unknown_request() -> None:
    with pytest.raises(UnknownRequest, match="'nope'"):
        run(async_client().status("nope"))


def test_wait_yields_to_the_event_loop_until_the_state_ends() -> None:
    """A worker (here a task on the same loop) can finish the request while `wait` polls."""

    async def scenario() -> Status:
        client = async_client()
        request_id = await client.trigger("training_pipeline")

        async def finish() -> None:
            await asyncio.sleep(0.05)
            done = (await client.status(request_id)).advance(Status.SUCCEEDED)
            await client.redis.set(keys.state_key(request_id), done.to_json())

        state, _ = await asyncio.gather(client.wait(request_id, 30), finish())
        return state.status

    assert run(scenario()) is Status.SUCCEEDED


def test_wait_returns_the_latest_state_at_its_timeout() -> None:
    async def scenario() -> Status:
        client = async_client()
        return (await client.wait(await client.trigger("training_pipeline"), 0)).status

    assert run(scenario()) is Status.QUEUED


def test_from_env_bounds_every_call_by_the_settings_and_never_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_REDIS_URL", "redis://127.0.0.1:1/3")
    monkeypatch.setenv("TRIGGER_ENQUEUE_TIMEOUT", "0.25")
    monkeypatch.setenv("TRIGGER_CONNECT_TIMEOUT", "0.75")
    client = AsyncTriggerClient.from_env()

    options = client.redis.connection_pool.connection_kwargs
    assert (options["socket_timeout"], options["socket_connect_timeout"], options["db"]) == (0.25, 0.75, 3)
    assert options["retry"].get_retries() == 0
    run(client.aclose())


def test_the_context_manager_closes_the_redis_client() -> None:
    closed: list[bool] = []

    class Recording(fakeredis.FakeAsyncRedis):
        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            closed.append(True)
            await super().aclose(close_connection_pool)

    async def scenario() -> None:
        async with AsyncTriggerClient(Recording()) as client:
            await client.trigger("training_pipeline")
            assert closed == []

    run(scenario())
    assert closed == [True]

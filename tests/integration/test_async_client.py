"""`AsyncTriggerClient` against the real Redis and a real worker: a request runs, a down Redis answers at once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
import redis

from producers import (
    AsyncTriggerClient,
    EnqueueError,
    ProducerSettings,
    RequestState,
    Status,
    TriggerClient,
    TriggerRequest,
)
from tests.integration.conftest import Stack, zenml_runs
from tests.support.redis_dump import snapshot

CLOSED_PORT = "redis://127.0.0.1:1/0"


def test_an_async_enqueued_request_runs_to_succeeded(stack: Stack) -> None:
    stack.start_worker()

    async def scenario() -> RequestState:
        async with AsyncTriggerClient.from_settings(stack.settings) as client:
            request_id = await client.trigger(
                "training_pipeline", steps={"train_model": {"n_estimators": 10}}, source="async-test"
            )
            return await client.wait(request_id, 180)

    state = asyncio.run(scenario())

    assert state.status is Status.SUCCEEDED, stack.logs()
    assert state.source == "async-test" and state.attempts == 1
    [run] = zenml_runs("training_pipeline")
    assert str(run.id) == state.run_id
    assert run.steps["train_model"].config.parameters["n_estimators"] == 10


def test_a_down_redis_gives_enqueue_error_or_none_without_hanging() -> None:
    """Nothing listens on port 1: the connection is refused, the call ends within its timeouts."""

    async def scenario() -> AsyncTriggerClient:
        client = AsyncTriggerClient.from_settings(ProducerSettings(redis_url=CLOSED_PORT, enqueue_timeout=0.3))
        with pytest.raises(EnqueueError, match=r"could not enqueue request down-1 onto redis://127\.0\.0\.1:1/0"):
            await client.send(TriggerRequest(request_id="down-1", pipeline_name="training_pipeline"))
        assert await client.try_send(TriggerRequest(pipeline_name="training_pipeline")) is None
        await client.aclose()
        return client

    assert asyncio.run(scenario()).failed_enqueues == 1


def test_both_clients_leave_the_same_keys_and_messages_in_the_real_redis(redis_url: str) -> None:
    request = TriggerRequest(
        request_id="same-1",
        pipeline_name="training_pipeline",
        parameters={"data_url": "s3://bucket/new.csv"},
        coalesce_key="drift:churn",
        created_at=datetime(2026, 11, 24, 14, tzinfo=timezone.utc),
    )
    settings = ProducerSettings(redis_url=redis_url, queue="same-shape")
    reader = redis.Redis.from_url(redis_url)

    TriggerClient.from_settings(settings).send(request)
    by_sync = snapshot(reader)
    reader.flushdb()

    async def send_async() -> None:
        async with AsyncTriggerClient.from_settings(settings) as client:
            await client.send(request)

    asyncio.run(send_async())

    assert snapshot(reader) == by_sync
    assert len(by_sync) == 6  # state, queue, waiting index, waiting message, coalescing key's latest, requests index


def test_calls_reuse_one_pooled_connection(redis_url: str) -> None:
    async def connection_ids() -> set[int]:
        async with AsyncTriggerClient.from_settings(ProducerSettings(redis_url=redis_url, queue="pooled")) as client:
            seen = {await client.redis.client_id()}
            for _ in range(5):
                await client.status(await client.trigger("training_pipeline"))
                seen.add(await client.redis.client_id())
            return seen

    assert len(asyncio.run(connection_ids())) == 1

"""`TRIGGER_ENQUEUE_MIN_REPLICAS`: an enqueue returns only once that many replicas have it (Redis `WAIT`), in both
clients; too few is a transient `EnqueueNotReplicated` that `try_send` counts and logs like any other failure."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import fakeredis
import pytest
import redis

from producers import (
    AsyncTriggerClient,
    EnqueueError,
    EnqueueNotReplicated,
    ProducerSettings,
    TransientError,
    TriggerClient,
    TriggerRequest,
    keys,
)


class ReplicatedFake(fakeredis.FakeRedis):
    """fakeredis has no `WAIT`: this one answers with a set count of replicas, or raises, and records the call."""

    def __init__(self, acknowledged: int | Exception, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acknowledged, self.waits = acknowledged, []

    def wait(self, num_replicas: int, timeout: int, **kwargs: Any) -> int:
        self.waits.append((num_replicas, timeout))
        if isinstance(self.acknowledged, Exception):
            raise self.acknowledged
        return self.acknowledged


class AsyncReplicatedFake(fakeredis.FakeAsyncRedis):
    def __init__(self, acknowledged: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acknowledged, self.waits = acknowledged, []

    async def wait(self, num_replicas: int, timeout: int, **kwargs: Any) -> int:
        self.waits.append((num_replicas, timeout))
        return self.acknowledged


def client(acknowledged: int | Exception, **settings: Any) -> TriggerClient:
    return TriggerClient(ReplicatedFake(acknowledged), ProducerSettings(queue="q", **settings))


def test_without_min_replicas_an_enqueue_never_waits() -> None:
    sender = client(0)

    sender.trigger("training_pipeline")

    assert sender.redis.waits == []


def test_an_enqueue_waits_for_the_replicas_for_half_the_enqueue_timeout() -> None:
    sender = client(2, enqueue_min_replicas=2, enqueue_timeout=0.4)

    request_id = sender.trigger("training_pipeline")

    assert sender.redis.waits == [(2, 200)]
    assert sender.redis.llen("q") == 1 and sender.redis.get(keys.state_key(request_id)) is not None


def test_too_few_replicas_is_a_transient_enqueue_error_that_says_resending_is_safe() -> None:
    sender = client(0, enqueue_min_replicas=1, redis_url="redis://:pw@primary:6379/0")

    with pytest.raises(EnqueueNotReplicated) as caught:
        sender.trigger("training_pipeline", request_id="r-1")

    assert isinstance(caught.value, EnqueueError) and isinstance(caught.value, TransientError)
    assert "request r-1 is on the primary at redis://:***@primary:6379/0" in str(caught.value)
    assert "only 0 of the 1 replicas required (TRIGGER_ENQUEUE_MIN_REPLICAS)" in str(caught.value)
    assert "same request id is safe" in str(caught.value) and "pw@" not in str(caught.value)


def test_resending_after_too_few_replicas_keeps_the_recorded_state() -> None:
    sender = client(0, enqueue_min_replicas=1)
    request = TriggerRequest(pipeline_name="training_pipeline")
    with pytest.raises(EnqueueNotReplicated):
        sender.send(request)
    recorded = sender.redis.get(keys.state_key(request.request_id))

    sender.redis.acknowledged = 1
    assert sender.send(request) == request.request_id
    assert sender.redis.get(keys.state_key(request.request_id)) == recorded and sender.redis.llen("q") == 2


def test_a_wait_that_fails_is_an_enqueue_error() -> None:
    sender = client(redis.TimeoutError("Timeout reading from socket"), enqueue_min_replicas=1)

    with pytest.raises(EnqueueError, match=r"could not enqueue request .* TimeoutError"):
        sender.trigger("training_pipeline")


def test_try_send_counts_and_logs_too_few_replicas(caplog: pytest.LogCaptureFixture) -> None:
    sender = client(0, enqueue_min_replicas=1)

    with caplog.at_level(logging.ERROR, logger="producers.client"):
        assert sender.try_send(TriggerRequest(pipeline_name="training_pipeline")) is None

    assert sender.failed_enqueues == 1
    assert "trigger.enqueue_failed" in caplog.text and "replicas required" in caplog.text


def test_the_async_client_waits_and_refuses_the_same_way() -> None:
    async def scenario(acknowledged: int) -> tuple[str | None, int, list[tuple[int, int]]]:
        fake = AsyncReplicatedFake(acknowledged)
        sender = AsyncTriggerClient(fake, ProducerSettings(queue="q", enqueue_min_replicas=1, enqueue_timeout=0.5))
        sent = await sender.try_send(TriggerRequest(pipeline_name="training_pipeline"))
        return sent, sender.failed_enqueues, fake.waits

    sent, failed, waits = asyncio.run(scenario(1))
    assert sent is not None and failed == 0 and waits == [(1, 250)]
    sent, failed, waits = asyncio.run(scenario(0))
    assert sent is None and failed == 1 and waits == [(1, 250)]


def test_min_replicas_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        ProducerSettings(enqueue_min_replicas=-1)

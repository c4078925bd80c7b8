"""The time index of requests (`producers.request_index`): written with each first state, walked newest first."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import fakeredis
import pytest

from producers import AsyncTriggerClient, ProducerSettings, TriggerClient, keys, request_index
from producers.client import request_from
from producers.contract import encode_request
from producers.request_index import RequestQuery, list_requests, status_named
from producers.state import RequestState, Status
from worker.processing import Delivery, Processor


@pytest.fixture
def client(fake_redis: fakeredis.FakeRedis) -> TriggerClient:
    return TriggerClient(fake_redis, ProducerSettings(queue="q"))


def indexed(fake_redis: fakeredis.FakeRedis) -> list[str]:
    return [member.decode() for member in fake_redis.zrevrange(keys.REQUESTS_INDEX_KEY, 0, -1)]


def ids(states: list[RequestState]) -> list[str]:
    return [state.request_id for state in states]


def record(client: TriggerClient, request_id: str, status: Status, **fields: Any) -> None:
    """Move a listed request on, as the worker would (the index keeps its place)."""
    state = client.status(request_id)
    client.states.put(state.advance(status, **fields))


def test_every_enqueue_enters_the_index_once_newest_first(
    fake_redis: fakeredis.FakeRedis, client: TriggerClient
) -> None:
    first = client.trigger("training_pipeline", request_id="r1")
    second = client.trigger(template="nightly", request_id="r2")
    client.trigger("training_pipeline", request_id="r1")  # a producer re-sending: no second entry, no new place
    assert indexed(fake_redis) == [second, first]
    assert ids(client.requests()) == ["r2", "r1"]


def test_filters_by_status_pipeline_or_template_and_source(client: TriggerClient) -> None:
    client.trigger("training_pipeline", request_id="a", source="cli")
    client.trigger("training_pipeline", request_id="b", source="gateway")
    client.trigger(template="nightly", request_id="c", source="schedule:nightly")
    client.trigger("other_pipeline", request_id="d", source="cli")
    record(client, "a", Status.SUCCEEDED)
    record(client, "b", Status.RETRYING, next_attempt_at=datetime.now(timezone.utc))
    assert ids(client.requests(status=["queued"])) == ["d", "c"]
    assert ids(client.requests(status=[Status.SUCCEEDED, "retrying"])) == ["b", "a"]
    assert ids(client.requests(status="queued")) == ids(client.requests(status=Status.QUEUED)) == ["d", "c"]
    assert ids(client.requests(pipeline="training_pipeline")) == ["b", "a"]
    assert ids(client.requests(pipeline="nightly")) == ["c"]
    assert ids(client.requests(source="cli")) == ["d", "a"]
    assert ids(client.requests(source="cli", status=["queued"], pipeline="other_pipeline")) == ["d"]
    assert client.requests(pipeline="nobody") == []


def test_since_keeps_only_the_requests_indexed_after_it(fake_redis: fakeredis.FakeRedis, client: TriggerClient) -> None:
    client.trigger("training_pipeline", request_id="old")
    client.trigger("training_pipeline", request_id="new")
    fake_redis.zadd(keys.REQUESTS_INDEX_KEY, {"old": time.time() - 3 * 3600})  # as if sent three hours ago
    assert ids(client.requests(since=timedelta(hours=2))) == ["new"]
    assert ids(client.requests(since=datetime.now(timezone.utc) - timedelta(hours=4))) == ["new", "old"]
    assert ids(client.requests(since=datetime.now() + timedelta(minutes=1))) == []  # naive: UTC, in the future


def test_the_limit_is_reached_across_pages_and_skips_what_does_not_match(
    monkeypatch: pytest.MonkeyPatch, client: TriggerClient
) -> None:
    monkeypatch.setattr(request_index, "PAGE", 3)
    for n in range(10):
        client.trigger("training_pipeline" if n % 2 else "other_pipeline", request_id=f"r{n}")
    assert ids(client.requests(limit=4)) == ["r9", "r8", "r7", "r6"]
    assert ids(client.requests(pipeline="training_pipeline", limit=4)) == ["r9", "r7", "r5", "r3"]
    assert len(client.requests(limit=50)) == 10


def test_an_expired_or_unreadable_state_is_skipped(fake_redis: fakeredis.FakeRedis, client: TriggerClient) -> None:
    for request_id in ("gone", "garbled", "kept"):
        client.trigger("training_pipeline", request_id=request_id)
    fake_redis.delete(keys.state_key("gone"))
    fake_redis.set(keys.state_key("garbled"), '{"request_id": "garbled", "status": "from-a-newer-version"}')
    assert ids(client.requests()) == ["kept"]


def test_entries_older_than_the_state_ttl_are_pruned_by_the_next_enqueue(fake_redis: fakeredis.FakeRedis) -> None:
    client = TriggerClient(fake_redis, ProducerSettings(queue="q", state_ttl=3600))
    stale = {f"stale-{n}": time.time() - 7200 - n for n in range(150)}
    fake_redis.zadd(keys.REQUESTS_INDEX_KEY, {**stale, "recent": time.time() - 60})
    client.trigger("training_pipeline", request_id="new")
    assert fake_redis.zcard(keys.REQUESTS_INDEX_KEY) == 50 + 2  # at most 100 pruned per write: bounded work
    client.trigger("training_pipeline", request_id="newer")
    assert indexed(fake_redis) == ["newer", "new", "recent"]


def test_a_record_the_worker_makes_under_its_own_id_is_indexed(processor: Processor, fake_redis: Any) -> None:
    state = processor.handle(Delivery(raw=b"\xff\xfenot a request"))
    assert state.request_id.startswith("malformed-")
    assert indexed(fake_redis) == [state.request_id]
    listed = list_requests(fake_redis, RequestQuery.build(status=["rejected"]))
    assert ids(listed) == [state.request_id]


def test_the_worker_does_not_index_a_request_again_when_it_moves_on(processor: Processor, fake_redis: Any) -> None:
    client = TriggerClient(fake_redis, ProducerSettings())
    request = request_from(template="no-such-template")
    client.send(request)
    score = fake_redis.zscore(keys.REQUESTS_INDEX_KEY, request.request_id)
    state = processor.handle(Delivery(raw=encode_request(request), task_id=request.request_id))
    assert state.status is Status.REJECTED
    assert fake_redis.zscore(keys.REQUESTS_INDEX_KEY, request.request_id) == score
    assert ids(client.requests()) == [request.request_id]


def test_an_unrecorded_duplicate_ended_on_arrival_is_indexed(processor: Processor, fake_redis: Any) -> None:
    processor.s.claims.claim("nightly-1", "the-owner")
    request = request_from("training_pipeline", idempotency_key="nightly-1")  # sent with no state (celery send_task)
    assert processor.early.check(request).ended is not None
    [listed] = list_requests(fake_redis, RequestQuery.build(status=["duplicate"]))
    assert listed.request_id == request.request_id and listed.duplicate_of == "the-owner"


def test_a_bad_filter_is_named_with_what_is_valid() -> None:
    valid = r"valid statuses: queued, scheduled, running, .*, cancelled, dead_lettered"
    with pytest.raises(ValueError, match=rf"unknown status 'finished'; {valid}"):
        status_named("finished")
    with pytest.raises(ValueError, match="limit must be at least 1, not 0"):
        RequestQuery.build(limit=0)


def test_the_valid_statuses_are_the_status_enum() -> None:
    with pytest.raises(ValueError) as raised:
        status_named("nope")
    assert all(status.value in str(raised.value) for status in Status)


def test_the_async_client_lists_what_the_sync_client_lists() -> None:
    server = fakeredis.FakeServer()
    sync = TriggerClient(fakeredis.FakeRedis(server=server), ProducerSettings(queue="q"))
    sync.trigger("training_pipeline", request_id="s1")

    async def scenario() -> list[str]:
        async with AsyncTriggerClient(fakeredis.FakeAsyncRedis(server=server), ProducerSettings(queue="q")) as aio:
            await aio.trigger(template="nightly", request_id="a1")
            return ids(await aio.requests(status=["queued"], limit=5))

    assert asyncio.run(scenario()) == ["a1", "s1"]
    assert ids(sync.requests(pipeline="nightly")) == ["a1"]

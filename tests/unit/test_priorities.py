"""Priorities: each wire priority has kombu's own list, every path that pushes a message keeps it there,
and the worker pops the most urgent list first."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner
from kombu.transport import redis as kombu_redis

from producers import keys
from producers.async_client import AsyncTriggerClient
from producers.cli import cli
from producers.client import TriggerClient
from producers.errors import InvalidRequest
from producers.priority import TRANSPORT_OPTIONS, message_priority, queue_list, queue_lists, step_list
from producers.settings import ProducerSettings
from producers.state import Status
from producers.stats import read_stats
from worker.app import celery_config
from worker.errors import StoreUnavailable
from worker.processing import Delivery, Processor
from worker.schedule import RetrySchedule
from worker.settings import WorkerSettings
from worker.sweeper import Sweeper
from worker.transport import Channel, load_item

QUEUE = "zenml-triggers"


def client_on(fake: fakeredis.FakeRedis, queue: str = QUEUE) -> TriggerClient:
    return TriggerClient(fake, ProducerSettings(queue=queue))


def priority_of(item: bytes) -> Any:
    return json.loads(item)["properties"]["priority"]


def test_each_priority_has_the_list_kombu_names_for_its_step() -> None:
    assert queue_list("q") == queue_list("q", 0) == "q", "routine work stays on the plain list"
    assert queue_list("q", 9) == "q\x06\x169" and queue_list("q", 3) == "q\x06\x163"
    assert queue_lists("q") == ["q", *(f"q\x06\x16{n}" for n in range(1, 10))]
    kombu = SimpleNamespace(sep=kombu_redis.Channel.sep, priority_steps=list(range(10)))
    kombu.priority = lambda n: kombu_redis.Channel.priority(kombu, n)
    assert [kombu_redis.Channel._q_for_pri(kombu, "q", n) for n in range(10)] == queue_lists("q")


def test_the_worker_pops_the_most_urgent_list_first_and_keeps_kombus_step_lookup() -> None:
    options = celery_config(WorkerSettings(redis_url="redis://unused.invalid:6379/0"))["broker_transport_options"]
    assert options["priority_steps"] == TRANSPORT_OPTIONS["priority_steps"] == list(range(9, -1, -1))
    assert options["queue_order_strategy"] == "priority" and options["guarded_queues"] == (QUEUE,)
    # kombu's BRPOP names the lists in `priority_steps` order, and Redis pops the first non-empty one
    assert [step_list(QUEUE, step) for step in options["priority_steps"]] == queue_lists(QUEUE)[::-1]
    ours = SimpleNamespace(priority_steps=options["priority_steps"])
    stock = SimpleNamespace(priority_steps=list(range(10)))
    for n in range(-1, 12):  # kombu clamps message priorities first; our lookup must agree for any order
        assert Channel.priority(ours, n) == kombu_redis.Channel.priority(stock, max(n, 0))


def test_a_request_goes_onto_its_prioritys_list_carrying_kombus_step(fake_redis: fakeredis.FakeRedis) -> None:
    client = client_on(fake_redis)
    urgent = client.trigger("training_pipeline", priority=9)
    routine = client.trigger("training_pipeline")

    assert fake_redis.llen(QUEUE) == 1 and priority_of(fake_redis.lindex(QUEUE, 0)) == 0
    (item,) = fake_redis.lrange(queue_list(QUEUE, 9), 0, -1)
    assert json.loads(item)["headers"]["id"] == urgent and priority_of(item) == 9
    assert client.status(urgent).priority == 9 and client.status(routine).priority is None
    assert read_stats(fake_redis, QUEUE).queue_depth == 2, "the depth counts every priority's list"


def test_the_async_client_uses_the_same_list() -> None:
    server = fakeredis.FakeServer()

    async def send() -> str:
        async with AsyncTriggerClient(fakeredis.FakeAsyncRedis(server=server)) as client:
            return await client.trigger("training_pipeline", priority=4)

    request_id = asyncio.run(send())
    (item,) = fakeredis.FakeRedis(server=server).lrange(queue_list(keys.DEFAULT_QUEUE, 4), 0, -1)
    assert json.loads(item)["headers"]["id"] == request_id and priority_of(item) == 4


@pytest.mark.parametrize("priority", [-1, 10, "high"])
def test_a_priority_outside_0_to_9_is_refused_at_its_path(fake_redis: fakeredis.FakeRedis, priority: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        client_on(fake_redis).trigger("training_pipeline", priority=priority)
    assert [p.path for p in caught.value.details] == ["priority"]
    assert fake_redis.keys("*") == []


def test_the_transport_keeps_a_messages_priority_when_it_rebuilds_it(fake_redis: fakeredis.FakeRedis) -> None:
    client_on(fake_redis).trigger("training_pipeline", priority=7)
    message, checked = load_item(fake_redis.rpop(queue_list(QUEUE, 7)), QUEUE)
    assert checked is not None and message_priority(message) == 7
    garbage, _ = load_item(b"not json", QUEUE)
    assert message_priority(garbage) == 0, "a quarantined item is routine"


def test_the_retry_schedule_releases_each_envelope_onto_its_own_list(fake_redis: fakeredis.FakeRedis) -> None:
    client_on(fake_redis).trigger("training_pipeline", priority=7)
    envelope = fake_redis.rpop(queue_list(QUEUE, 7))
    schedule = RetrySchedule(fake_redis, QUEUE)
    schedule.add(envelope, due=100)
    schedule.add("not an envelope", due=100)

    assert schedule.release_due(now=101) == 2
    assert fake_redis.lrange(queue_list(QUEUE, 7), 0, -1) == [envelope]
    assert fake_redis.lrange(QUEUE, 0, -1) == [b"not an envelope"], "unreadable: step 0, as kombu restores it"


def test_a_retry_keeps_its_requests_priority(processor: Processor, runner: Any) -> None:
    fake = processor.s.states.client
    request_id = client_on(fake, processor.s.settings.queue).trigger("training_pipeline", priority=8)
    runner.script = [StoreUnavailable("the store is away")]
    message, _ = load_item(fake.rpop(queue_list(QUEUE, 8)), QUEUE)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))

    assert processor.handle(Delivery(raw=args[0], task_id=request_id, **kwargs)).status is Status.RETRYING
    assert processor.s.schedule.release_due(now=10**10) == 1
    (retry,) = fake.lrange(queue_list(QUEUE, 8), 0, -1)
    assert json.loads(retry)["headers"]["id"] == request_id and priority_of(retry) == 8


def test_the_sweeper_sends_a_lost_message_back_onto_its_prioritys_list(fake_redis: fakeredis.FakeRedis) -> None:
    client = client_on(fake_redis)
    request_id = client.trigger("training_pipeline", priority=6)
    sweeper = Sweeper(fake_redis, QUEUE, client.states, lost_after=60)
    assert sweeper.sweep(now=10**10) == 0, "still on its list"

    fake_redis.rpop(queue_list(QUEUE, 6))  # popped, then lost in flight
    assert sweeper.sweep(now=10**10) == 1
    (resent,) = fake_redis.lrange(queue_list(QUEUE, 6), 0, -1)
    assert json.loads(resent)["headers"]["id"] == request_id and fake_redis.llen(QUEUE) == 0


def test_trigger_send_priority(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> None:
    monkeypatch.setattr("producers.client.connect", lambda settings: fake_redis)
    sent = CliRunner().invoke(cli, ["send", "training_pipeline", "--priority", "9"])
    assert sent.exit_code == 0 and fake_redis.llen(queue_list(QUEUE, 9)) == 1
    shown = CliRunner().invoke(cli, ["status", sent.output.strip()])
    assert "priority: 9" in shown.output

    refused = CliRunner().invoke(cli, ["send", "training_pipeline", "--priority", "10"])
    assert refused.exit_code == 2 and "--priority" in refused.output and "0<=x<=9" in refused.output


def test_a_schedules_priority_goes_on_its_requests() -> None:
    from producers.schedules import Schedule, request_for

    schedule = Schedule(name="nightly", every=3600, pipeline="training_pipeline", priority=2)
    assert request_for(schedule, datetime.now(timezone.utc)).priority == 2
    with pytest.raises(ValueError, match="less than or equal to 9"):
        Schedule(name="nightly", every=3600, pipeline="training_pipeline", priority=12)


def test_kombu_restores_an_unacknowledged_message_onto_its_prioritys_list(fake_redis: fakeredis.FakeRedis) -> None:
    client_on(fake_redis).trigger("training_pipeline", priority=7)
    message, _ = load_item(fake_redis.rpop(queue_list(QUEUE, 7)), QUEUE)  # delivered, as the worker rebuilt it
    channel = SimpleNamespace(
        sep=kombu_redis.Channel.sep,
        priority_steps=TRANSPORT_OPTIONS["priority_steps"],
        min_priority=0,
        max_priority=9,
        default_priority=0,
        _lookup=lambda exchange, routing_key: [QUEUE],
    )
    channel.priority = lambda n: Channel.priority(channel, n)
    channel._q_for_pri = lambda queue, pri: kombu_redis.Channel._q_for_pri(channel, queue, pri)
    channel._get_message_priority = lambda m, reverse=False: Channel._get_message_priority(channel, m, reverse)
    with fake_redis.pipeline() as pipe:
        kombu_redis.Channel._do_restore_message(channel, message, "", QUEUE, pipe)
        pipe.execute()
    (restored,) = fake_redis.lrange(queue_list(QUEUE, 7), 0, -1)
    assert json.loads(restored)["headers"]["id"] == message["headers"]["id"] and fake_redis.llen(QUEUE) == 0

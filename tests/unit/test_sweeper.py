"""The sweeper sends again a message lost in flight (popped, never recorded as unacked), and nothing else."""

from __future__ import annotations

import json
import threading
from typing import Any

import fakeredis
import redis

from producers import TriggerClient, keys
from producers.settings import ProducerSettings
from producers.state import RequestState, StateStore, Status
from worker.sweeper import Sweeper, SweeperThread

QUEUE = "sweep-q"


def setup(fake: fakeredis.FakeRedis) -> tuple[TriggerClient, Sweeper]:
    client = TriggerClient(fake, ProducerSettings(queue=QUEUE))
    return client, Sweeper(fake, QUEUE, StateStore(fake, 3600), lost_after=60)


def tag(envelope: Any) -> str:
    return str(json.loads(envelope)["properties"]["delivery_tag"])


def test_a_message_popped_and_lost_is_sent_again_under_a_fresh_tag(fake_redis: fakeredis.FakeRedis) -> None:
    client, sweeper = setup(fake_redis)
    request_id = client.trigger("training_pipeline")
    lost = fake_redis.rpop(QUEUE)  # BRPOP answered, then the worker's main process died

    assert sweeper.sweep(now=10**10) == 1

    (resent,) = fake_redis.lrange(QUEUE, 0, -1)
    assert json.loads(resent)["headers"]["id"] == request_id and tag(resent) != tag(lost)
    assert json.loads(resent)["body"] == json.loads(lost)["body"]
    assert sweeper.sweep(now=10**10) == 0, "now it is in the queue again"


def test_messages_still_in_the_queue_or_unacked_are_left_alone(fake_redis: fakeredis.FakeRedis) -> None:
    client, sweeper = setup(fake_redis)
    client.trigger("training_pipeline")  # still in the queue
    client.trigger("training_pipeline")
    envelope = fake_redis.lpop(QUEUE)  # the newer one was reserved by a worker
    fake_redis.hset(keys.UNACKED_KEY, tag(envelope), envelope)  # a worker reserved it (prefetch)

    assert sweeper.sweep(now=10**10) == 0
    assert sweeper.sweep(now=0) == 0, "too young to be lost"


def test_requests_a_worker_took_on_or_that_expired_are_forgotten(fake_redis: fakeredis.FakeRedis) -> None:
    client, sweeper = setup(fake_redis)
    taken = client.trigger("training_pipeline")
    expired = client.trigger("training_pipeline")
    fake_redis.delete(QUEUE)
    StateStore(fake_redis, 3600).put(RequestState(request_id=taken, status=Status.RUNNING))
    fake_redis.delete(keys.state_key(expired))

    assert sweeper.sweep(now=10**10) == 0
    assert fake_redis.zcard(keys.waiting_key(QUEUE)) == 0 and fake_redis.hlen(keys.waiting_messages_key(QUEUE)) == 0


def test_a_re_sent_request_id_is_not_noted_twice(fake_redis: fakeredis.FakeRedis) -> None:
    client, _ = setup(fake_redis)
    client.trigger("training_pipeline", request_id="same-1")
    client.trigger("training_pipeline", request_id="same-1")

    assert fake_redis.zcard(keys.waiting_key(QUEUE)) == 1 and fake_redis.llen(QUEUE) == 2


def test_the_chores_thread_runs_every_chore_each_round_and_survives_a_redis_error() -> None:
    rounds: list[str] = []
    done = threading.Event()

    def flaky() -> None:
        rounds.append("flaky")
        raise redis.ConnectionError("Redis restarting")

    def prune() -> None:
        rounds.append("prune")
        if rounds.count("prune") >= 2:
            done.set()

    thread = SweeperThread((flaky, prune), interval=0.01)
    thread.start()
    assert done.wait(10), "the second chore must run even when the first raises, round after round"
    thread.stopped.set()
    thread.join(5)
    assert not thread.is_alive()
    assert rounds[:4] == ["flaky", "prune", "flaky", "prune"]

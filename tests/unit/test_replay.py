"""Replaying dead letters: the request goes back under a new id that points to the old one."""

from __future__ import annotations

import base64
import json
from typing import Any

import fakeredis
import pytest

from producers.client import TriggerClient
from producers.contract import TriggerRequest, encode_request
from producers.settings import ProducerSettings
from producers.state import RequestState, Status
from worker.processing import Delivery, Processor
from worker.replay import replay, replay_all
from worker.transport import safe_loads

QUEUE = "zenml-triggers"


@pytest.fixture
def client(fake_redis: fakeredis.FakeRedis) -> TriggerClient:
    return TriggerClient(fake_redis, ProducerSettings())


def work_one(processor: Processor, client: TriggerClient) -> RequestState:
    """What the worker does with the next queued message."""
    message = safe_loads(client.redis.rpop(QUEUE), QUEUE)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    return processor.handle(Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs))


def test_replay_of_a_rejected_request(processor: Processor, client: TriggerClient, runner: Any) -> None:
    request = TriggerRequest(request_id="old-1", pipeline_name="training_pipeline", parameters={"nope": 1})
    processor.handle(Delivery(raw=encode_request(request)))
    letter = processor.s.dead_letters.get("old-1")
    assert letter is not None

    new_id = replay(letter, client, processor.s.dead_letters)
    assert new_id != "old-1"
    assert client.status(new_id).replay_of == "old-1"
    assert client.status("old-1").replayed_as == [new_id]
    relinked = processor.s.dead_letters.get("old-1")
    assert relinked is not None
    assert relinked.replayed_as == [new_id]

    state = work_one(processor, client)
    assert state.request_id == new_id
    assert state.status is Status.REJECTED
    assert state.replay_of == "old-1"


def test_replay_all_skips_letters_already_replayed(processor: Processor, client: TriggerClient) -> None:
    for request_id in ("a", "b"):
        bad = TriggerRequest(request_id=request_id, pipeline_name="nope")
        processor.handle(Delivery(raw=encode_request(bad)))
    first = replay_all(client, processor.s.dead_letters)
    assert sorted(old for old, _ in first) == ["a", "b"]
    assert replay_all(client, processor.s.dead_letters) == []
    assert client.redis.llen(QUEUE) == 2


def test_replay_of_unreadable_bytes_is_rejected_again_under_the_new_id(
    processor: Processor, client: TriggerClient
) -> None:
    raw = b"\xff\xfe garbage"
    old = processor.handle(Delivery(raw=raw))
    letter = processor.s.dead_letters.get(old.request_id)
    assert letter is not None
    new_id = replay(letter, client, processor.s.dead_letters)
    state = work_one(processor, client)
    assert state.request_id == new_id
    assert state.status is Status.REJECTED
    new_letter = processor.s.dead_letters.get(new_id)
    assert new_letter is not None
    assert new_letter.raw_bytes() == raw


def test_replay_of_a_malformed_request_with_a_readable_id_reaches_a_terminal_state(
    processor: Processor, client: TriggerClient
) -> None:
    raw = json.dumps({"request_id": "old-2", "pipeline_name": 5}).encode()
    processor.handle(Delivery(raw=raw))
    letter = processor.s.dead_letters.get("old-2")
    assert letter is not None
    new_id = replay(letter, client, processor.s.dead_letters)
    work_one(processor, client)
    assert client.status(new_id).status.terminal

"""Replaying dead letters: the request goes back under a new id that points to the old one, once per lineage."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner

from producers.client import TriggerClient
from producers.contract import TriggerRequest, encode_request
from producers.errors import EnqueueError
from producers.settings import ProducerSettings
from producers.state import ErrorInfo, RequestState, Status
from worker import cli
from worker.dead_letters import DeadLetter, DeadLetterStore
from worker.processing import Delivery, Processor
from worker.replay import NotReplayable, replay, replay_all
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


def drain(processor: Processor, client: TriggerClient) -> list[RequestState]:
    return [work_one(processor, client) for _ in range(client.redis.llen(QUEUE))]


def reject(processor: Processor, *raws: bytes | str) -> list[str]:
    """Hand invalid payloads to the processor; the ids their letters are stored under."""
    return [processor.handle(Delivery(raw=raw)).request_id for raw in raws]


def six_invalid(processor: Processor) -> list[str]:
    bad_params = [
        encode_request(TriggerRequest(request_id=f"p-{i}", pipeline_name="training_pipeline", parameters={"no": i}))
        for i in range(3)
    ]
    unknown = [encode_request(TriggerRequest(request_id=f"u-{i}", pipeline_name="nope")) for i in range(2)]
    return reject(processor, *bad_params, *unknown, b"\xff\xfe garbage")


def stored(store: DeadLetterStore, request_id: str) -> DeadLetter:
    letter = store.get(request_id)
    assert letter is not None, request_id
    return letter


def plain_letter(request_id: str, **fields: Any) -> DeadLetter:
    raw = encode_request(TriggerRequest(request_id=request_id, pipeline_name="nope"))
    error = ErrorInfo(type="UnknownPipeline", message="no")
    return DeadLetter(
        request_id=request_id, status="rejected", reason="no", error=error, attempts=1, raw_payload=raw, **fields
    )


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


def test_replay_all_twice_with_nothing_fixed_sends_nothing_the_second_time(
    processor: Processor, client: TriggerClient
) -> None:
    """The issue: 6 -> 12 -> 18 letters. Replays rejected again must not be replayed by `--all`."""
    store = processor.s.dead_letters
    originals = six_invalid(processor)
    assert store.count() == 6

    first = replay_all(client, store)
    assert sorted(old for old, _ in first) == sorted(originals)
    assert all(state.status is Status.REJECTED for state in drain(processor, client))
    assert store.count() == 12

    assert replay_all(client, store) == []
    assert client.redis.llen(QUEUE) == 0
    assert store.count() == 12


def test_replay_all_skips_letters_that_are_replays(client: TriggerClient, fake_redis: fakeredis.FakeRedis) -> None:
    store = DeadLetterStore(fake_redis, 100, 3600)
    store.add(plain_letter("original"))
    store.add(plain_letter("a-replay", replay_of="original-before"))
    assert [old for old, _ in replay_all(client, store)] == ["original"]


def test_explicit_replay_still_replays_any_letter(processor: Processor, client: TriggerClient) -> None:
    store = processor.s.dead_letters
    (old,) = reject(processor, encode_request(TriggerRequest(request_id="x-1", pipeline_name="nope")))
    first = replay(stored(store, old), client, store)
    work_one(processor, client)
    second = replay(stored(store, old), client, store)
    of_the_replay = replay(stored(store, first), client, store)
    assert stored(store, old).replayed_as == [first, second]
    assert client.status(old).replayed_as == [first, second]
    assert client.status(of_the_replay).replay_of == first


def test_a_truncated_letter_cannot_be_replayed(client: TriggerClient, fake_redis: fakeredis.FakeRedis) -> None:
    store = DeadLetterStore(fake_redis, 100, 3600, max_payload_bytes=1000, payload_prefix=10)
    store.add(plain_letter("big").model_copy(update={"raw_payload": "x" * 5000}))
    letter = store.get("big")
    assert letter is not None and letter.payload_truncated
    with pytest.raises(NotReplayable, match="5000-byte payload"):
        replay(letter, client, store)
    assert replay_all(client, store) == []
    assert client.redis.llen(QUEUE) == 0


def test_a_letter_pruned_before_its_replay_is_not_sent(client: TriggerClient, fake_redis: fakeredis.FakeRedis) -> None:
    store = DeadLetterStore(fake_redis, 100, 3600)
    store.add(plain_letter("a"))
    letter = stored(store, "a")
    store.purge()
    with pytest.raises(NotReplayable, match="no longer stored"):
        replay(letter, client, store)
    assert client.redis.llen(QUEUE) == 0


def test_concurrent_replay_all_calls_replay_each_letter_once(
    client: TriggerClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled `replay --all` overlapping a manual one: both list the same letters, one wins each."""
    ours, theirs = DeadLetterStore(fake_redis, 100, 3600), DeadLetterStore(fake_redis, 100, 3600)
    for i in range(5):
        ours.add(plain_letter(f"l-{i}"))
    their_pairs: list[tuple[str, str]] = []
    real_link = ours.link

    def link_after_theirs(*args: Any) -> bool:
        if not their_pairs:
            their_pairs.extend(replay_all(client, theirs))
        return real_link(*args)

    monkeypatch.setattr(ours, "link", link_after_theirs)
    our_pairs = replay_all(client, ours)
    assert len(their_pairs) == 5 and our_pairs == []
    assert client.redis.llen(QUEUE) == 5
    assert all(len(letter.replayed_as) == 1 for letter in ours.list())


def test_concurrent_explicit_replays_of_one_letter_are_all_recorded(
    processor: Processor, client: TriggerClient
) -> None:
    store = processor.s.dead_letters
    (old,) = reject(processor, encode_request(TriggerRequest(request_id="c-1", pipeline_name="nope")))
    letter = stored(store, old)
    new_ids: list[str] = []
    threads = [threading.Thread(target=lambda: new_ids.append(replay(letter, client, store))) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(new_ids)) == 12
    assert sorted(stored(store, old).replayed_as) == sorted(new_ids)
    assert sorted(client.status(old).replayed_as) == sorted(new_ids)


def test_a_replay_that_could_not_be_enqueued_is_not_recorded(
    processor: Processor, client: TriggerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = processor.s.dead_letters
    (old,) = reject(processor, encode_request(TriggerRequest(request_id="e-1", pipeline_name="nope")))

    def down(*_: Any) -> str:
        raise EnqueueError("Redis is down")

    monkeypatch.setattr(client, "send", down)
    with pytest.raises(EnqueueError):
        replay(stored(store, old), client, store)
    assert stored(store, old).replayed_as == []
    monkeypatch.undo()
    assert [o for o, _ in replay_all(client, store)] == [old]


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
    (old,) = reject(processor, raw)
    letter = processor.s.dead_letters.get(old)
    assert letter is not None
    new_id = replay(letter, client, processor.s.dead_letters)
    work_one(processor, client)
    assert client.status(new_id).status.terminal


# -- the `trigger dlq replay` command --------------------------------------------


@pytest.fixture
def dlq_store(client: TriggerClient, monkeypatch: pytest.MonkeyPatch) -> DeadLetterStore:
    store = DeadLetterStore(client.redis, 100, 3600, max_payload_bytes=1000, payload_prefix=10)
    monkeypatch.setattr(cli, "_store", lambda settings: (client, store))
    return store


def test_cli_replay_of_a_truncated_letter_fails_with_one_line(dlq_store: DeadLetterStore) -> None:
    dlq_store.add(plain_letter("big").model_copy(update={"raw_payload": "x" * 5000}))
    result = CliRunner().invoke(cli.dlq, ["replay", "big"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith("Error: dead letter big kept only the first bytes of its 5000-byte payload")


def test_cli_replay_all_twice_sends_nothing_the_second_time(dlq_store: DeadLetterStore) -> None:
    dlq_store.add(plain_letter("a"))
    first = CliRunner().invoke(cli.dlq, ["replay", "--all"])
    assert first.exit_code == 0 and first.output.startswith("a -> ")
    second = CliRunner().invoke(cli.dlq, ["replay", "--all"])
    assert second.exit_code == 0 and second.stdout == ""
    assert "nothing to replay" in second.output

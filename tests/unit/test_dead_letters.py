"""The dead-letter store on fakeredis: bounded by size and age, newest first, raw bytes kept exactly."""

from __future__ import annotations

import time

import fakeredis
import pytest

from producers import keys
from producers.state import ErrorInfo
from worker.dead_letters import DeadLetter, DeadLetterStore

MAX_AGE = 1000


def letter(request_id: str, raw: bytes | str = b"{}") -> DeadLetter:
    text, encoding = DeadLetter.encode_raw(raw)
    return DeadLetter(
        request_id=request_id,
        status="rejected",
        reason="bad",
        error=ErrorInfo(type="InvalidParameters", message="bad", details=[{"path": "parameters.x", "problem": "no"}]),
        attempts=1,
        raw_payload=text,
        raw_encoding=encoding,
        pipeline_name="training_pipeline",
    )


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis) -> DeadLetterStore:
    return DeadLetterStore(fake_redis, max_size=3, max_age=MAX_AGE)


def rescore(store: DeadLetterStore, **scores: float) -> None:
    store.client.zadd(keys.DEAD_LETTERS_KEY, scores)


def test_add_get_count(store: DeadLetterStore) -> None:
    assert store.count() == 0
    assert store.get("a") is None
    store.add(letter("a"))
    got = store.get("a")
    assert got is not None
    assert got.request_id == "a"
    assert got.error.details == [{"path": "parameters.x", "problem": "no"}]
    assert store.count() == 1
    assert 0 < store.client.ttl(keys.dead_letter_key("a")) <= MAX_AGE


def test_list_is_newest_first_and_limited(store: DeadLetterStore) -> None:
    for request_id in ("a", "b", "c"):
        store.add(letter(request_id))
    now = time.time()
    rescore(store, a=now - 30, b=now - 10, c=now - 20)
    assert [item.request_id for item in store.list()] == ["b", "c", "a"]
    assert [item.request_id for item in store.list(limit=2)] == ["b", "c"]


def test_size_bound_drops_the_oldest(store: DeadLetterStore) -> None:
    for request_id in ("a1", "a2", "a3", "a4", "a5"):
        store.add(letter(request_id))
    assert store.count() == 3
    assert {item.request_id for item in store.list()} == {"a3", "a4", "a5"}
    assert store.get("a1") is None
    assert not store.client.exists(keys.dead_letter_key("a2"))


def test_prune_by_age(store: DeadLetterStore) -> None:
    store.add(letter("old"))
    store.add(letter("new"))
    rescore(store, old=1_000.0, new=5_000.0)
    assert store.prune(now=1_000.0 + MAX_AGE - 1) == 0
    assert store.prune(now=1_000.0 + MAX_AGE + 1) == 1
    assert store.get("old") is None
    assert store.get("new") is not None
    assert store.count() == 1


def test_prune_by_age_and_size_together(fake_redis: fakeredis.FakeRedis) -> None:
    store = DeadLetterStore(fake_redis, max_size=2, max_age=MAX_AGE)
    store.client.zadd(keys.DEAD_LETTERS_KEY, {"x": 1.0, "y": 2_000.0, "z": 3_000.0, "w": 4_000.0})
    assert store.prune(now=1.0 + MAX_AGE + 1) == 2
    assert store.client.zrange(keys.DEAD_LETTERS_KEY, 0, -1) == [b"z", b"w"]


def test_purge_older_than(store: DeadLetterStore) -> None:
    store.add(letter("old"))
    store.add(letter("new"))
    rescore(store, old=time.time() - 600)
    assert store.purge(older_than=300) == 1
    assert [item.request_id for item in store.list()] == ["new"]


def test_purge_everything(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    store.add(letter("b"))
    assert store.purge() == 2
    assert store.count() == 0
    assert store.list() == []
    assert store.purge() == 0


def test_non_utf8_raw_round_trips(store: DeadLetterStore) -> None:
    raw = b"\x00\xff\xfe garbage \x80"
    store.add(letter("bin", raw))
    got = store.get("bin")
    assert got is not None
    assert got.raw_encoding == "base64"
    assert got.raw_bytes() == raw


def test_utf8_raw_is_kept_as_text(store: DeadLetterStore) -> None:
    store.add(letter("txt", '{"pipeline_name": "tréning"}'))
    got = store.get("txt")
    assert got is not None
    assert got.raw_encoding == "utf-8"
    assert got.raw_payload == '{"pipeline_name": "tréning"}'
    assert got.raw_bytes() == '{"pipeline_name": "tréning"}'.encode()


def test_save_rewrites_in_place(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    store.add(letter("b"))
    updated = store.get("a")
    assert updated is not None
    updated.replayed_as.append("a-2")
    store.save(updated)
    again = store.get("a")
    assert again is not None
    assert again.replayed_as == ["a-2"]
    assert [item.request_id for item in store.list()] == ["b", "a"]
    assert store.client.ttl(keys.dead_letter_key("a")) > 0

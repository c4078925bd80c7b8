"""The dead-letter store on fakeredis: bounded by age, count and bytes, every letter bounded, pruning atomic."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from producers import keys
from producers.state import ErrorInfo
from worker.dead_letters import (
    MAX_DETAILS,
    MAX_TEXT_CHARS,
    DeadLetter,
    DeadLetterStore,
    bounded_payload,
    cut_payload,
)

MAX_AGE = 1000
LIMIT = 1024
PREFIX = 100


def letter(request_id: str, raw: bytes | str = b"{}", reason: str = "bad", **fields: Any) -> DeadLetter:
    text, encoding = DeadLetter.encode_raw(raw)
    return DeadLetter(
        request_id=request_id,
        status="rejected",
        reason=reason,
        error=ErrorInfo(type="InvalidParameters", message=reason, details=[{"path": "parameters.x", "problem": "no"}]),
        attempts=1,
        raw_payload=text,
        raw_encoding=encoding,
        pipeline_name="training_pipeline",
        **fields,
    )


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis) -> DeadLetterStore:
    return DeadLetterStore(fake_redis, max_size=3, max_age=MAX_AGE, max_payload_bytes=LIMIT, payload_prefix=PREFIX)


def rescore(store: DeadLetterStore, **scores: float) -> None:
    store.client.zadd(keys.DEAD_LETTERS_KEY, scores)


def stored_bytes(store: DeadLetterStore) -> int:
    """What the records really take, to check the running total against."""
    ids = [m.decode() for m in store.client.zrange(keys.DEAD_LETTERS_KEY, 0, -1)]
    return sum(store.client.strlen(keys.dead_letter_key(i)) for i in ids)


def ids(store: DeadLetterStore) -> set[str]:
    return {item.request_id for item in store.list()}


# -- the basics ---------------------------------------------------------------


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


def test_list_leaves_out_records_that_expired(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    store.add(letter("b"))
    store.client.delete(keys.dead_letter_key("a"))
    assert ids(store) == {"b"}


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


def test_add_records_size_and_digest_of_a_whole_payload(store: DeadLetterStore) -> None:
    store.add(letter("a", b'{"x": 1}'))
    got = store.get("a")
    assert got is not None
    assert (got.payload_size, got.payload_truncated) == (8, False)
    assert got.payload_sha256 == hashlib.sha256(b'{"x": 1}').hexdigest()


def test_replay_of_survives_the_round_trip(store: DeadLetterStore) -> None:
    store.add(letter("a", replay_of="original"))
    got = store.get("a")
    assert got is not None
    assert got.replay_of == "original"


# -- bounded payloads ---------------------------------------------------------


def test_payload_within_the_limit_is_kept_whole() -> None:
    raw = b"x" * LIMIT
    kept = bounded_payload(raw, LIMIT, PREFIX)
    assert (kept.text, kept.encoding, kept.size, kept.truncated) == ("x" * LIMIT, "utf-8", LIMIT, False)
    assert kept.sha256 == hashlib.sha256(raw).hexdigest()


def test_payload_over_the_limit_keeps_a_prefix_with_the_full_size_and_digest() -> None:
    raw = b"y" + b"x" * LIMIT
    kept = bounded_payload(raw, LIMIT, PREFIX)
    assert kept.truncated
    assert kept.text == raw[:PREFIX].decode()
    assert kept.size == LIMIT + 1
    assert kept.sha256 == hashlib.sha256(raw).hexdigest()


def test_str_payload_is_measured_in_utf8_bytes() -> None:
    raw = "é" * (LIMIT // 2 + 1)  # LIMIT // 2 + 1 characters, LIMIT + 2 bytes
    kept = bounded_payload(raw, LIMIT, PREFIX)
    assert kept.truncated and kept.size == LIMIT + 2


def test_prefix_cut_inside_a_character_stays_text() -> None:
    raw = ("a" + "é" * LIMIT).encode()  # byte PREFIX falls inside an "é"
    kept = bounded_payload(raw, LIMIT, PREFIX)
    assert kept.encoding == "utf-8"
    assert kept.text == "a" + "é" * ((PREFIX - 1) // 2)


def test_binary_prefix_is_base64() -> None:
    raw = b"\xff" * (LIMIT + 1)
    kept = bounded_payload(raw, LIMIT, PREFIX)
    assert kept.encoding == "base64"
    assert base64.b64decode(kept.text) == raw[:PREFIX]


@pytest.mark.parametrize("repeat", [1, LIMIT])
def test_lone_surrogates_do_not_raise_and_are_kept_as_base64(store: DeadLetterStore, repeat: int) -> None:
    raw = "bad \ud800 text" * repeat
    data = raw.encode("utf-8", "surrogatepass")
    kept = bounded_payload(raw, LIMIT, PREFIX)
    assert kept.encoding == "base64"
    assert kept.size == len(data) and kept.sha256 == hashlib.sha256(data).hexdigest()
    assert base64.b64decode(kept.text) == data[: PREFIX if kept.truncated else None]
    store.add(letter("surrogate", raw, reason="bad \udfff reason"))  # what the processing code hands over today
    got = store.get("surrogate")
    assert got is not None
    assert got.raw_encoding == "base64" and got.payload_size == len(data)
    assert "\\udfff" in got.reason


def test_a_payload_cut_upstream_keeps_the_whole_items_size_and_digest(store: DeadLetterStore) -> None:
    kept = cut_payload(b"h" * 4096, 10_000_000, "cd" * 32, PREFIX)
    assert (kept.text, kept.size, kept.sha256, kept.truncated) == ("h" * PREFIX, 10_000_000, "cd" * 32, True)
    store.add(letter("cut-upstream").model_copy(update=kept.fields()))
    got = store.get("cut-upstream")
    assert got is not None
    assert (got.payload_size, got.payload_sha256, got.payload_truncated) == (10_000_000, "cd" * 32, True)
    assert got.raw_bytes() == b"h" * PREFIX


def test_text_wrongly_labelled_base64_is_stored_as_text(store: DeadLetterStore) -> None:
    store.add(letter("odd").model_copy(update={"raw_payload": "not base64!", "raw_encoding": "base64"}))
    got = store.get("odd")
    assert got is not None
    assert (got.raw_payload, got.raw_encoding) == ("not base64!", "utf-8")


def test_add_bounds_a_huge_payload_it_is_given_whole(store: DeadLetterStore) -> None:
    raw = b"z" * 10_000_000
    store.add(letter("huge", raw))
    got = store.get("huge")
    assert got is not None
    assert got.payload_truncated and got.raw_bytes() == raw[:PREFIX]
    assert got.payload_size == len(raw)
    assert got.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert store.client.strlen(keys.dead_letter_key("huge")) < 2_000


def test_add_keeps_the_original_size_of_a_letter_truncated_already(store: DeadLetterStore) -> None:
    already = letter("cut", b"q" * (PREFIX * 3)).model_copy(
        update={"payload_truncated": True, "payload_size": 10**7, "payload_sha256": "ab" * 32}
    )
    store.add(already)
    got = store.get("cut")
    assert got is not None
    assert got.raw_bytes() == b"q" * PREFIX
    assert (got.payload_size, got.payload_sha256, got.payload_truncated) == (10**7, "ab" * 32, True)


# -- bounded texts ------------------------------------------------------------


def test_reason_message_and_labels_are_clipped_with_their_length_noted(store: DeadLetterStore) -> None:
    name = "n" * 1_000_000
    huge = letter("long", reason=f"unknown task {name!r}").model_copy(update={"source": name})
    store.add(huge)
    got = store.get("long")
    assert got is not None
    for text in (got.reason, got.error.message, got.source):
        assert text is not None
        assert len(text) < MAX_TEXT_CHARS + 40
        assert text.endswith(" chars]")
    assert got.reason.endswith("... [1,000,015 chars]") and got.source.endswith("... [1,000,000 chars]")
    assert store.client.strlen(keys.dead_letter_key("long")) < 5 * MAX_TEXT_CHARS


def test_short_texts_are_kept_as_they_are(store: DeadLetterStore) -> None:
    store.add(letter("short", reason="x" * MAX_TEXT_CHARS))
    got = store.get("short")
    assert got is not None
    assert got.reason == "x" * MAX_TEXT_CHARS


def test_error_details_are_bounded_in_number_and_length(store: DeadLetterStore) -> None:
    details = [{"path": f"p{i}", "problem": "w" * 5000} for i in range(500)]
    many = letter("many")
    many.error = ErrorInfo(type="InvalidParameters", message="bad", details=details)
    store.add(many)
    got = store.get("many")
    assert got is not None
    assert len(got.error.details) == MAX_DETAILS + 1
    assert got.error.details[-1]["path"] == "" and got.error.details[-1]["problem"].endswith(" more")
    assert all(len(d["problem"]) < 600 for d in got.error.details)
    assert got.error.details[0]["path"] == "p0"


# -- pruning: age, count, bytes -------------------------------------------------


def test_size_bound_drops_the_oldest(store: DeadLetterStore) -> None:
    for request_id in ("a1", "a2", "a3", "a4", "a5"):
        store.add(letter(request_id))
    assert store.count() == 3
    assert ids(store) == {"a3", "a4", "a5"}
    assert store.get("a1") is None
    assert not store.client.exists(keys.dead_letter_key("a2"))
    assert store.total_bytes() == stored_bytes(store)


def test_prune_by_age(store: DeadLetterStore) -> None:
    store.add(letter("old"))
    store.add(letter("new"))
    rescore(store, old=1_000.0, new=5_000.0)
    assert store.prune(now=1_000.0 + MAX_AGE - 1) == 0
    assert store.prune(now=1_000.0 + MAX_AGE + 1) == 1
    assert store.get("old") is None
    assert store.get("new") is not None
    assert store.count() == 1
    assert store.total_bytes() == stored_bytes(store)


def test_add_leaves_age_to_the_periodic_prune_but_keeps_the_count_bound(fake_redis: fakeredis.FakeRedis) -> None:
    store = DeadLetterStore(fake_redis, max_size=2, max_age=MAX_AGE)
    store.add(letter("old"))
    rescore(store, old=time.time() - MAX_AGE - 1)
    assert store.add(letter("new")) == 0  # no age scan on the write path
    assert ids(store) == {"old", "new"}
    assert store.add(letter("newest")) == 1  # the count bound holds at once, oldest first
    assert ids(store) == {"new", "newest"}
    rescore(store, new=time.time() - MAX_AGE - 1)
    assert store.prune() == 1 and ids(store) == {"newest"}


def test_prune_by_age_and_size_together(fake_redis: fakeredis.FakeRedis) -> None:
    store = DeadLetterStore(fake_redis, max_size=2, max_age=MAX_AGE)
    store.client.zadd(keys.DEAD_LETTERS_KEY, {"x": 1.0, "y": 2_000.0, "z": 3_000.0, "w": 4_000.0})
    assert store.prune(now=1.0 + MAX_AGE + 1) == 2
    assert store.client.zrange(keys.DEAD_LETTERS_KEY, 0, -1) == [b"z", b"w"]


def test_byte_cap_drops_the_oldest_until_under(fake_redis: fakeredis.FakeRedis) -> None:
    probe = DeadLetterStore(fake_redis, max_size=100, max_age=MAX_AGE)
    probe.add(letter("probe-0", b"p" * 500))
    one = probe.total_bytes()
    probe.purge()
    store = DeadLetterStore(fake_redis, max_size=100, max_age=MAX_AGE, max_bytes=3 * one + one // 2)
    for i in range(6):
        store.add(letter(f"probe-{i}", b"p" * 500))
    assert ids(store) == {"probe-3", "probe-4", "probe-5"}
    assert store.total_bytes() == stored_bytes(store) == 3 * one
    assert store.client.hlen(keys.DEAD_LETTER_SIZES_KEY) == 3


def test_readding_one_id_counts_its_bytes_once(store: DeadLetterStore) -> None:
    store.add(letter("a", b"x" * 300))
    store.add(letter("a", b"x" * 10))
    assert store.count() == 1
    assert store.total_bytes() == stored_bytes(store)


def test_purge_older_than_keeps_the_total(store: DeadLetterStore) -> None:
    store.add(letter("old", b"o" * 200))
    store.add(letter("new"))
    rescore(store, old=time.time() - 600)
    assert store.purge(older_than=300) == 1
    assert [item.request_id for item in store.list()] == ["new"]
    assert store.total_bytes() == stored_bytes(store) > 0
    assert store.client.hkeys(keys.DEAD_LETTER_SIZES_KEY) == [b"new"]


def test_purge_everything(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    store.add(letter("b"))
    store.link("a", "a-2")
    assert store.purge() == 2
    assert store.count() == 0
    assert store.list() == []
    assert store.total_bytes() == 0
    assert not store.client.exists(keys.DEAD_LETTER_SIZES_KEY, keys.DEAD_LETTER_REPLAYS_KEY)
    assert store.purge() == 0


def interleave(client: Any, before: int, action: Callable[[], object], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run `action` (another writer) once, just before `client`'s command number `before` (from 0);
    return the list of commands sent so far, to learn how many there were."""
    real = client.execute_command
    sent: list[int] = []

    def execute(*args: Any, **options: Any) -> Any:
        if len(sent) == before:
            action()
        sent.append(1)
        return real(*args, **options)

    monkeypatch.setattr(client, "execute_command", execute)
    return sent


def add_interleaved(before: int, monkeypatch: pytest.MonkeyPatch) -> tuple[DeadLetterStore, int]:
    """A full store; our add while another store adds between our commands; (their store, our commands)."""
    server = fakeredis.FakeServer()
    ours = DeadLetterStore(fakeredis.FakeRedis(server=server), max_size=3, max_age=MAX_AGE)
    theirs = DeadLetterStore(fakeredis.FakeRedis(server=server), max_size=3, max_age=MAX_AGE)
    for i in range(3):
        theirs.add(letter(f"old-{i}"))
    sent = interleave(ours.client, before, lambda: theirs.add(letter("theirs")), monkeypatch)
    ours.add(letter("ours"))
    if len(sent) <= before:
        theirs.add(letter("theirs"))  # after our last command
    return theirs, len(sent)


def test_a_writer_interleaving_an_add_never_prunes_inside_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers during a rejection storm: wherever the other's add lands among our commands, the
    store ends at its bound with exactly the newest letters (a read-then-delete prune lost some)."""
    _, commands = add_interleaved(10**6, monkeypatch)
    for before in range(commands + 1):
        with monkeypatch.context() as patch:
            store, _ = add_interleaved(before, patch)
        assert ids(store) == {"old-2", "ours", "theirs"}, before
        assert store.total_bytes() == stored_bytes(store)


def test_concurrent_writers_keep_exactly_the_bound() -> None:
    server = fakeredis.FakeServer()

    def storm(name: str) -> None:
        store = DeadLetterStore(fakeredis.FakeRedis(server=server), max_size=20, max_age=MAX_AGE)
        for i in range(100):
            store.add(letter(f"{name}-{i}"))

    threads = [threading.Thread(target=storm, args=(name,)) for name in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = DeadLetterStore(fakeredis.FakeRedis(server=server), max_size=20, max_age=MAX_AGE)
    assert store.count() == 20
    assert store.total_bytes() == stored_bytes(store)
    assert store.client.hlen(keys.DEAD_LETTER_SIZES_KEY) == 20


# -- replay links -------------------------------------------------------------


def test_links_are_appended_and_read_with_the_letter(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    store.add(letter("b"))
    assert store.link("a", "a-2") and store.link("a", "a-3")
    got = store.get("a")
    assert got is not None
    assert got.replayed_as == ["a-2", "a-3"]
    assert [item.replayed_as for item in store.list()] == [[], ["a-2", "a-3"]]
    assert store.client.ttl(keys.dead_letter_key("a")) > 0


def test_first_only_link_is_a_claim_only_one_caller_wins(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    assert store.link("a", "a-2", first_only=True)
    assert not store.link("a", "a-3", first_only=True)
    got = store.get("a")
    assert got is not None
    assert got.replayed_as == ["a-2"]


def test_link_to_a_letter_no_longer_stored_fails(store: DeadLetterStore) -> None:
    assert not store.link("gone", "gone-2")
    assert not store.client.exists(keys.DEAD_LETTER_REPLAYS_KEY)


def test_unlink_takes_one_id_back(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    store.link("a", "a-2")
    store.link("a", "a-3")
    store.unlink("a", "a-2")
    assert store.get("a").replayed_as == ["a-3"]  # type: ignore[union-attr]
    store.unlink("a", "a-3")
    assert store.get("a").replayed_as == []  # type: ignore[union-attr]
    assert not store.client.hexists(keys.DEAD_LETTER_REPLAYS_KEY, "a")


def test_concurrent_links_lose_none(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    threads = [threading.Thread(target=store.link, args=("a", f"a-{i}")) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = store.get("a")
    assert got is not None
    assert sorted(got.replayed_as) == sorted(f"a-{i}" for i in range(30))


def test_pruning_a_letter_drops_its_links(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    store.link("a", "a-2")
    for request_id in ("b", "c", "d"):
        store.add(letter(request_id))
    assert not store.client.hexists(keys.DEAD_LETTER_REPLAYS_KEY, "a")


def test_links_recorded_inside_an_older_record_are_kept(store: DeadLetterStore) -> None:
    store.add(letter("a"))
    legacy = letter("a", replayed_as=["a-1"]).model_dump_json()
    store.client.set(keys.dead_letter_key("a"), legacy)
    store.link("a", "a-2")
    assert store.get("a").replayed_as == ["a-1", "a-2"]  # type: ignore[union-attr]

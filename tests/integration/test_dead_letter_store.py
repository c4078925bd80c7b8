"""The dead-letter store on the real Redis, with real workers: replay lineage, bounded letters, atomic pruning."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner

from producers import keys
from producers.envelope import task_envelope
from producers.state import ErrorInfo, Status
from tests.integration.conftest import Stack
from worker import cli
from worker.dead_letters import DeadLetter, DeadLetterStore
from worker.replay import NotReplayable, replay, replay_all
from worker.settings import WorkerSettings

TEN_MB = 10 * 1024 * 1024


def store_of(stack: Stack) -> DeadLetterStore:
    """The store as the worker and the `dlq` commands build it, from default settings."""
    return DeadLetterStore.from_settings(stack.redis, WorkerSettings(redis_url=stack.redis_url, queue=stack.queue))


def dlq(stack: Stack, *args: str) -> tuple[int, str]:
    """`trigger dlq ARGS` in this process, against the test's Redis and queue: (exit code, output)."""
    env = {"TRIGGER_REDIS_URL": stack.redis_url, "TRIGGER_QUEUE": stack.queue}
    result = CliRunner().invoke(cli.dlq, list(args), env=env)
    return result.exit_code, result.output


def eventually(condition: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def letter_ids(stack: Stack) -> set[str]:
    return {m.decode() for m in stack.redis.zrange(keys.DEAD_LETTERS_KEY, 0, -1)}


def test_replay_all_twice_with_a_worker_in_between_sends_nothing_the_second_time(stack: Stack) -> None:
    stack.start_worker()
    client, store = stack.client, store_of(stack)
    sent = [client.trigger("training_pipeline", steps={"train_model": {"n_estimators": "many"}}) for _ in range(3)]
    sent += [client.trigger("unregistered_pipeline") for _ in range(3)]
    assert all(state.status is Status.REJECTED for state in stack.wait_all(sent).values())
    originals = set(sent) | set(stack.probes)  # readiness probes are rejected requests too
    assert eventually(lambda: letter_ids(stack) == originals), stack.logs()

    first = replay_all(client, store)
    assert {old for old, _ in first} == originals
    replayed = stack.wait_all([new for _, new in first])
    assert all(s.status is Status.REJECTED and s.replay_of in originals for s in replayed.values()), stack.logs()
    assert eventually(lambda: store.count() == 2 * len(originals)), stack.logs()

    assert replay_all(client, store) == []
    code, output = dlq(stack, "replay", "--all")
    assert code == 0 and " -> " not in output and "nothing to replay" in output
    time.sleep(1.0)  # nothing was enqueued, so nothing can still be on its way
    assert stack.redis.llen(stack.queue) == 0
    assert store.count() == 2 * len(originals)
    assert all(len(store.get(old).replayed_as) == 1 for old in originals)  # type: ignore[union-attr]


def test_a_10_mb_item_ends_as_a_small_letter_that_records_its_size_and_digest(stack: Stack) -> None:
    worker = stack.start_worker()
    store = store_of(stack)
    garbage = b"not a task message " + b"x" * TEN_MB
    request = '{"pipeline_name": "training_pipeline", "parameters": {"blob": "' + "y" * TEN_MB + '"}}'
    envelope = task_envelope(keys.TASK_NAME, "big-request", [request], stack.queue)
    before = letter_ids(stack)

    stack.redis.lpush(stack.queue, garbage)
    stack.redis.lpush(stack.queue, envelope)

    assert eventually(lambda: len(letter_ids(stack) - before) == 2, timeout=120), stack.logs()
    assert worker.poll() is None
    new = sorted(letter_ids(stack) - before)
    for request_id in new:
        assert stack.redis.strlen(keys.dead_letter_key(request_id)) < 20_000
        assert stack.redis.memory_usage(keys.dead_letter_key(request_id)) < 100_000
        assert stack.client.status(request_id).status is Status.REJECTED
    letters = [letter for letter in (store.get(request_id) for request_id in new) if letter is not None]
    recorded = {letter.payload_size: (letter.payload_sha256, letter.payload_truncated) for letter in letters}
    assert recorded.get(len(garbage)) == (digest(garbage), True), recorded
    # An oversized envelope is recorded as the item the transport popped, or as the request it carried.
    whole = {len(envelope): digest(envelope.encode()), len(request): digest(request.encode())}
    assert any(recorded.get(size) == (sha, True) for size, sha in whole.items()), recorded
    assert store.total_bytes() < 200_000


def test_a_truncated_letter_is_refused_by_replay_and_by_the_command(stack: Stack) -> None:
    store = store_of(stack)
    text = "z" * (TEN_MB // 10)
    store.add(
        DeadLetter(
            request_id="too-big",
            status="rejected",
            reason="too large",
            error=ErrorInfo(type="PayloadTooLarge", message="too large"),
            attempts=1,
            raw_payload=text,
        )
    )
    letter = store.get("too-big")
    assert letter is not None and letter.payload_truncated and letter.payload_size == len(text)
    with pytest.raises(NotReplayable, match="cannot be replayed"):
        replay(letter, stack.client, store)
    code, output = dlq(stack, "replay", "too-big")
    assert code == 1 and output.count("\n") == 1 and "cannot be replayed" in output
    assert stack.redis.llen(stack.queue) == 0


def storm(redis_url: str, name: str, count: int, max_size: int, max_bytes: int) -> None:
    """One writer with its own connection adding `count` letters as fast as it can."""
    store = DeadLetterStore(redis.Redis.from_url(redis_url), max_size, 3600, max_bytes=max_bytes)
    for i in range(count):
        store.add(
            DeadLetter(
                request_id=f"{name}-{i}",
                status="rejected",
                reason="storm",
                error=ErrorInfo(type="UnknownPipeline", message="storm"),
                attempts=1,
                raw_payload='{"pipeline_name": "nope"}' + " " * (i % 50),
            )
        )


def run_storm(redis_url: str, writers: int, max_size: int, max_bytes: int = 10**9) -> None:
    bounds = (max_size, max_bytes)
    threads = [threading.Thread(target=storm, args=(redis_url, f"w{n}", 150, *bounds)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def stored_bytes(client: redis.Redis) -> int:
    ids = [m.decode() for m in client.zrange(keys.DEAD_LETTERS_KEY, 0, -1)]
    return sum(client.strlen(keys.dead_letter_key(i)) for i in ids)


def test_concurrent_writers_prune_to_exactly_the_count_bound(redis_url: str) -> None:
    run_storm(redis_url, writers=4, max_size=40)
    client = redis.Redis.from_url(redis_url)
    store = DeadLetterStore(client, max_size=40, max_age=3600)
    assert store.count() == 40
    assert len(store.list()) == 40
    assert store.total_bytes() == stored_bytes(client)
    assert client.hlen(keys.DEAD_LETTER_SIZES_KEY) == 40


def test_concurrent_writers_stay_under_the_byte_cap(redis_url: str) -> None:
    cap = 20_000
    run_storm(redis_url, writers=4, max_size=10_000, max_bytes=cap)
    client = redis.Redis.from_url(redis_url)
    store = DeadLetterStore(client, max_size=10_000, max_age=3600, max_bytes=cap)
    total = store.total_bytes()
    assert total == stored_bytes(client)
    assert cap - 1_000 < total <= cap  # the oldest went, only as many as needed
    held = store.count()
    assert store.purge() == held > 0
    assert store.total_bytes() == 0 and not client.exists(keys.DEAD_LETTER_SIZES_KEY)

"""Cluster-wide figures read from Redis (`producers.stats`), as the workers keep them."""

from __future__ import annotations

import time

import fakeredis

from producers import keys
from producers.envelope import task_envelope
from producers.stats import NEXT_RETRIES, ClusterStats, outcome_field, parse_outcomes, pipeline_label, read_stats
from worker.lease import Leases


def test_every_figure_is_read_from_the_key_the_workers_keep(fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.lpush("q", "m1", "m2")
    fake_redis.zadd(keys.waiting_key("q"), {"a": 1, "b": 2, "c": 3})
    fake_redis.zadd(keys.retry_schedule_key("q"), {"later": 2000.0, "sooner": 1500.0})
    fake_redis.zadd(keys.DEAD_LETTERS_KEY, {"d1": 1})
    fake_redis.set(keys.DEAD_LETTER_BYTES_KEY, 812)
    fake_redis.hset(keys.outcome_counts_key("q"), outcome_field("training_pipeline", "succeeded"), 4)
    fake_redis.hset(keys.outcome_counts_key("other-queue"), outcome_field("training_pipeline", "failed"), 9)
    stats = read_stats(fake_redis, "q", clock=lambda: 1000.0)
    assert stats == ClusterStats(
        queue="q",
        read_at=1000.0,
        queue_depth=2,
        waiting=3,
        retry_scheduled=2,
        next_retry_at=1500.0,
        dead_letters=1,
        dead_letter_bytes=812,
        leases_held=0,
        outcomes={"training_pipeline": {"succeeded": 4}},
        depth_by_priority={0: 2},
        next_retries=[("?", 1500.0), ("?", 2000.0)],  # members that are no task envelope still count
    )


def test_an_empty_redis_reads_as_zeros(fake_redis: fakeredis.FakeRedis) -> None:
    stats = read_stats(fake_redis, "q")
    assert (stats.queue_depth, stats.retry_scheduled, stats.next_retry_at, stats.dead_letter_bytes) == (0, 0, None, 0)
    assert stats.outcomes == {} and stats.totals() == {}


def test_leases_are_counted_while_held_and_not_once_released_or_expired(fake_redis: fakeredis.FakeRedis) -> None:
    now = time.time()
    leases = Leases(fake_redis, timeout=30, interval=5, clock=lambda: now)
    assert leases.acquire("r1") and leases.acquire("r2")
    assert read_stats(fake_redis, "q", clock=lambda: now).leases_held == 2
    leases.release("r1")
    assert read_stats(fake_redis, "q", clock=lambda: now).leases_held == 1
    assert read_stats(fake_redis, "q", clock=lambda: now + 31).leases_held == 0  # r2's holder stopped beating


def test_a_heartbeat_keeps_the_lease_counted(fake_redis: fakeredis.FakeRedis) -> None:
    moments = iter([1000.0, 1025.0])
    leases = Leases(fake_redis, timeout=30, interval=5, clock=lambda: next(moments))
    leases.acquire("r1")
    leases.refresh("r1", None)
    assert read_stats(fake_redis, "q", clock=lambda: 1040.0).leases_held == 1


def test_a_lease_another_holder_took_over_stays_counted_when_the_first_releases(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    first, second = (Leases(fake_redis, timeout=30, interval=5) for _ in range(2))
    first.acquire("r1")
    fake_redis.delete(keys.lease_key("r1"))  # expired
    second.acquire("r1")
    first.release("r1")
    assert read_stats(fake_redis, "q").leases_held == 1


def test_outcome_fields_keep_pipelines_with_colons_and_unregistered_names_bounded() -> None:
    raw = {b"succeeded:ns:train": b"2", b"failed:ns:train": b"1", b"rejected:other": b"5"}
    assert parse_outcomes(raw) == {"ns:train": {"failed": 1, "succeeded": 2}, "other": {"rejected": 5}}
    assert pipeline_label("train", {"train"}) == "train"
    assert pipeline_label("typo", {"train"}) == "other" and pipeline_label(None, {"train"}) == "other"


def test_totals_add_up_the_pipelines() -> None:
    stats = read_stats(fakeredis.FakeRedis(), "q")
    stats = ClusterStats(**{**stats.__dict__, "outcomes": {"a": {"failed": 1, "succeeded": 2}, "b": {"succeeded": 3}}})
    assert stats.totals() == {"failed": 1, "succeeded": 5}
    assert stats.as_dict()["totals"] == {"failed": 1, "succeeded": 5}


def test_the_depth_counts_kombus_priority_lists_and_says_which(fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.lpush("q", "m1")
    fake_redis.lpush("q\x06\x163", "m2", "m3")
    fake_redis.lpush("q\x06\x169", "m4")
    fake_redis.lpush("q-other\x06\x169", "not ours")
    stats = read_stats(fake_redis, "q")
    assert stats.queue_depth == 4 and stats.depth_by_priority == {0: 1, 3: 2, 9: 1}


def test_the_soonest_retries_are_named_by_request_and_overdue_ones_counted(fake_redis: fakeredis.FakeRedis) -> None:
    due = {task_envelope(keys.TASK_NAME, f"r{n}", ["{}"], "q"): 1000.0 + 10 * n for n in range(8)}
    fake_redis.zadd(keys.retry_schedule_key("q"), due)
    stats = read_stats(fake_redis, "q", clock=lambda: 1025.0)
    assert stats.retry_scheduled == 8 and stats.retry_overdue == 3  # r0, r1, r2 are due and not released
    assert stats.next_retries == [(f"r{n}", 1000.0 + 10 * n) for n in range(NEXT_RETRIES)]

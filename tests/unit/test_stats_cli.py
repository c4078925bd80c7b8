"""`trigger stats`: the readable block, --json, and --watch on a terminal and piped."""

from __future__ import annotations

import io
import json

import fakeredis
import pytest
from click.testing import CliRunner

from producers import keys, stats_cli
from producers.cli import cli
from producers.stats import ClusterStats
from producers.stats_cli import CLEAR, format_stats, watch

STATS = ClusterStats(
    queue="zenml-triggers",
    read_at=1796200000.0,
    queue_depth=12,
    waiting=14,
    retry_scheduled=3,
    next_retry_at=1796200028.0,
    dead_letters=41,
    dead_letter_bytes=186_000,
    leases_held=2,
    outcomes={"other": {"rejected": 2}, "training_pipeline": {"rejected": 3, "succeeded": 41}},
)


def test_the_block_shows_every_figure_and_a_table_of_outcomes() -> None:
    assert format_stats(STATS).splitlines() == [
        "queue zenml-triggers at 2026-12-02 08:26:40 UTC",
        "  queue depth        12",
        "  waiting            14 (enqueued, not taken on by a worker yet)",
        "  retry scheduled    3 (next due 2026-12-02 08:27:08 UTC, in 28s)",
        "  dead letters       41 (181.6 KiB)",
        "  leases held        2 (requests running now, all queues)",
        "requests ended, by pipeline and status:",
        "  pipeline           rejected  succeeded",
        "  other                     2          0",
        "  training_pipeline         3         41",
        "  total                     5         41",
    ]


def test_priority_lists_overdue_and_soonest_retries_are_shown_when_there_are_some() -> None:
    busy = ClusterStats(
        **{
            **STATS.__dict__,
            "depth_by_priority": {0: 10, 9: 2},
            "retry_overdue": 1,
            "next_retries": [("r0", 1796199990.0), ("r1", 1796200028.0)],
        }
    )
    lines = format_stats(busy).splitlines()
    assert lines[1] == "  queue depth        12 (by priority: 0: 10, 9: 2)"
    assert lines[4:7] == [
        "    1 overdue (due, not released yet: is a worker running?)",
        "    r0  due 2026-12-02 08:26:30 UTC (10s ago)",
        "    r1  due 2026-12-02 08:27:08 UTC (in 28s)",
    ]


def test_nothing_ended_yet_says_so() -> None:
    empty = ClusterStats(**{**STATS.__dict__, "outcomes": {}, "next_retry_at": None})
    text = format_stats(empty)
    assert text.endswith("requests ended: none counted yet") and "next due" not in text


@pytest.fixture
def redis_for_cli(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    client = fakeredis.FakeRedis()
    monkeypatch.setattr(stats_cli, "connect", lambda settings: client)
    monkeypatch.setenv("TRIGGER_QUEUE", "q")
    return client


def test_json_prints_one_object_with_the_counts(redis_for_cli: fakeredis.FakeRedis) -> None:
    redis_for_cli.hset(keys.outcome_counts_key("q"), "succeeded:training_pipeline", 7)
    redis_for_cli.lpush("q", "m")
    result = CliRunner().invoke(cli, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["queue"] == "q" and printed["queue_depth"] == 1
    assert printed["outcomes"] == {"training_pipeline": {"succeeded": 7}} and printed["totals"] == {"succeeded": 7}


def test_watch_piped_as_json_prints_a_line_per_reading(redis_for_cli: fakeredis.FakeRedis) -> None:
    result = CliRunner().invoke(cli, ["stats", "--watch", "--json", "--interval", "0.1", "--count", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3 and all(json.loads(line)["queue"] == "q" for line in lines)
    assert CLEAR not in result.output


def test_watch_on_a_terminal_redraws_in_place_and_piped_appends() -> None:
    readings = iter([STATS, ClusterStats(**{**STATS.__dict__, "queue_depth": 0})])
    out, naps = io.StringIO(), []
    watch(lambda: [next(readings)], out, as_json=False, tty=True, interval=5, count=2, sleep=naps.append)
    assert out.getvalue().count(CLEAR) == 2 and naps == [5]
    assert "refreshing every 5s" in out.getvalue()
    piped = io.StringIO()
    watch(lambda: [STATS], piped, as_json=False, tty=False, interval=5, count=2, sleep=lambda _: None)
    assert CLEAR not in piped.getvalue() and piped.getvalue().count("queue zenml-triggers at") == 2
    assert "\n\nqueue zenml-triggers" in piped.getvalue()


def test_each_queue_asked_for_gets_its_block_or_its_json_line(redis_for_cli: fakeredis.FakeRedis) -> None:
    redis_for_cli.lpush("q-a", "m1", "m2")
    redis_for_cli.lpush("q-b\x06\x169", "m3")
    result = CliRunner().invoke(cli, ["stats", "--json", "--queue", "q-a", "--queue", "q-b"])
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.output.splitlines()]
    assert [(p["queue"], p["queue_depth"]) for p in printed] == [("q-a", 2), ("q-b", 1)]
    readable = CliRunner().invoke(cli, ["stats", "--queue", "q-a", "--queue", "q-b"]).output
    assert "  queue depth        2\n" in readable and "  queue depth        1 (by priority: 9: 1)\n" in readable
    assert readable.index("queue q-a at") < readable.index("\n\nqueue q-b at")

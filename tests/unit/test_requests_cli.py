"""`trigger requests list` and `trigger requests show`: the table, --json, filters and their errors."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
from click.testing import CliRunner

from producers import ProducerSettings, TriggerClient, keys
from producers.cli import cli
from producers.requests_cli import format_table, parse_since
from producers.state import RequestState, Status


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis) -> TriggerClient:
    monkeypatch.setattr("producers.client.connect", lambda settings: fake_redis)
    return TriggerClient(fake_redis, ProducerSettings())


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["requests", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_table_lists_newest_first_with_every_column(client: TriggerClient) -> None:
    client.trigger("training_pipeline", request_id="first", source="cli")
    client.trigger(template="nightly", request_id="second", source="schedule:nightly")
    due = datetime(2026, 12, 2, 9, 30, tzinfo=timezone.utc)
    client.states.put(client.status("first").advance(Status.RETRYING, attempts=1, next_attempt_at=due))
    code, out, _ = invoke("list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "STATUS", "PIPELINE", "SOURCE", "CREATED", "ATTEMPTS", "NEXT", "ATTEMPT"]
    assert rows[0].split()[:4] == ["second", "queued", "template:nightly", "schedule:nightly"]
    assert rows[0].split()[-2:] == ["0", "-"]
    assert rows[1].split()[:4] == ["first", "retrying", "training_pipeline", "cli"]
    assert rows[1].endswith("1         2026-12-02 09:30:00")


def test_json_prints_the_objects_trigger_status_prints(client: TriggerClient) -> None:
    client.trigger("training_pipeline", request_id="a", source="gateway")
    client.trigger("training_pipeline", request_id="b", source="cli")
    code, out, _ = invoke("list", "--json", "--source", "gateway")
    assert code == 0
    assert json.loads(out) == [client.status("a").public_dict()]
    status = CliRunner().invoke(cli, ["status", "a", "--json"])
    assert json.loads(out)[0] == json.loads(status.output)


def test_filters_combine_and_status_repeats(client: TriggerClient, fake_redis: fakeredis.FakeRedis) -> None:
    for name in ("a", "b", "c"):
        client.trigger("training_pipeline", request_id=name)
    client.states.put(client.status("a").advance(Status.FAILED))
    client.states.put(client.status("b").advance(Status.SUCCEEDED))
    fake_redis.zadd(keys.REQUESTS_INDEX_KEY, {"a": time.time() - 7200})
    _, out, _ = invoke("list", "--status", "failed", "--status", "succeeded", "--json")
    assert [s["request_id"] for s in json.loads(out)] == ["b", "a"]
    _, out, _ = invoke("list", "--status", "failed", "--status", "succeeded", "--since", "1h", "--json")
    assert [s["request_id"] for s in json.loads(out)] == ["b"]
    _, out, _ = invoke("list", "--pipeline", "training_pipeline", "--limit", "1", "--json")
    assert [s["request_id"] for s in json.loads(out)] == ["c"]


def test_nothing_matching_says_so_on_stderr_and_json_is_an_empty_list(client: TriggerClient) -> None:
    assert invoke("list") == (0, "", "no recorded request matches\n")
    assert invoke("list", "--json") == (0, "[]\n", "")


def test_an_unknown_status_lists_the_valid_ones(client: TriggerClient) -> None:
    code, _, err = invoke("list", "--status", "finished")
    assert code == 2
    assert "Invalid value for '--status': 'finished' is not one of" in err
    assert all(f"'{status.value}'" in err for status in Status)


@pytest.mark.parametrize("value", ["2x", "ten minutes", "-1h", "2026-13-01", ""])
def test_a_bad_since_names_the_option_and_the_forms_it_takes(client: TriggerClient, value: str) -> None:
    code, _, err = invoke("list", "--since", value)
    assert code == 2
    assert f"Invalid value for '--since': {value!r} is neither a duration (30s, 10m, 2h, 1d, 1w) nor an ISO time" in err


def test_a_bad_limit_names_the_option(client: TriggerClient) -> None:
    code, _, err = invoke("list", "--limit", "0")
    assert code == 2 and "Invalid value for '--limit'" in err


def test_since_reads_durations_and_iso_times() -> None:
    assert parse_since("30s") == timedelta(seconds=30)
    assert parse_since("10m") == timedelta(minutes=10)
    assert parse_since("1.5H") == timedelta(hours=1.5)
    assert parse_since("2d") == timedelta(days=2)
    assert parse_since("1w") == timedelta(weeks=1)
    assert parse_since("2026-12-01T09:00:00Z") == datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    assert parse_since("2026-12-01T10:00:00+01:00") == datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    assert parse_since("2026-12-01") == datetime(2026, 12, 1)


def test_show_is_status(client: TriggerClient) -> None:
    client.trigger("training_pipeline", request_id="shown")
    code, out, _ = invoke("show", "shown")
    assert code == 0 and out.startswith("shown: queued\n  pipeline: training_pipeline")
    assert json.loads(invoke("show", "shown", "--json")[1]) == client.status("shown").public_dict()
    code, _, err = invoke("show", "unknown-id")
    assert code == 1 and err == "Error: no request with id 'unknown-id' is known (never sent, or expired)\n"


def test_a_malformed_id_of_the_worker_fits_the_table() -> None:
    long_id = "malformed-" + "0" * 32
    table = format_table([RequestState(request_id=long_id, status=Status.REJECTED, source="unknown")])
    header, row = table.splitlines()
    assert row.startswith(long_id + "  rejected") and header.index("STATUS") == row.index("rejected")

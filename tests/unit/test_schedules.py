"""Schedules: the file's checks, slots and their idempotency keys, fire times, and what a firing enqueues."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner

from producers.cli import cli
from producers.client import TriggerClient
from producers.keys import state_key
from producers.schedules import (
    Cron,
    Schedule,
    ScheduleFileError,
    fire,
    load_schedules,
    next_fire_times,
    slot_key,
    slot_time,
)
from producers.settings import ProducerSettings
from producers.state import Status
from tests.support.catalog import MINIMAL_CATALOG

UTC = timezone.utc


def at(text: str) -> datetime:
    """An aware instant from `2026-03-08T06:59:00Z`-style text."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedules.yaml"
    path.write_text(text)
    return path


def queued_payloads(client: fakeredis.FakeRedis, queue: str = "zenml-triggers") -> list[dict[str, Any]]:
    payloads = []
    for item in reversed(client.lrange(queue, 0, -1)):  # LPUSH: oldest last
        args, _, _ = json.loads(base64.b64decode(json.loads(item)["body"]))
        payloads.append(json.loads(args[0]))
    return payloads


class TestFile:
    def test_a_valid_file_loads_with_defaults(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            "- name: nightly\n  cron: '0 2 * * *'\n  pipeline: training_pipeline\n"
            "  steps: {train_model: {n_estimators: 10}}\n"
            "- name: quarter\n  every: 15m\n  template: nightly@2\n  timezone: Europe/Berlin\n  enabled: false\n",
        )
        nightly, quarter = load_schedules(path)
        assert (nightly.timezone, nightly.enabled, nightly.steps) == (
            "UTC",
            True,
            {"train_model": {"n_estimators": 10}},
        )
        assert (quarter.every, quarter.template, quarter.enabled) == (900, "nightly@2", False)

    @pytest.mark.parametrize(
        ("entry", "expected"),
        [
            ("cron: '61 * * * *'\n  pipeline: p", "schedule 'x': cron: minute '61'"),
            ("cron: '* * * *'\n  pipeline: p", "schedule 'x': cron: '* * * *' has 4 fields"),
            ("cron: '0 0 31 2 *'\n  pipeline: p", "names no day that exists"),
            ("cron: '0 0 1 * mon'\n  pipeline: p", "day of month or the day of week, not both"),
            ("every: 10\n  timezone: Mars/Base\n  pipeline: p", "schedule 'x': timezone: unknown timezone 'Mars/Base'"),
            ("every: 10\n  pipeline: p\n  template: t", "schedule 'x': (schedule): give exactly one of pipeline or"),
            ("every: 10", "give exactly one of pipeline or template"),
            ("pipeline: p", "give exactly one of cron or every"),
            ("every: 10\n  cron: '* * * * *'\n  pipeline: p", "give exactly one of cron or every"),
            ("every: 0.5\n  pipeline: p", "schedule 'x': every: 0.5: expected whole seconds"),
            ("every: soon\n  pipeline: p", "schedule 'x': every: 'soon'"),
            ("every: 10\n  pipeline: p\n  colour: red", "schedule 'x': colour: Extra inputs"),
            ("every: 10\n  pipeline: p\n  steps: {train: 3}", "schedule 'x': steps.train"),
        ],
    )
    def test_a_bad_schedule_is_named_with_its_field(self, tmp_path: Path, entry: str, expected: str) -> None:
        with pytest.raises(ScheduleFileError) as caught:
            load_schedules(write(tmp_path, f"- name: x\n  {entry}\n"))
        assert expected in str(caught.value)

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        path = write(tmp_path, "- name: a\n  cron: '61 * * * *'\n  pipeline: p\n- name: b\n  every: 1h\n")
        with pytest.raises(ScheduleFileError) as caught:
            load_schedules(path)
        message = str(caught.value)
        assert "schedule 'a': cron" in message and "schedule 'b': (schedule)" in message

    def test_duplicate_names_are_refused(self, tmp_path: Path) -> None:
        path = write(tmp_path, "- {name: a, every: 60, pipeline: p}\n- {name: a, every: 120, pipeline: q}\n")
        with pytest.raises(ScheduleFileError, match="schedule 'a': name: listed more than once"):
            load_schedules(path)

    @pytest.mark.parametrize(("text", "expected"), [("{}", "expected a list"), ("- [1\n", "not valid YAML at line")])
    def test_a_file_that_is_not_a_list_of_schedules(self, tmp_path: Path, text: str, expected: str) -> None:
        with pytest.raises(ScheduleFileError, match=expected):
            load_schedules(write(tmp_path, text))

    def test_a_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ScheduleFileError, match="cannot be read"):
            load_schedules(tmp_path / "nope.yaml")


class TestCron:
    def test_names_ranges_steps_and_sunday_as_seven(self) -> None:
        cron = Cron.parse("*/20 9-17/4 * jan,jul mon-fri,7")
        assert cron.minutes == {0, 20, 40}
        assert cron.hours == {9, 13, 17}
        assert cron.months == {1, 7}
        assert cron.weekdays == {0, 1, 2, 3, 4, 5}

    def test_a_start_with_a_step_runs_to_the_end_of_the_field(self) -> None:
        assert Cron.parse("50/5 * * * *").minutes == {50, 55}


class TestSlots:
    def test_an_interval_slot_is_now_floored_to_the_interval(self) -> None:
        every = Schedule(name="q", every="15m", pipeline="p")
        assert slot_time(every, at("2026-11-26T10:44:59Z")) == at("2026-11-26T10:30:00Z")
        assert slot_time(every, at("2026-11-26T10:45:00Z")) == at("2026-11-26T10:45:00Z")

    def test_interval_slots_do_not_move_with_dst_or_timezone(self) -> None:
        """Slots count from the Unix epoch; the schedule's timezone does not shift them."""
        utc = Schedule(name="h", every="1h", pipeline="p")
        new_york = Schedule(name="h", every="1h", pipeline="p", timezone="America/New_York")
        for now in (at("2026-03-08T06:59:59Z"), at("2026-03-08T07:00:01Z")):  # around the spring-forward jump
            assert slot_time(new_york, now) == slot_time(utc, now) == now.replace(minute=0, second=0)

    def test_a_cron_slot_is_the_minute_it_was_due_even_when_fired_late(self) -> None:
        nightly = Schedule(name="n", cron="0 2 * * *", pipeline="p", timezone="Europe/Berlin")
        # 02:00 in Berlin (CET, +01:00) is 01:00 UTC; a firing 40 seconds or hours late names that slot
        assert slot_time(nightly, at("2026-11-26T01:00:40Z")) == at("2026-11-26T01:00:00Z")
        assert slot_time(nightly, at("2026-11-26T23:59:00Z")) == at("2026-11-26T01:00:00Z")
        assert slot_time(nightly, at("2026-11-26T00:59:59Z")) == at("2026-11-25T01:00:00Z")

    def test_a_cron_slot_follows_the_timezones_utc_offset_across_dst(self) -> None:
        nightly = Schedule(name="n", cron="0 2 * * *", pipeline="p", timezone="Europe/Berlin")
        assert slot_time(nightly, at("2026-07-01T12:00:00Z")) == at("2026-07-01T00:00:00Z")  # CEST, +02:00
        assert slot_time(nightly, at("2026-01-01T12:00:00Z")) == at("2026-01-01T01:00:00Z")  # CET, +01:00

    def test_a_repeated_wall_time_is_one_slot(self) -> None:
        """On the fall-back night 01:30 happens twice in New York; a firing at either names the first."""
        schedule = Schedule(name="n", cron="30 1 * * *", pipeline="p", timezone="America/New_York")
        first, second = at("2026-11-01T05:30:00Z"), at("2026-11-01T06:30:00Z")  # 01:30 EDT, 01:30 EST
        assert slot_time(schedule, first) == slot_time(schedule, second) == first

    def test_the_idempotency_key_names_the_schedule_and_the_slot_in_utc(self) -> None:
        nightly = Schedule(name="nightly", cron="0 2 * * *", pipeline="p", timezone="Europe/Berlin")
        slot = slot_time(nightly, at("2026-11-26T01:00:07Z"))
        assert slot_key(nightly, slot) == "schedule:nightly:2026-11-26T01:00:00Z"


class TestNextFireTimes:
    def test_cron_in_a_timezone(self) -> None:
        nightly = Schedule(name="n", cron="0 2 * * *", pipeline="p", timezone="Europe/Berlin")
        times = next_fire_times(nightly, at("2026-03-27T12:00:00Z"))
        # Berlin moves to summer time on 2026-03-29: 02:00 local that night does not exist and fires at 03:00
        assert times == [at("2026-03-28T01:00:00Z"), at("2026-03-29T01:00:00Z"), at("2026-03-30T00:00:00Z")]

    def test_next_times_are_strictly_after_now(self) -> None:
        hourly = Schedule(name="h", cron="0 * * * *", pipeline="p")
        assert next_fire_times(hourly, at("2026-11-26T10:00:00Z"), 2) == [
            at("2026-11-26T11:00:00Z"),
            at("2026-11-26T12:00:00Z"),
        ]

    def test_a_weekday_crontab_skips_the_weekend(self) -> None:
        weekdays = Schedule(name="w", cron="30 9 * * mon-fri", pipeline="p")
        times = next_fire_times(weekdays, at("2026-11-27T10:00:00Z"))  # a Friday, after 09:30
        assert [t.date().isoformat() for t in times] == ["2026-11-30", "2026-12-01", "2026-12-02"]

    def test_interval(self) -> None:
        every = Schedule(name="q", every=90, pipeline="p")
        now = at("2026-11-26T10:00:10Z")  # epoch multiples of 90 s fall on 10:00:00, 10:01:30, …
        assert next_fire_times(every, now) == [now + timedelta(seconds=s) for s in (80, 170, 260)]


class TestFiring:
    def test_a_firing_enqueues_an_ordinary_request_keyed_by_its_slot(self, fake_redis: fakeredis.FakeRedis) -> None:
        client = TriggerClient(fake_redis, ProducerSettings())
        schedule = Schedule(
            name="nightly", every=60, pipeline="training_pipeline", steps={"train_model": {"n_estimators": 10}}
        )
        request = fire(client, schedule, at("2026-11-26T10:00:30Z"))
        [payload] = queued_payloads(fake_redis)
        assert payload["request_id"] == request.request_id
        assert payload["pipeline_name"] == "training_pipeline"
        assert payload["steps"] == {"train_model": {"parameters": {"n_estimators": 10}}}
        assert payload["source"] == "schedule:nightly"
        assert payload["idempotency_key"] == "schedule:nightly:2026-11-26T10:00:00Z"
        assert client.status(request.request_id).status.value == "queued"

    def test_two_firings_in_one_slot_share_one_idempotency_key(self, fake_redis: fakeredis.FakeRedis) -> None:
        """Two beats (or a restart) firing inside one slot: two messages, one key, so the worker runs one."""
        client = TriggerClient(fake_redis, ProducerSettings())
        schedule = Schedule(name="t", template="nightly@2", every=60)
        for now in ("2026-11-26T10:00:00.2Z", "2026-11-26T10:00:59Z", "2026-11-26T10:01:00Z"):
            fire(client, schedule, at(now))
        payloads = queued_payloads(fake_redis)
        keys = [payload["idempotency_key"] for payload in payloads]
        assert keys == ["schedule:t:2026-11-26T10:00:00Z"] * 2 + ["schedule:t:2026-11-26T10:01:00Z"]
        ids = [payload["request_id"] for payload in payloads]
        assert ids[0] == ids[1] != ids[2]

    def test_a_second_firing_of_a_slot_keeps_the_recorded_outcome(self, fake_redis: fakeredis.FakeRedis) -> None:
        """A copy of a slot whose run already ended (here: failed) does not reset its state to queued."""
        client = TriggerClient(fake_redis, ProducerSettings())
        schedule = Schedule(name="t", pipeline="p", every=60)
        first = fire(client, schedule, at("2026-11-26T10:00:01Z"))
        failed = client.status(first.request_id).model_copy(update={"status": Status.FAILED})
        fake_redis.set(state_key(first.request_id), failed.to_json())
        again = fire(client, schedule, at("2026-11-26T10:00:30Z"))
        assert again.request_id == first.request_id
        assert client.status(first.request_id).status is Status.FAILED


class TestStartChecks:
    def test_a_schedule_the_catalog_rejects_stops_beat(self, tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
        from worker.beat import checked_schedules

        fake_redis.set("zenml-trigger:catalog:zenml-triggers", json.dumps(MINIMAL_CATALOG))
        path = write(
            tmp_path,
            "- {name: ok, every: 60, pipeline: p, parameters: {n: 1}}\n"
            "- {name: bad, every: 60, pipeline: p, parameters: {n: x}}\n",
        )
        settings = ProducerSettings(schedules_file=path)
        with pytest.raises(ScheduleFileError, match=r"schedule 'bad': parameters\.n") as caught:
            checked_schedules(settings, TriggerClient(fake_redis, settings))
        assert "'ok'" not in str(caught.value)

    def test_a_missing_catalog_only_skips_the_check(self, tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
        from worker.beat import checked_schedules

        settings = ProducerSettings(schedules_file=write(tmp_path, "- {name: s, every: 60, pipeline: nope}\n"))
        [schedule] = checked_schedules(settings, TriggerClient(fake_redis, settings))
        assert schedule.pipeline == "nope"


class TestBeatSchedule:
    def test_entries_use_celerys_schedules_in_the_schedules_timezone(self) -> None:
        from worker.beat import AlignedInterval, ZonedCrontab, beat_schedule

        schedules = [
            Schedule(name="tokyo", cron="0 9 * * *", pipeline="p", timezone="Asia/Tokyo"),
            Schedule(name="q", every=60, pipeline="p"),
            Schedule(name="off", every=60, pipeline="p", enabled=False),
        ]
        entries = beat_schedule(schedules)
        assert sorted(entries) == ["q", "tokyo"]
        tokyo = entries["tokyo"]["schedule"]
        assert isinstance(tokyo, ZonedCrontab) and isinstance(entries["q"]["schedule"], AlignedInterval)
        tokyo.nowfun = lambda: at("2026-11-26T23:59:30Z")  # 08:59:30 in Tokyo
        assert tokyo.remaining_estimate(at("2026-11-26T23:59:30Z")) == timedelta(seconds=30)

    def test_an_aligned_interval_is_due_once_per_slot(self) -> None:
        from worker.beat import AlignedInterval

        interval = AlignedInterval(60)
        interval.nowfun = lambda: at("2026-11-26T10:01:10Z")
        assert tuple(interval.is_due(at("2026-11-26T10:00:59Z"))) == (True, 50)
        assert tuple(interval.is_due(at("2026-11-26T10:01:00Z"))) == (False, 50)


class TestListCommand:
    def test_list_json_shows_next_times_in_local_and_utc(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            "- {name: n, cron: '0 2 * * *', timezone: Europe/Berlin, pipeline: p}\n"
            "- {name: paused, every: 60, pipeline: p, enabled: false}\n",
        )
        result = CliRunner().invoke(cli, ["schedules", "list", "--json"], env={"TRIGGER_SCHEDULES_FILE": str(path)})
        assert result.exit_code == 0, result.output
        nightly, paused = json.loads(result.output)
        assert len(nightly["next"]) == 3 and nightly["enabled"] is True
        first = nightly["next"][0]
        assert first["local"][11:19] == "02:00:00" and first["local"][19:] in ("+01:00", "+02:00")
        assert at(first["utc"]) == datetime.fromisoformat(first["local"])
        assert (paused["enabled"], paused["next"]) == (False, [])

    def test_a_bad_file_is_one_line_and_exit_1(self, tmp_path: Path) -> None:
        path = write(tmp_path, "- {name: n, cron: 'nope', pipeline: p}\n")
        result = CliRunner().invoke(cli, ["schedules", "list", "--file", str(path)])
        assert result.exit_code == 1
        assert "schedule 'n': cron" in result.output and "Traceback" not in result.output

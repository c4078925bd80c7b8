"""Schedules: trigger requests enqueued on a clock, read from a YAML file (`TRIGGER_SCHEDULES_FILE`).

This module is the schedule's model and arithmetic, with no Celery and no ZenML, so the
file can be checked and its next fire times listed anywhere. `worker.beat` runs it under
Celery beat. A firing enqueues an ordinary trigger request whose idempotency key names the
schedule and its *slot* (the fire time it stands for), so two beat processes, or a beat
restarted within a slot, produce one run per slot: the worker deduplicates by that key.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from producers.catalog import CatalogCheck
from producers.contract import TriggerRequest, build_request
from producers.errors import TriggerError
from producers.yaml_file import read_yaml

UTC = timezone.utc
SCHEDULE_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
SEARCH_DAYS = 366 * 8
"""How far a cron search looks: a leap day that must also be a given weekday recurs within 28 years, but a
schedule that waits more than eight is a mistake worth refusing rather than a schedule."""

DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MONTH_NAMES = {name: i for i, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
WEEKDAY_NAMES = {name: i for i, name in enumerate("sun mon tue wed thu fri sat".split())}


class ScheduleFileError(ValueError):
    """The schedules file cannot be used; the message names the schedule and the field."""


@dataclass(frozen=True)
class CronField:
    """One of a crontab's five fields: its text, the values allowed, and the names it accepts."""

    label: str
    low: int
    high: int
    names: dict[str, int]


CRON_FIELDS = (
    CronField("minute", 0, 59, {}),
    CronField("hour", 0, 23, {}),
    CronField("day of month", 1, 31, {}),
    CronField("month", 1, 12, MONTH_NAMES),
    CronField("day of week", 0, 7, WEEKDAY_NAMES),
)


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field crontab, read as Celery's `crontab` reads it: a day fires when its month, day of
    month and day of week all match. Classic cron ORs the two day fields when both are restricted, so a
    crontab restricting both is refused rather than read one way here and another way by the reader."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 is Sunday (7 is read as 0)."""

    @classmethod
    def parse(cls, text: str) -> Cron:
        """`*/15 9-17 * * mon-fri` into sets; `ValueError` naming the field that does not parse."""
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"{text!r} has {len(parts)} fields; a crontab has 5 (minute hour day month weekday)")
        values = [_expand(part, spec) for part, spec in zip(parts, CRON_FIELDS, strict=True)]
        weekdays = frozenset(day % 7 for day in values[4])
        if parts[2] != "*" and parts[4] != "*":
            raise ValueError("restrict the day of month or the day of week, not both (cron and Celery differ there)")
        cron = cls(*values[:4], weekdays)  # type: ignore[arg-type]
        if not any(day <= _longest_month(month) for month in cron.months for day in cron.days):
            raise ValueError(f"{text!r} names no day that exists")
        return cron

    def matches_date(self, day: date) -> bool:
        """Whether the crontab fires at some time on `day`."""
        return day.month in self.months and day.day in self.days and day.isoweekday() % 7 in self.weekdays

    def wall_times(self) -> list[tuple[int, int]]:
        """(hour, minute) pairs it fires at on a matching day, in order."""
        return [(hour, minute) for hour in sorted(self.hours) for minute in sorted(self.minutes)]


def _longest_month(month: int) -> int:
    return 29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31


def _expand(text: str, spec: CronField) -> frozenset[int]:
    """One field (`*`, `5`, `1-5`, `*/10`, `mon-fri`, `0,30`) into its values."""
    values: set[int] = set()
    for item in text.lower().split(","):
        values.update(_expand_item(item, spec, text))
    return frozenset(values)


def _expand_item(item: str, spec: CronField, text: str) -> range:
    span, slash, step_text = item.partition("/")
    step = _number(step_text, spec, text) if slash else 1
    if span == "*":
        low, high = spec.low, spec.high if spec.label != "day of week" else 6
    else:
        first, dash, last = span.partition("-")
        low = _number(first, spec, text)
        high = _number(last, spec, text) if dash else (spec.high if slash else low)
    if step < 1 or not spec.low <= low <= high <= spec.high:
        raise ValueError(f"{spec.label} {text!r}: {item!r} is outside {spec.low}-{spec.high} or reversed")
    return range(low, high + 1, step)


def _number(text: str, spec: CronField, field_text: str) -> int:
    if text in spec.names:
        return spec.names[text]
    if not text.isdigit():
        raise ValueError(f"{spec.label} {field_text!r}: {text!r} is not a number")
    return int(text)


def parse_every(value: Any) -> int:
    """`90`, `"45s"`, `"15m"`, `"1h"`, `"1d"` into whole seconds (at least one)."""
    if isinstance(value, bool):
        raise ValueError("expected seconds or a duration like 15m, 1h")
    if isinstance(value, (int, float)) and float(value).is_integer() and value >= 1:
        return int(value)
    match = DURATION.match(value) if isinstance(value, str) else None
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)] if match else 0
    if seconds < 1:
        raise ValueError(f"{value!r}: expected whole seconds (at least 1) or a duration like 30s, 15m, 1h, 1d")
    return seconds


class Schedule(BaseModel):
    """One entry of the schedules file: when (`cron` or `every`, in `timezone`) and what to trigger."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=SCHEDULE_NAME)
    cron: str | None = None
    every: int | None = None
    """Seconds; slots are aligned to the Unix epoch, so they do not move with DST (use `cron` for wall times)."""
    timezone: str = "UTC"
    pipeline: str | None = None
    template: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Step parameters, `{step: {param: value}}`, as `TriggerClient.trigger` takes them."""
    priority: int | None = Field(default=None, ge=0, le=9)
    """The requests' wire priority (`producers.priority`): 9 runs first, none (0) is routine."""
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is not None:
            Cron.parse(value)
        return value

    @field_validator("every", mode="before")
    @classmethod
    def _every_parses(cls, value: Any) -> int | None:
        return None if value is None else parse_every(value)

    @field_validator("timezone")
    @classmethod
    def _timezone_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (expected an IANA name such as Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _exactly_one_of_each(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron or every")
        if (self.pipeline is None) == (self.template is None):
            raise ValueError("give exactly one of pipeline or template")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's timezone."""
        return ZoneInfo(self.timezone)

    @property
    def crontab(self) -> Cron | None:
        """The parsed crontab of a cron schedule."""
        return Cron.parse(self.cron) if self.cron is not None else None


def _cron_candidates(cron: Cron, zone: ZoneInfo, days: Iterable[date]) -> Iterator[list[datetime]]:
    """For each matching day, its fire instants in UTC. A wall time skipped by a DST jump fires just after
    the jump (zoneinfo's reading with fold=0); a repeated wall time fires once, at its first occurrence."""
    for day in days:
        if cron.matches_date(day):
            yield [
                datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(UTC)
                for hour, minute in cron.wall_times()
            ]


def _days(start: date, step: int) -> Iterator[date]:
    return (start + timedelta(days=step * offset) for offset in range(SEARCH_DAYS))


def slot_time(schedule: Schedule, now: datetime) -> datetime:
    """The fire time (UTC) that a firing at `now` stands for.

    cron: the latest minute at or before `now` that the crontab names (in the schedule's
    timezone), so a beat that fires late still names the minute it was due; every: `now`
    floored to a multiple of the interval since the Unix epoch.
    """
    now = now.astimezone(UTC)
    if schedule.every is not None:
        return datetime.fromtimestamp(math.floor(now.timestamp() / schedule.every) * schedule.every, UTC)
    assert schedule.crontab is not None
    start = now.astimezone(schedule.zone).date() + timedelta(days=1)
    for instants in _cron_candidates(schedule.crontab, schedule.zone, _days(start, -1)):
        due = [instant for instant in instants if instant <= now]
        if due:
            return max(due)
    raise ValueError(f"schedule {schedule.name!r} never fired in the {SEARCH_DAYS} days before {now:%Y-%m-%d}")


def next_fire_times(schedule: Schedule, after: datetime, count: int = 3) -> list[datetime]:
    """The next `count` fire times (UTC) strictly after `after`."""
    after = after.astimezone(UTC)
    if schedule.every is not None:
        first = slot_time(schedule, after) + timedelta(seconds=schedule.every)
        return [first + timedelta(seconds=schedule.every * k) for k in range(count)]
    assert schedule.crontab is not None
    found: set[datetime] = set()
    enough = False
    start = after.astimezone(schedule.zone).date() - timedelta(days=1)
    for instants in _cron_candidates(schedule.crontab, schedule.zone, _days(start, 1)):
        found.update(instant for instant in instants if instant > after)
        if enough:  # one matching day past enough, so a DST shift cannot have left an earlier time out
            break
        enough = len(found) >= count
    return sorted(found)[:count]


def iso(instant: datetime) -> str:
    """`2026-11-26T02:00:00Z`: UTC to the second, one spelling per instant (DST cannot make two)."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slot_key(schedule: Schedule, slot: datetime) -> str:
    """The idempotency key of one slot: `schedule:<name>:<slot time ISO>`."""
    return f"schedule:{schedule.name}:{iso(slot)}"


def slot_request_id(key: str) -> str:
    """The request id of a slot, derived from its idempotency key.

    Every firing of one slot (a second beat, a restart) enqueues the same request id. The key
    alone lets the worker mark later copies `duplicate`, but it releases a key after a failed
    run so that a retry may claim it, and a copy queued behind that run would then run the slot
    again; with one id, a copy finds the request's recorded outcome and starts nothing.
    """
    return uuid.uuid5(uuid.NAMESPACE_URL, f"zenml-trigger:{key}").hex


def request_for(schedule: Schedule, now: datetime) -> TriggerRequest:
    """The trigger request a firing at `now` enqueues: an ordinary request keyed by its slot."""
    slot = slot_time(schedule, now)
    key = slot_key(schedule, slot)
    return build_request(
        request_id=slot_request_id(key),
        pipeline_name=schedule.pipeline,
        template=schedule.template,
        parameters=schedule.parameters,
        steps=schedule.steps,
        idempotency_key=key,
        source=f"schedule:{schedule.name}",
        metadata={"schedule": {"name": schedule.name, "slot": iso(slot)}},
        priority=schedule.priority,
    )


def fire(client: Any, schedule: Schedule, now: datetime) -> TriggerRequest:
    """Enqueue the schedule's request for the slot `now` falls in through `client` (a `TriggerClient`,
    or anything with its `send`); returns the request enqueued."""
    request = request_for(schedule, now)
    client.send(request)
    return request


def load_schedules(path: Path | str) -> list[Schedule]:
    """Read and check a schedules file; `ScheduleFileError` listing every problem, each with its schedule
    and field, so an operator fixes the file in one pass."""
    data = read_yaml(Path(path), "schedules file", ScheduleFileError)
    if not isinstance(data, list):
        raise ScheduleFileError(f"schedules file {path}: expected a list of schedules, got {type(data).__name__}")
    schedules, problems = [], []
    for index, entry in enumerate(data):
        try:
            schedules.append(Schedule.model_validate(entry))
        except ValidationError as exc:
            problems.extend(_problems(exc, entry, index))
    problems.extend(_repeated_names(data))
    problems.extend(invalid_request_problems(schedules, datetime.now(UTC)))
    if problems:
        raise ScheduleFileError(f"schedules file {path}: " + "; ".join(problems))
    return schedules


def _problems(exc: ValidationError, entry: Any, index: int) -> list[str]:
    name = entry.get("name") if isinstance(entry, dict) else None
    who = f"schedule {name!r}" if isinstance(name, str) else f"schedule #{index + 1}"
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(schedule)"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{who}: {where}: {message}")
    return lines


def _repeated_names(entries: list[Any]) -> list[str]:
    """Names given to more than one entry, whether or not those entries are otherwise valid."""
    names = [entry.get("name") for entry in entries if isinstance(entry, dict) and isinstance(entry.get("name"), str)]
    return [
        f"schedule {name!r}: name: listed more than once" for name in sorted({n for n in names if names.count(n) > 1})
    ]


def catalog_problems(check: Any, schedules: list[Schedule], now: datetime) -> tuple[list[str], list[str]]:
    """(problems, skipped notes) of checking each enabled schedule's request against the workers' catalog.

    `check` is `TriggerClient.check`. A schedule the catalog says is invalid would be rejected at every
    firing, so beat refuses to start with it; a missing catalog only skips the check.
    """
    problems, skipped = [], []
    for schedule in schedules:
        if not schedule.enabled:
            continue
        result: CatalogCheck = check(request_for(schedule, now))
        if result.skipped:
            skipped.append(f"schedule {schedule.name!r}: {result.skipped}")
        problems.extend(f"schedule {schedule.name!r}: {problem.path}: {problem.problem}" for problem in result.problems)
    return problems, skipped


def invalid_request_problems(schedules: list[Schedule], now: datetime) -> list[str]:
    """Schedules whose request cannot even be built (a bad step parameter shape, an over-long name)."""
    problems = []
    for schedule in schedules:
        try:
            request_for(schedule, now)
        except TriggerError as exc:
            details = getattr(exc, "details", []) or []
            problems.extend(f"schedule {schedule.name!r}: {d.path}: {d.problem}" for d in details)
    return problems

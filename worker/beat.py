"""Schedules run by Celery beat: `trigger beat`, the same as `celery -A worker beat`.

The beat schedule is built from the schedules file with Celery's own schedule types (a
`crontab` evaluated in the schedule's timezone, a `schedule` for intervals), and Celery's
beat loop decides when each is due. What happens when one is due is ours: the scheduler
enqueues an ordinary trigger request through `TriggerClient` in the beat process itself,
instead of sending a Celery task that a worker would then have to turn into a request.
That keeps one path into the queue (signing, state, the catalog, the waiting set all
apply), needs no extra queue or task type the trigger worker would have to consume, and
lets beat keep its schedule in memory: a firing's idempotency key names its slot, so a
restart (or a second beat) that fires the same slot again starts no second run, and no
state file is needed to remember what already fired.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import click
from celery import Celery
from celery.beat import ScheduleEntry, Scheduler
from celery.schedules import crontab, schedstate, schedule

from producers.client import TriggerClient
from producers.errors import TriggerError
from producers.schedules import (
    Cron,
    Schedule,
    ScheduleFileError,
    catalog_problems,
    fire,
    load_schedules,
)
from producers.settings import ProducerSettings
from worker.logs import get_logger

log = get_logger()

FIRE_TASK = "zenml_trigger.schedule"
"""The entries' task name; it names no registered task: `TriggerScheduler` enqueues itself and sends none."""


class ZonedCrontab(crontab):
    """Celery's `crontab`, evaluated in one schedule's timezone rather than the app's.

    Celery reads a crontab in `self.tz` (the app's timezone); this one answers with the
    schedule's zone and hands Celery the last run time in that zone, so day, hour and minute
    match the schedule's wall clock on Celery 5.5 as well as later versions.
    """

    def __init__(self, cron: Cron, zone: ZoneInfo, app: Celery | None = None) -> None:
        self.zone = zone
        super().__init__(
            minute=set(cron.minutes),
            hour=set(cron.hours),
            day_of_week=set(cron.weekdays),
            day_of_month=set(cron.days),
            month_of_year=set(cron.months),
            nowfun=lambda: datetime.now(zone),
            app=app,
        )

    @property  # type: ignore[override]
    def tz(self) -> ZoneInfo:
        return self.zone

    def remaining_estimate(self, last_run_at: datetime, **kwargs: Any) -> timedelta:
        last = self.maybe_make_aware(last_run_at).astimezone(self.zone)
        return super().remaining_estimate(last, **kwargs)


class AlignedInterval(schedule):
    """Celery's interval `schedule`, due once per slot of `every` seconds since the Unix epoch.

    Plain `schedule` counts from the last run, so its fire times drift with latency and a
    slot can be skipped or hit twice; aligned, every beat process fires each slot once, at
    its start, and names the same slot.
    """

    def __init__(self, every: int, app: Celery | None = None) -> None:
        super().__init__(run_every=timedelta(seconds=every), nowfun=lambda: datetime.now(timezone.utc), app=app)
        self.every = every

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = self.now().timestamp()
        last = self.maybe_make_aware(last_run_at).timestamp()
        due = math.floor(now / self.every) > math.floor(last / self.every)
        return schedstate(due, self.every - now % self.every)


def celery_schedule(entry: Schedule, app: Celery | None = None) -> crontab | schedule:
    """The Celery schedule type that decides when `entry` is due."""
    if entry.every is not None:
        return AlignedInterval(entry.every, app)
    assert entry.crontab is not None
    return ZonedCrontab(entry.crontab, entry.zone, app)


def beat_schedule(schedules: list[Schedule], app: Celery | None = None) -> dict[str, dict[str, Any]]:
    """Celery's `beat_schedule` for the enabled schedules, keyed by name."""
    return {
        entry.name: {"task": FIRE_TASK, "schedule": celery_schedule(entry, app), "args": (entry.name,)}
        for entry in schedules
        if entry.enabled
    }


def checked_schedules(settings: ProducerSettings, client: TriggerClient) -> list[Schedule]:
    """The schedules file, checked as a whole and against the workers' catalog; `ScheduleFileError` if
    anything is wrong, so beat refuses to start rather than enqueue requests that would all be rejected."""
    if settings.schedules_file is None:
        raise ScheduleFileError("no schedules file: set TRIGGER_SCHEDULES_FILE to a YAML list of schedules")
    schedules = load_schedules(settings.schedules_file)
    problems, skipped = catalog_problems(client.check, schedules, datetime.now(timezone.utc))
    for note in skipped:
        log.warning("trigger.schedule_check_skipped", reason=f"{note}; the worker still validates every request")
    if problems:
        raise ScheduleFileError(f"schedules file {settings.schedules_file}: " + "; ".join(problems))
    return schedules


def settings_of(app: Celery) -> ProducerSettings:
    """The settings `create_app` attached, or fresh ones for an app made elsewhere."""
    return getattr(app, "trigger_settings", None) or ProducerSettings()


class TriggerScheduler(Scheduler):
    """Celery's in-memory beat scheduler whose due entries enqueue trigger requests (see the module)."""

    producer = None
    """Beat would open a broker connection to publish tasks; this scheduler publishes none."""

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        settings = settings_of(app)
        self.client = TriggerClient.from_settings(settings)
        self.schedules = {entry.name: entry for entry in checked_schedules(settings, self.client)}
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        """Only our schedules: no `celery.backend_cleanup`, the app keeps no results."""
        self.merge_inplace(beat_schedule(list(self.schedules.values()), self.app))

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        """Fire one due entry; a failed enqueue is logged and that slot is missed, beat keeps going."""
        fire_entry(self.client, self.schedules[entry.name], datetime.now(timezone.utc))

    def apply_async(self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any) -> None:
        """Celery's way to run an entry now (e.g. from tools): advance it, then fire it."""
        entry = self.reserve(entry) if advance else entry
        self.apply_entry(entry, producer)


def fire_entry(client: TriggerClient, entry: Schedule, now: datetime) -> str | None:
    """Enqueue `entry`'s request for the slot of `now` and log it; None when Redis did not take it."""
    try:
        request = fire(client, entry, now)
    except TriggerError as exc:
        log.error("trigger.schedule_fire_failed", schedule=entry.name, error=str(exc))
        return None
    log.info(
        "trigger.schedule_fired",
        schedule=entry.name,
        request_id=request.request_id,
        idempotency_key=request.idempotency_key,
    )
    return request.request_id


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run the schedules of TRIGGER_SCHEDULES_FILE (same as `celery -A worker beat`)."""
    from worker.app import create_app
    from worker.logs import start_log_stream
    from worker.settings import WorkerSettings

    settings = WorkerSettings()
    start_log_stream(settings)
    try:
        checked_schedules(settings, TriggerClient.from_settings(settings))
    except ScheduleFileError as exc:
        raise click.ClickException(str(exc)) from None
    app = create_app(settings)
    app.start(["beat", "--loglevel", "INFO", *celery_args])  # the scheduler is set in `celery_config`

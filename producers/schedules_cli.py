"""`trigger schedules list`: what the schedules file says and when each schedule fires next.

Producer side on purpose: reading the file and computing fire times needs neither Celery nor
ZenML, so an operator can check a file before any beat runs it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import click

from producers.schedules import Schedule, ScheduleFileError, iso, load_schedules, next_fire_times
from producers.settings import ProducerSettings


def describe(schedule: Schedule, now: datetime, count: int = 3) -> dict[str, Any]:
    """One schedule as `--json` prints it: its rule, target, and next fire times in its timezone and UTC."""
    times = next_fire_times(schedule, now, count) if schedule.enabled else []
    return {
        "name": schedule.name,
        "enabled": schedule.enabled,
        "cron": schedule.cron,
        "every": schedule.every,
        "timezone": schedule.timezone,
        "pipeline": schedule.pipeline,
        "template": schedule.template,
        "parameters": schedule.parameters,
        "steps": schedule.steps,
        "next": [{"local": t.astimezone(schedule.zone).isoformat(), "utc": iso(t)} for t in times],
    }


def _print_readable(described: dict[str, Any]) -> None:
    rule = f"cron {described['cron']!r}" if described["cron"] else f"every {described['every']}s"
    target = described["pipeline"] or f"template {described['template']}"
    state = "enabled" if described["enabled"] else "disabled"
    click.echo(f"{described['name']}  {state}  {rule} ({described['timezone']})  -> {target}")
    for fire_time in described["next"]:
        click.echo(f"  next: {fire_time['local']}  ({fire_time['utc']})")


@click.group()
def schedules() -> None:
    """The schedules `trigger beat` runs (TRIGGER_SCHEDULES_FILE)."""


@schedules.command("list")
@click.option(
    "--file", "path", type=click.Path(dir_okay=False), help="Schedules file (default: TRIGGER_SCHEDULES_FILE)."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def schedules_list(path: str | None, as_json: bool) -> None:
    """Each schedule, whether it is enabled, and its next 3 fire times in its timezone and UTC."""
    path = path or (str(ProducerSettings().schedules_file or "") or None)
    if path is None:
        raise click.UsageError("no schedules file: set TRIGGER_SCHEDULES_FILE or pass --file")
    try:
        loaded = load_schedules(path)
    except ScheduleFileError as exc:
        raise click.ClickException(str(exc)) from None
    now = datetime.now(timezone.utc)
    described = [describe(schedule, now) for schedule in loaded]
    if as_json:
        click.echo(json.dumps(described, default=str))
        return
    for entry in described:
        _print_readable(entry)

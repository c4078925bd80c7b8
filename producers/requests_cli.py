"""`trigger requests list` (what is waiting, and what happened) and `trigger requests show` (= `trigger status`).

The listing walks the time index of `producers.request_index`, newest first; it reads no key
by pattern, so it costs the same on a Redis holding millions of other keys.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import click

from producers.cli import status
from producers.client import TriggerClient
from producers.request_index import DEFAULT_LIMIT
from producers.state import RequestState, Status

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
COLUMNS = ("ID", "STATUS", "PIPELINE", "SOURCE", "CREATED", "ATTEMPTS", "NEXT ATTEMPT")


def parse_since(text: str) -> timedelta | datetime:
    """A duration back from now (`30s`, `10m`, `2h`, `1d`, `1w`) or an ISO time (naive means UTC)."""
    cleaned = text.strip()
    duration = _DURATION.fullmatch(cleaned.lower())
    if duration:
        return timedelta(seconds=float(duration[1]) * UNITS[duration[2]])
    try:
        return datetime.fromisoformat(cleaned[:-1] + "+00:00" if cleaned[-1:] in "Zz" and cleaned else cleaned)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30s, 10m, 2h, 1d, 1w) nor an ISO time (2026-12-01T09:00:00Z)"
        ) from None


class Since(click.ParamType):
    """`--since`: a duration or a time, or a usage error naming the option."""

    name = "DURATION|TIME"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if isinstance(value, (timedelta, datetime)):
            return value
        try:
            return parse_since(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def target_of(state: RequestState) -> str:
    """The PIPELINE column: the pipeline's name, or `template:NAME` for a template run."""
    if state.pipeline_name:
        return state.pipeline_name
    return f"template:{state.template}" if state.template else "-"


def _moment(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def row_of(state: RequestState) -> tuple[str, ...]:
    """One request's cells, in `COLUMNS` order (times in UTC)."""
    return (
        state.request_id,
        state.status.value,
        target_of(state),
        state.source or "-",
        _moment(state.created_at),
        str(state.attempts),
        _moment(state.next_attempt_at),
    )


def format_table(states: list[RequestState]) -> str:
    """The readable table `trigger requests list` prints, a header and one line per request."""
    rows = [COLUMNS, *(row_of(state) for state in states)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@click.group()
def requests() -> None:
    """Recorded requests: list them newest first, or show one."""


@requests.command(name="list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in Status]),
    help="Only requests in this status (repeatable).",
)
@click.option("--pipeline", help="Only requests for this pipeline (its name, or a template's name).")
@click.option("--source", help="Only requests sent by this source (e.g. cli, gateway, schedule:nightly).")
@click.option(
    "--since", type=Since(), help="Only requests created within a duration (30s, 10m, 2h, 1d) or since an ISO time."
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True, help="At most this many."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of what `trigger status --json` prints.")
def list_requests(
    statuses: tuple[str, ...],
    pipeline: str | None,
    source: str | None,
    since: timedelta | datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List recorded requests, newest first, for as long as their state is kept (TRIGGER_STATE_TTL)."""
    found = TriggerClient.from_env().requests(
        status=statuses, pipeline=pipeline, source=source, since=since, limit=limit
    )
    if as_json:
        click.echo(json.dumps([state.public_dict() for state in found]))
    elif found:
        click.echo(format_table(found))
    else:
        click.echo("no recorded request matches", err=True)


requests.add_command(status, name="show")

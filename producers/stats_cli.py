"""`trigger stats`: the cluster-wide figures of a queue at a glance, once or refreshed (`--watch`).

On a terminal `--watch` redraws the screen in place; piped, it prints each reading after the last
(a blank line between, or one JSON object per line with `--json`), so a log keeps the history.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TextIO

import click

from producers.client import connect
from producers.settings import ProducerSettings
from producers.stats import ClusterStats, read_stats

CLEAR = "\033[H\033[2J"
"""Cursor home, clear the screen: a terminal shows one reading at a time."""


def format_stats(stats: ClusterStats) -> str:
    """The readable block `trigger stats` prints."""
    lines = [
        f"queue {stats.queue} at {_clock(stats.read_at)}",
        f"  queue depth        {stats.queue_depth}{_by_priority(stats)}",
        f"  waiting            {stats.waiting} (enqueued, not taken on by a worker yet)",
        f"  retry scheduled    {stats.retry_scheduled}{_next_due(stats)}",
        *_retry_lines(stats),
        f"  dead letters       {stats.dead_letters} ({_size(stats.dead_letter_bytes)})",
        f"  leases held        {stats.leases_held} (requests running now, all queues)",
    ]
    return "\n".join(lines + _outcome_table(stats))


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _next_due(stats: ClusterStats) -> str:
    if stats.next_retry_at is None:
        return ""
    return f" (next due {_clock(stats.next_retry_at)}, in {max(0.0, stats.next_retry_at - stats.read_at):.0f}s)"


def _by_priority(stats: ClusterStats) -> str:
    """`(by priority: 0: 10, 9: 2)` once any message waits on a priority list, else nothing."""
    if not set(stats.depth_by_priority) - {0}:
        return ""
    return " (by priority: " + ", ".join(f"{n}: {d}" for n, d in sorted(stats.depth_by_priority.items())) + ")"


def _retry_lines(stats: ClusterStats) -> list[str]:
    """The overdue count (when any) and the soonest scheduled attempts, one line each."""
    overdue = [f"    {stats.retry_overdue} overdue (due, not released yet: is a worker running?)"]
    soonest = [f"    {rid}  due {_clock(due)} ({_relative(due - stats.read_at)})" for rid, due in stats.next_retries]
    return overdue * bool(stats.retry_overdue) + soonest


def _relative(seconds: float) -> str:
    return f"in {seconds:.0f}s" if seconds >= 0 else f"{-seconds:.0f}s ago"


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"


def _outcome_table(stats: ClusterStats) -> list[str]:
    """Requests by pipeline (rows) and terminal status (columns), with a total row."""
    totals = stats.totals()
    if not totals:
        return ["requests ended: none counted yet"]
    statuses = list(totals)
    rows = [(pipeline, [counts.get(s, 0) for s in statuses]) for pipeline, counts in stats.outcomes.items()]
    rows.append(("total", list(totals.values())))
    first = max(len("pipeline"), *(len(name) for name, _ in rows))
    widths = [max(len(s), *(len(str(r[1][i])) for r in rows)) for i, s in enumerate(statuses)]
    header = "  " + "pipeline".ljust(first) + "".join(f"  {s.rjust(w)}" for s, w in zip(statuses, widths, strict=True))
    body = [
        "  " + name.ljust(first) + "".join(f"  {str(c).rjust(w)}" for c, w in zip(counts, widths, strict=True))
        for name, counts in rows
    ]
    return ["requests ended, by pipeline and status:", header, *body]


def render(readings: list[ClusterStats], as_json: bool) -> str:
    """One reading (of each queue asked for) as printed: a JSON object a line, or readable blocks."""
    if as_json:
        return "\n".join(json.dumps(stats.as_dict()) for stats in readings)
    return "\n\n".join(format_stats(stats) for stats in readings)


def watch(
    read: Callable[[], list[ClusterStats]],
    out: TextIO,
    as_json: bool,
    tty: bool,
    interval: float,
    count: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print a reading every `interval` seconds (`count` times, or until interrupted)."""
    shown = 0
    while count is None or shown < count:
        text = render(read(), as_json)
        if tty and not as_json:
            out.write(CLEAR + text + f"\n\nrefreshing every {interval:g}s; Ctrl-C to stop\n")
        else:
            out.write(("" if as_json or not shown else "\n") + text + "\n")
        out.flush()
        shown += 1
        if count is None or shown < count:
            sleep(interval)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object a line per queue and reading).")
@click.option("--watch", "watching", is_flag=True, help="Refresh until Ctrl-C (in place on a terminal).")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds.")
@click.option("--count", type=click.IntRange(min=1), help="With --watch: stop after this many readings.")
@click.option("--queue", "queues", multiple=True, help="This queue instead of TRIGGER_QUEUE (repeatable).")
def stats(as_json: bool, watching: bool, interval: float, count: int | None, queues: tuple[str, ...]) -> None:
    """Cluster-wide figures of the queue (TRIGGER_QUEUE) from Redis: depth, retries, dead letters, leases, outcomes.

    The counts by pipeline and status cover every worker of the queue: each worker raises them in the same
    atomic write that records a request's terminal state.
    """
    settings = ProducerSettings()
    client = connect(settings)

    def read() -> list[ClusterStats]:
        return [read_stats(client, queue) for queue in queues or (settings.queue,)]

    if not watching:
        click.echo(render(read(), as_json))
        return
    out = click.get_text_stream("stdout")
    try:
        watch(read, out, as_json, out.isatty(), interval, count)
    except KeyboardInterrupt:
        out.write("\n")

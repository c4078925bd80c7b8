"""Worker-side `trigger` commands: pipelines, worker, dlq."""

from __future__ import annotations

import json
import re

import click

from producers.catalog_cli import print_pipeline, show_catalog_pipelines
from producers.client import TriggerClient
from producers.errors import TriggerError
from worker.dead_letters import DeadLetter, DeadLetterStore
from worker.settings import WorkerSettings

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """`90`, `45s`, `30m`, `12h`, `7d`, `2w` into seconds."""
    match = DURATION.match(text)
    if not match:
        raise click.BadParameter(f"{text!r}: expected a duration like 90, 30m, 12h or 7d")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--catalog", "from_catalog", is_flag=True, help="Show the workers' catalog (what producers check).")
def pipelines(as_json: bool, from_catalog: bool) -> None:
    """List registered pipelines, their steps and parameters."""
    from pipelines.registry import PipelineRegistry
    from worker.signature import inspect_pipeline

    if from_catalog:
        show_catalog_pipelines(as_json)
        return
    settings = WorkerSettings()
    described = [
        {**inspect_pipeline(entry.pipeline).describe(), "source": entry.source}
        for entry in PipelineRegistry.from_paths(settings.pipelines)
    ]
    if as_json:
        click.echo(json.dumps(described, default=str))
        return
    for pipeline in described:
        print_pipeline(pipeline)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Start the worker (same as `celery -A worker worker`); extra arguments go to Celery."""
    from worker.app import create_app
    from worker.logs import start_log_stream

    settings = WorkerSettings()
    start_log_stream(settings)
    app = create_app(settings)
    app.worker_main(["worker", "--loglevel", "INFO", *celery_args])


def _store(settings: WorkerSettings) -> tuple[TriggerClient, DeadLetterStore]:
    client = TriggerClient.from_settings(settings)
    return client, DeadLetterStore.from_settings(client.redis, settings)


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead letters."""


@dlq.command("list")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_list(limit: int, as_json: bool) -> None:
    """Newest dead letters first."""
    _, store = _store(WorkerSettings())
    letters = store.list(limit)
    if as_json:
        click.echo(json.dumps([letter.model_dump(mode="json", exclude={"raw_payload"}) for letter in letters]))
        return
    for letter in letters:
        replayed = f"  replayed as {', '.join(letter.replayed_as)}" if letter.replayed_as else ""
        replayed += f"  [payload truncated, {letter.payload_size} bytes]" if letter.payload_truncated else ""
        click.echo(
            f"{letter.dead_lettered_at:%Y-%m-%d %H:%M:%S}  {letter.request_id}  {letter.status:<13} "
            f"{letter.pipeline_name or letter.template or '-'}  {letter.error.type}: {letter.reason[:80]}{replayed}"
        )


def _require(store: DeadLetterStore, request_id: str) -> DeadLetter:
    letter = store.get(request_id)
    if letter is None:
        raise click.ClickException(f"no dead letter with id {request_id!r}")
    return letter


@dlq.command("show")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True)
def dlq_show(request_id: str, as_json: bool) -> None:
    """One dead letter with its raw payload."""
    _, store = _store(WorkerSettings())
    letter = _require(store, request_id)
    click.echo(json.dumps(letter.model_dump(mode="json"), indent=None if as_json else 2))


@dlq.command("replay")
@click.argument("request_id", required=False)
@click.option("--all", "replay_everything", is_flag=True, help="Replay every letter not replayed yet nor a replay.")
def dlq_replay(request_id: str | None, replay_everything: bool) -> None:
    """Enqueue a dead letter's request again under a new id."""
    if bool(request_id) == replay_everything:
        raise click.UsageError("give a REQUEST_ID or --all (exactly one)")
    client, store = _store(WorkerSettings())
    try:
        pairs = _replay_pairs(client, store, request_id)
    except TriggerError as exc:
        raise click.ClickException(str(exc)) from None
    for old, new in pairs:
        click.echo(f"{old} -> {new}")
    if not pairs:
        click.echo("nothing to replay", err=True)


def _replay_pairs(client: TriggerClient, store: DeadLetterStore, request_id: str | None) -> list[tuple[str, str]]:
    """(old id, new id) of one explicit replay, or of `replay_all` when no id is given."""
    from worker.replay import replay, replay_all

    if request_id is None:
        return replay_all(client, store)
    return [(request_id, replay(_require(store, request_id), client, store))]


@dlq.command("purge")
@click.option("--older-than", default=None, help="Only letters older than this (e.g. 7d, 12h).")
@click.option("--yes", is_flag=True, help="Confirm; nothing is deleted without it.")
def dlq_purge(older_than: str | None, yes: bool) -> None:
    """Delete dead letters."""
    if not yes:
        raise click.UsageError("purge deletes dead letters for good; add --yes to confirm")
    _, store = _store(WorkerSettings())
    removed = store.purge(parse_duration(older_than) if older_than else None)
    click.echo(f"purged {removed} dead letter(s)")

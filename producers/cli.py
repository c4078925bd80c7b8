"""The `trigger` command. Send-side commands live here; worker-side ones load lazily.

Every expected failure prints one line and exits non-zero; no tracebacks.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from datetime import datetime
from typing import Any

import click
import redis
from pydantic import ValidationError
from pydantic_settings import SettingsError

from producers.catalog import CatalogCheck
from producers.client import TriggerClient
from producers.contract import TriggerRequest, normalize_steps, problems_from_validation
from producers.delayed import parse_at, parse_in
from producers.errors import TriggerError
from producers.progress import follow
from producers.state import CancelInfo, RequestState

WORKER_COMMANDS = {
    "pipelines": "worker.cli:pipelines",
    "worker": "worker.cli:worker",
    "demo": "worker.demo:demo",
    "dlq": "worker.cli:dlq",
    "templates": "worker.template_cli:templates",
    "drift": "producers.drift_cli:drift",
    "gateway": "producers.gateway_cli:gateway",
    "beat": "worker.beat:beat",
    "schedules": "producers.schedules_cli:schedules",
    "stats": "producers.stats_cli:stats",
    "cancel": "producers.cancel_cli:cancel",
    "requests": "producers.requests_cli:requests",
}
EXTRA_OF = {"drift": "drift", "gateway": "gateway"}
"""The extra a lazily loaded command needs, when it is not the worker's."""
WITHOUT_ZENML = {"pipelines": "producers.catalog_cli:pipelines"}
"""Worker commands with a producer-side stand-in, used where ZenML is not installed."""


class TriggerGroup(click.Group):
    """Loads worker commands on demand and turns known errors into one clear line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *WORKER_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in WORKER_COMMANDS:
            return super().get_command(ctx, name)
        if name in WITHOUT_ZENML and importlib.util.find_spec("zenml") is None:
            return _load(WITHOUT_ZENML[name])
        try:
            return _load(WORKER_COMMANDS[name])
        except ImportError as exc:
            return _missing_extra(name, exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TriggerError as exc:
            raise click.ClickException(str(exc)) from None
        except redis.RedisError as exc:
            raise click.ClickException(f"Redis error: {type(exc).__name__}: {exc}") from None
        except ValidationError as exc:  # a TRIGGER_* setting that does not parse
            problems = "; ".join(f"TRIGGER_{p.path.upper()}: {p.problem}" for p in problems_from_validation(exc))
            raise click.ClickException(f"invalid settings: {problems}") from None
        except SettingsError as exc:
            raise click.ClickException(f"invalid settings: {exc}") from None
        except ValueError as exc:  # e.g. a TRIGGER_REDIS_URL redis-py cannot read
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


def _load(path: str) -> click.Command:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)  # type: ignore[no-any-return]


def _missing_extra(name: str, exc: ImportError) -> click.Command:
    extra = EXTRA_OF.get(name, "worker")

    @click.command(name=name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def unavailable() -> None:
        raise click.ClickException(
            f"'trigger {name}' needs the {extra} extra: pip install 'zenml-queue-trigger[{extra}]' ({exc})"
        )

    return unavailable


def parse_value(text: str) -> Any:
    """A CLI value: JSON when it parses (`10`, `true`, `[1,2]`), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str, option: str) -> tuple[str, Any]:
    """`KEY=VALUE` into a pair, or a usage error naming the option."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.UsageError(f"{option} {text!r}: expected KEY=VALUE")
    return key.strip(), parse_value(value)


def parse_step_assignments(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`STEP.KEY=VALUE` items into `{step: {key: value}}`."""
    steps: dict[str, dict[str, Any]] = {}
    for item in items:
        dotted, value = parse_assignment(item, "-s")
        step, dot, key = dotted.partition(".")
        if not dot or not step or not key:
            raise click.UsageError(
                f"-s {item!r}: expected STEP.KEY=VALUE, e.g. train_model.model_type=gradient_boosting"
            )
        steps.setdefault(step, {})[key] = value
    return steps


def build_request(
    pipeline: str | None,
    params: tuple[str, ...],
    step_params: tuple[str, ...],
    template: str | None,
    idempotency_key: str | None,
    source: str,
    priority: int | None = None,
    not_before: datetime | None = None,
) -> TriggerRequest:
    """The request `trigger send` enqueues, validated as the wire contract."""
    if (pipeline is None) == (template is None):
        raise click.UsageError("give a PIPELINE or --template NAME (exactly one)")
    try:
        return TriggerRequest(
            pipeline_name=pipeline,
            template=template,
            parameters=dict(parse_assignment(p, "-p") for p in params),
            steps=normalize_steps(parse_step_assignments(step_params)),
            idempotency_key=idempotency_key,
            source=source,
            priority=priority,
            not_before=not_before,
        )
    except ValidationError as exc:
        raise click.UsageError("; ".join(str(p) for p in problems_from_validation(exc))) from None


def print_state(state: RequestState, as_json: bool) -> None:
    """Print a request's state as one JSON object or a short readable block."""
    if as_json:
        click.echo(json.dumps(state.public_dict()))
        return
    click.echo(f"{state.request_id}: {state.status.value}")
    for label, value in _readable_fields(state):
        click.echo(f"  {label}: {value}")


def _readable_fields(state: RequestState) -> list[tuple[str, Any]]:
    fields = [
        ("pipeline", state.pipeline_name),
        ("template", state.template),
        ("priority", state.priority),
        ("attempts", state.attempts),
        ("run_id", state.run_id),
        ("step", state.step),
        ("metrics", state.metrics),
        ("lost_attempts", state.lost_attempts or None),
        ("duplicate_of", state.duplicate_of),
        ("coalesced_into", state.coalesced_into),
        ("coalesced_from", f"{state.coalesced_count} requests" if state.coalesced_count else None),
        ("claimed_id", state.claimed_id),
        ("replay_of", state.replay_of),
        ("replayed_as", ", ".join(state.replayed_as) or None),
        ("next_attempt_at", state.next_attempt_at),
    ]
    if state.cancelled:
        fields.append(("cancelled", cancel_line(state.cancelled)))
    if state.error:
        fields.append(("error", f"{state.error.type}: {state.error.message}"))
        fields.extend(("  at " + (d["path"] or "(message)"), d["problem"]) for d in state.error.details)
    return [(label, value) for label, value in fields if value not in (None, "")]


def cancel_line(info: CancelInfo) -> str:
    """`by WHO at WHEN: REASON (RUN STOP)`, for the readable state."""
    line = f"by {info.by} at {info.at:%Y-%m-%d %H:%M:%S %Z}".rstrip()
    line += f": {info.reason}" if info.reason else ""
    return line + (f" ({info.run_stop})" if info.run_stop else "")


@click.group(cls=TriggerGroup)
def cli() -> None:
    """Queue-driven triggers for ZenML pipelines."""


@cli.command()
@click.argument("pipeline", required=False)
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Pipeline-level parameter.")
@click.option("-s", "--step-param", "step_params", multiple=True, metavar="STEP.KEY=VALUE", help="Step parameter.")
@click.option("--template", help="Run this named template instead of a pipeline.")
@click.option("--idempotency-key", help="Requests sharing a key inside the dedup window run once.")
@click.option("--source", default="cli", show_default=True, help="Who is sending.")
@click.option("--priority", type=click.IntRange(0, 9), help="0-9, higher runs first; default 0 (routine).")
@click.option("--at", "at", metavar="TIME", help="Run no earlier than TIME (ISO 8601 with a timezone).")
@click.option("--in", "in_", metavar="DELAY", help="Run no earlier than DELAY from now (90s, 10m, 2h, 1d).")
@click.option("--check", is_flag=True, help="Check against the workers' catalog first; enqueue nothing if it fails.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def send(
    pipeline: str | None,
    params: tuple[str, ...],
    step_params: tuple[str, ...],
    template: str | None,
    idempotency_key: str | None,
    source: str,
    priority: int | None,
    at: str | None,
    in_: str | None,
    check: bool,
    as_json: bool,
) -> None:
    """Enqueue a trigger request and print its id (and, for --at/--in, when it is due, on stderr)."""
    not_before = not_before_option(at, in_)
    request = build_request(pipeline, params, step_params, template, idempotency_key, source, priority, not_before)
    client = TriggerClient.from_env()
    result = client.check(request) if check else None
    if result is not None:
        report_check(result, request, as_json)
    request_id = client.send(request)
    recorded = client.status(request_id) if not_before is not None else None
    printed: dict[str, Any] = {"request_id": request_id, **send_status(recorded)}
    if result is not None:
        printed["check"] = "skipped" if result.skipped else "passed"
    click.echo(json.dumps(printed) if as_json else request_id)
    if not as_json and "next_attempt_at" in printed:
        click.echo(f"scheduled: runs at {printed['next_attempt_at']}", err=True)


def not_before_option(at: str | None, in_: str | None) -> datetime | None:
    """`--at` or `--in` as the aware time to run at (None: now); a usage error for both, or a bad value."""
    if at is not None and in_ is not None:
        raise click.UsageError("give --at TIME or --in DELAY, not both")
    try:
        return parse_at(at) if at is not None else parse_in(in_) if in_ is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at" if at is not None else "--in") from None


def send_status(state: RequestState | None) -> dict[str, Any]:
    """What `send` says of the request: `queued`, or `scheduled` with the time it is due."""
    if state is None or state.next_attempt_at is None:
        return {"status": "queued"}
    return {"status": state.status.value, "next_attempt_at": state.next_attempt_at.isoformat()}


def report_check(result: CatalogCheck, request: TriggerRequest, as_json: bool) -> None:
    """Say on stderr that the check was skipped, or exit 1 with every problem and its path."""
    if result.skipped:
        click.echo(f"early check skipped ({result.skipped}); the worker still validates the request", err=True)
        return
    if not result.problems:
        return
    if as_json:
        problems = [problem.as_dict() for problem in result.problems]
        click.echo(json.dumps({"status": "invalid", "enqueued": False, "problems": problems}))
    else:
        click.echo(f"Error: the workers would reject this request for {request.target}; nothing was enqueued", err=True)
        for problem in result.problems:
            click.echo(f"  {problem}", err=True)
    click.get_current_context().exit(1)


@cli.command()
@click.argument("request_id")
@click.option("--wait", type=click.FloatRange(min=0), default=None, help="Block up to SECONDS for a terminal state.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(request_id: str, wait: float | None, as_json: bool) -> None:
    """Show a request's state; with --wait, follow it (a live line on a terminal, on stderr) until it ends."""
    client = TriggerClient.from_env()
    if wait and not as_json:
        err = click.get_text_stream("stderr")
        state = follow(lambda: client.status(request_id), wait, err, tty=err.isatty())
    else:
        state = client.wait(request_id, wait) if wait else client.status(request_id)
    print_state(state, as_json)


def main() -> None:
    """Console entry point."""
    cli.main(prog_name="trigger")


if __name__ == "__main__":
    sys.exit(main())

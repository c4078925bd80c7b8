"""`trigger cancel ID`: end a request before it runs (or stop its run where ZenML can), see `producers.cancel`."""

from __future__ import annotations

import click

from producers.cli import print_state
from producers.client import TriggerClient


@click.command()
@click.argument("request_id")
@click.option("--reason", help="Why, recorded on the request's state (shown by `trigger status`).")
@click.option("--by", "by", metavar="WHO", help="Who cancels, recorded on the state.  [default: your user@host]")
@click.option("--json", "as_json", is_flag=True, help="Print the cancelled state as one JSON object.")
def cancel(request_id: str, reason: str | None, by: str | None, as_json: bool) -> None:
    """Cancel a request: a queued, retrying or deferred one ends `cancelled` and never runs.

    It releases the request's idempotency and coalescing claims and removes its pending retries.
    A running request is cancelled only where its orchestrator can stop the run (ZenML is asked
    to stop it); the local orchestrator runs pipelines inside the worker and cannot, so such a
    run is left alone and this exits 1 saying so. A request that ended cannot be cancelled (exit 1).
    """
    print_state(TriggerClient.from_env().cancel(request_id, reason=reason, by=by), as_json)

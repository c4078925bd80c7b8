"""Every Redis key, queue and task name the producers and the worker share, in one place."""

from __future__ import annotations

TASK_NAME = "zenml_trigger.run"
"""The Celery task that receives every trigger request."""

DEFAULT_QUEUE = "zenml-triggers"
"""The Celery queue requests are pushed onto: a Redis list of the same name for routine requests, and one
more per priority (`producers.priority.queue_list`)."""

KEY_PREFIX = "zenml-trigger"


def state_key(request_id: str) -> str:
    """Where one request's state lives."""
    return f"{KEY_PREFIX}:request:{request_id}"


REQUESTS_INDEX_KEY = f"{KEY_PREFIX}:requests"
"""Sorted set of request ids scored by when their first state was written (Redis clock, epoch seconds): what
`trigger requests list` walks, newest first. Written with that state, pruned past the state TTL on write."""


def idempotency_key(key: str) -> str:
    """Where the claim on one idempotency key lives."""
    return f"{KEY_PREFIX}:idempotency:{key}"


DEAD_LETTERS_KEY = f"{KEY_PREFIX}:dead-letters"
"""Sorted set of dead-lettered request ids, scored by the time they were dead-lettered."""


def dead_letter_key(request_id: str) -> str:
    """Where one dead letter's record lives."""
    return f"{KEY_PREFIX}:dead-letter:{request_id}"


DEAD_LETTER_SIZES_KEY = f"{KEY_PREFIX}:dead-letter-sizes"
"""Hash of dead-lettered request id -> bytes of its stored record, so pruning by bytes reads no record."""

DEAD_LETTER_BYTES_KEY = f"{KEY_PREFIX}:dead-letter-bytes"
"""Running total of the bytes in `DEAD_LETTER_SIZES_KEY`, checked against the store's byte cap."""

DEAD_LETTER_REPLAYS_KEY = f"{KEY_PREFIX}:dead-letter-replays"
"""Hash of dead-lettered request id -> comma-separated ids it was replayed as (appended atomically)."""


FAILED_ENQUEUES_KEY = f"{KEY_PREFIX}:stats:enqueue-failures"


def outcome_counts_key(queue: str) -> str:
    """Hash of `<status>:<pipeline>` -> requests of `queue` that ended so, raised by the very Lua call that
    writes the terminal state (so each request is counted once, across every worker); never expires."""
    return f"{KEY_PREFIX}:stats:outcomes:{queue}"


LEASES_KEY = f"{KEY_PREFIX}:leases"
"""Sorted set of the request ids whose lease is held, scored by the lease's expiry (epoch seconds): leases
held now are those scored in the future, counted without a SCAN; expired entries are pruned on acquire."""


def lease_key(request_id: str) -> str:
    """The live worker's lease on a running request (refreshed by its heartbeat)."""
    return f"{KEY_PREFIX}:lease:{request_id}"


def lease_token_key(request_id: str) -> str:
    """Hash of a request's fencing tokens: `issued`, the last issued to a lease on it, and `owner`, the last
    that recorded its state; kept as long as its state, past any lease."""
    return f"{KEY_PREFIX}:lease-token:{request_id}"


def retry_schedule_key(queue: str) -> str:
    """Sorted set of one queue's task envelopes waiting for their next attempt (or their `not_before`), scored
    by due time.

    Keyed by queue, so deployments sharing a Redis never receive each other's retries.
    """
    return f"{KEY_PREFIX}:retry-schedule:{queue}"


SCHEDULED_ENVELOPES_INFIX = ":scheduled-envelopes:"


def scheduled_envelopes_key(queue: str, request_id: str) -> str:
    """Set of one request's envelopes now in `retry_schedule_key(queue)`, so a cancel removes exactly
    those (no scan of the schedule); kept by every writer of the schedule, emptied as they are released."""
    return f"{KEY_PREFIX}{SCHEDULED_ENVELOPES_INFIX}{queue}:{request_id}"


def lease_seen_key(request_id: str) -> str:
    """When the lease holder of a running request was last heard from (epoch seconds), kept past the lease."""
    return f"{KEY_PREFIX}:lease-seen:{request_id}"


UNACKED_KEY = "unacked"
"""kombu's Redis transport: unacknowledged messages by delivery tag."""

UNACKED_INDEX_KEY = "unacked_index"
"""kombu's Redis transport: delivery tags of unacknowledged messages, scored by delivery time."""


def waiting_key(queue: str) -> str:
    """Sorted set of the requests enqueued on `queue` that no worker has taken on yet, scored by enqueue time."""
    return f"{KEY_PREFIX}:waiting:{queue}"


def waiting_messages_key(queue: str) -> str:
    """Hash of those requests' task messages by request id, so a message lost in flight can be sent again."""
    return f"{KEY_PREFIX}:waiting-messages:{queue}"


def coalesce_latest_key(key: str) -> str:
    """The newest request enqueued with coalescing key `key` (set by the producer's enqueue, latest wins)."""
    return f"{KEY_PREFIX}:coalesce:latest:{key}"


def coalesce_running_key(key: str) -> str:
    """The request whose run for coalescing key `key` is in flight (a lease-like lock, kept by its heartbeat)."""
    return f"{KEY_PREFIX}:coalesce:running:{key}"


def concurrency_slots_key(queue: str, name: str) -> str:
    """Sorted set of the request ids holding a slot of concurrency limit `name` (a pipeline or
    `template:NAME`) on `queue`, scored by when each was admitted."""
    return f"{KEY_PREFIX}:concurrency:{queue}:{name}"


def concurrency_waiting_key(queue: str, name: str) -> str:
    """Sorted set of the request ids waiting for a slot of concurrency limit `name`, scored by when each
    is due to look again (sizes the waiters' recheck delay; expires once none waits)."""
    return f"{KEY_PREFIX}:concurrency-waiting:{queue}:{name}"


COALESCED_FROM_PREFIX = f"{KEY_PREFIX}:coalesced-from:"
"""`<prefix><request id>`: list of the requests coalesced into that request (bounded)."""

COALESCED_COUNT_PREFIX = f"{KEY_PREFIX}:coalesced-count:"
"""`<prefix><request id>`: how many requests were coalesced into that request, in all."""


def catalog_key(queue: str) -> str:
    """The catalog the workers consuming `queue` publish: one JSON document, replaced whole by one SET."""
    return f"{KEY_PREFIX}:catalog:{queue}"


CATALOG_TEMPLATE_CHANGES_KEY = f"{KEY_PREFIX}:catalog:template-changes"
"""Counter raised by `trigger templates create/delete`; a catalog that listed templates before it moved
no longer vouches for them (no clocks compared: templates live in ZenML, shared by every queue)."""


def webhook_signature_key(digest: str) -> str:
    """A webhook signature the gateway accepted (by SHA-256), kept for twice its time window so it is used once."""
    return f"{KEY_PREFIX}:webhook-signature:{digest}"

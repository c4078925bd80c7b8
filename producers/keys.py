"""Every Redis key, queue and task name the producers and the worker share, in one place."""

from __future__ import annotations

TASK_NAME = "zenml_trigger.run"
"""The Celery task that receives every trigger request."""

DEFAULT_QUEUE = "zenml-triggers"
"""The Celery queue (a Redis list of the same name) requests are pushed onto."""

KEY_PREFIX = "zenml-trigger"


def state_key(request_id: str) -> str:
    """Where one request's state lives."""
    return f"{KEY_PREFIX}:request:{request_id}"


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


def lease_key(request_id: str) -> str:
    """The live worker's lease on a running request (refreshed by its heartbeat)."""
    return f"{KEY_PREFIX}:lease:{request_id}"


RETRY_SCHEDULE_KEY = f"{KEY_PREFIX}:retry-schedule"
"""Sorted set of task envelopes waiting for their next attempt, scored by due time."""

UNACKED_INDEX_KEY = "unacked_index"
"""kombu's Redis transport: delivery tags of unacknowledged messages, scored by delivery time."""

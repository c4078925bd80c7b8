"""A request on its way through the worker: the job the walk carries, and the task message that sends it again."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from producers import keys
from producers.contract import TriggerRequest, encode_request
from producers.envelope import task_envelope
from worker.delivery import Delivery

HOST = socket.gethostname()
"""The worker's host name, recorded on every state it writes."""


@dataclass(frozen=True)
class Job:
    """A decoded request, the delivery that carried it (whose raw bytes any dead letter keeps), and the
    lease's fence (`Leases.fence`: holder and token) its writes are conditional on once the lease is held."""

    request: TriggerRequest
    delivery: Delivery
    fence: str | None = None


def envelope(job: Job, queue: str, kwargs: dict[str, Any]) -> str:
    """The task message that carries the job's request to `queue` again (a retry, a deferred copy).

    A signed request goes back as the exact text that arrived, with its signature, which
    covers that text: the copy verifies like the first delivery did.
    """
    delivery, text = job.delivery, encode_request(job.request)
    kept: dict[str, Any] = {}
    if delivery.signature is not None:
        text, kept = delivery.text(), {"signature": delivery.signature, "raw_encoding": delivery.raw_encoding}
    return task_envelope(keys.TASK_NAME, job.request.request_id, [text], queue, kwargs | kept, job.request.priority)


def now() -> datetime:
    """The time a state is stamped with."""
    return datetime.now(timezone.utc)

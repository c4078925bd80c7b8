"""Priorities: a request's wire `priority` and the Redis list kombu's Redis transport keeps it on.

kombu keeps one list per priority step: `{queue}` for step 0 and `{queue}\\x06\\x16{N}` for step N.
The wire priority is the step: 0 (the default, what a request without a priority gets) is routine
and lives on the plain `{queue}` list, 9 is the most urgent. Stock kombu pops step 0 first; the
worker lists its steps the other way round (`TRANSPORT_OPTIONS`, and `worker.transport.Channel.priority`
keeps kombu's step lookup right for that order), so it pops the most urgent list first and routine
work last. Every list name is built by `step_list`, here, for every path that pushes, restores or
counts messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SEP = "\x06\x16"
"""kombu's `Channel.sep`: between a queue's name and its priority step."""

ROUTINE = 0
"""The wire priority of a request that names none: the least urgent, served last."""

MOST_URGENT = 9
"""The highest wire priority, served before every other."""

STEPS = tuple(range(ROUTINE, MOST_URGENT + 1))
"""kombu's priority steps, one list each, by step (the wire priority)."""

TRANSPORT_OPTIONS: dict[str, Any] = {
    "priority_steps": list(reversed(STEPS)),
    "queue_order_strategy": "priority",
}
"""The worker's kombu options: read every step's list, most urgent first (kombu's BRPOP takes the lists
in `priority_steps` order)."""


def kombu_step(priority: int | None) -> int:
    """kombu's step (a task message's `properties.priority`) for a wire priority; None is routine."""
    return ROUTINE if priority is None else priority


def step_list(queue: str, step: int) -> str:
    """The Redis list of `queue`'s step `step`, named exactly as kombu's `Channel._q_for_pri` names it."""
    return f"{queue}{SEP}{step}" if step else queue


def queue_list(queue: str, priority: int | None = None) -> str:
    """The Redis list a request of wire `priority` (None: routine) is pushed onto."""
    return step_list(queue, kombu_step(priority))


def queue_lists(queue: str) -> list[str]:
    """Every list of `queue`, by step: routine (the plain `queue`) first, the most urgent last."""
    return [step_list(queue, step) for step in STEPS]


def message_priority(message: Any) -> int:
    """The wire priority a task message carries in `properties.priority`, read as kombu reads it when it
    restores one: clamped to the steps, routine when missing or unreadable."""
    properties = message.get("properties") if isinstance(message, Mapping) else None
    try:
        step = int(properties["priority"]) if isinstance(properties, Mapping) else ROUTINE
    except (KeyError, TypeError, ValueError):
        return ROUTINE
    return max(ROUTINE, min(step, MOST_URGENT))

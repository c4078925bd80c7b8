"""Replaying dead letters: the original request again, under a new id that points back."""

from __future__ import annotations

import uuid

from producers.client import TriggerClient
from producers.contract import decode_request, new_request_id, utc_now
from producers.errors import InvalidRequest
from producers.state import RequestState, Status
from worker.dead_letters import DeadLetter, DeadLetterStore


def replay(letter: DeadLetter, client: TriggerClient, store: DeadLetterStore) -> str:
    """Enqueue `letter`'s payload again; record the link both ways; return the new request id."""
    try:
        original = decode_request(letter.raw_bytes())
    except InvalidRequest:
        new_id = _replay_raw(letter, client)
    else:
        new_id = client.send(
            original.model_copy(
                update={"request_id": new_request_id(), "replay_of": letter.request_id, "created_at": utc_now()}
            )
        )
    _link(letter, new_id, client, store)
    return new_id


def _replay_raw(letter: DeadLetter, client: TriggerClient) -> str:
    """An unreadable payload goes back as it was, so the worker rejects it again (never loops)."""
    state = RequestState(
        request_id=f"replay-{uuid.uuid4().hex}",
        status=Status.QUEUED,
        source=letter.source,
        replay_of=letter.request_id,
    )
    return client.enqueue(state, letter.raw_payload, {"raw_encoding": letter.raw_encoding})


def _link(letter: DeadLetter, new_id: str, client: TriggerClient, store: DeadLetterStore) -> None:
    letter.replayed_as.append(new_id)
    store.save(letter)
    old = client.states.get(letter.request_id)
    if old is not None:
        client.states.put(old.model_copy(update={"replayed_as": [*old.replayed_as, new_id], "updated_at": utc_now()}))


def replay_all(client: TriggerClient, store: DeadLetterStore, limit: int = 10_000) -> list[tuple[str, str]]:
    """Replay every letter not replayed yet; return (old id, new id) pairs."""
    return [
        (letter.request_id, replay(letter, client, store)) for letter in store.list(limit) if not letter.replayed_as
    ]

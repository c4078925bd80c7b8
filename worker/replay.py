"""Replaying dead letters: the original request again, under a new id that points back.

Lineage rule: `replay_all` replays each original at most once. It skips letters already
replayed and letters that are replays themselves (a replay rejected again), so running it
twice with nothing fixed in between sends nothing the second time, and a scheduled run is
safe. `replay` of one letter by id replays any letter, as often as asked.
"""

from __future__ import annotations

import uuid

import redis

from producers import keys
from producers.client import TriggerClient
from producers.contract import TriggerRequest, decode_request, new_request_id, utc_now
from producers.errors import InvalidRequest, PermanentError
from producers.state import RequestState, Status
from worker.dead_letters import DeadLetter, DeadLetterStore


class NotReplayable(PermanentError):
    """The dead letter cannot be replayed."""


def replay(letter: DeadLetter, client: TriggerClient, store: DeadLetterStore) -> str:
    """Enqueue `letter`'s payload again; record the link both ways; return the new request id."""
    new_id = _replay(letter, client, store, first_only=False)
    if new_id is None:
        raise NotReplayable(f"dead letter {letter.request_id} is no longer stored (pruned or purged)")
    return new_id


def replay_all(client: TriggerClient, store: DeadLetterStore, limit: int = 10_000) -> list[tuple[str, str]]:
    """Replay every original letter not replayed yet; return (old id, new id) pairs.

    Concurrent calls race for each letter's claim (`DeadLetterStore.link`), so each goes out once.
    Letters that kept only a prefix of their payload are skipped.
    """
    letters = [letter for letter in store.list(limit) if _original(letter)]
    replays = _replays_by_state(client, letters)
    pairs = [
        (letter.request_id, _replay(letter, client, store, first_only=True))
        for letter in letters
        if letter.request_id not in replays
    ]
    return [(old, new) for old, new in pairs if new is not None]


def _original(letter: DeadLetter) -> bool:
    """Replayable, never replayed, and not itself a replay."""
    return letter.replayable and not letter.replayed_as and letter.replay_of is None


def _replays_by_state(client: TriggerClient, letters: list[DeadLetter]) -> set[str]:
    """Ids among `letters` whose request state says they are replays (for letters without `replay_of`)."""
    if not letters:
        return set()
    states = client.redis.mget([keys.state_key(letter.request_id) for letter in letters])
    return {
        letter.request_id
        for letter, raw in zip(letters, states, strict=True)
        if raw and RequestState.model_validate_json(raw).replay_of is not None
    }


def _replay(letter: DeadLetter, client: TriggerClient, store: DeadLetterStore, first_only: bool) -> str | None:
    """Claim the letter under a fresh id, then enqueue; None when the claim is lost.

    The claim comes first so two callers never both send; a failed enqueue gives it back.
    """
    _check_replayable(letter)
    request = _decoded(letter)
    new_id = new_request_id() if request is not None else f"replay-{uuid.uuid4().hex}"
    if not store.link(letter.request_id, new_id, first_only):
        return None
    try:
        _send(letter, request, new_id, client)
    except BaseException:
        store.unlink(letter.request_id, new_id)
        raise
    _link_state(client, letter.request_id, new_id)
    return new_id


def _check_replayable(letter: DeadLetter) -> None:
    if not letter.replayable:
        raise NotReplayable(
            f"dead letter {letter.request_id} kept only the first bytes of its {letter.payload_size}-byte "
            f"payload (SHA-256 {letter.payload_sha256}); it cannot be replayed"
        )


def _decoded(letter: DeadLetter) -> TriggerRequest | None:
    try:
        return decode_request(letter.raw_bytes())
    except InvalidRequest:
        return None


def _send(letter: DeadLetter, request: TriggerRequest | None, new_id: str, client: TriggerClient) -> None:
    if request is None:
        _send_raw(letter, new_id, client)
        return
    client.send(
        request.model_copy(update={"request_id": new_id, "replay_of": letter.request_id, "created_at": utc_now()})
    )


def _send_raw(letter: DeadLetter, new_id: str, client: TriggerClient) -> None:
    """An unreadable payload goes back as it was, so the worker rejects it again (never loops)."""
    state = RequestState(request_id=new_id, status=Status.QUEUED, source=letter.source, replay_of=letter.request_id)
    client.enqueue(state, letter.raw_payload, {"raw_encoding": letter.raw_encoding})


def _link_state(client: TriggerClient, old_id: str, new_id: str) -> None:
    """Append `new_id` to the old state's `replayed_as` optimistically (WATCH), so no concurrent replay is lost."""

    def append(pipe: redis.client.Pipeline) -> None:
        raw = pipe.get(keys.state_key(old_id))
        old = RequestState.model_validate_json(raw) if raw else None
        if old is None or new_id in old.replayed_as:
            return
        pipe.multi()
        client.states.put(
            old.model_copy(update={"replayed_as": [*old.replayed_as, new_id], "updated_at": utc_now()}), pipe
        )

    client.redis.transaction(append, keys.state_key(old_id))

"""Early ends: a duplicate or superseded request ends in one atomic Redis call, at the task or on arrival."""

from __future__ import annotations

import json
from typing import Any

from producers import TriggerClient, keys
from producers.contract import TriggerRequest
from producers.settings import ProducerSettings
from producers.state import RequestState, Status
from worker.early import EarlyEnds
from worker.processing import Delivery, Processor
from worker.transport import Channel, load_item

KEY = "drift:churn"


def client_for(processor: Processor) -> TriggerClient:
    return TriggerClient(processor.s.states.client, ProducerSettings(queue=processor.s.settings.queue))


def popped(processor: Processor) -> tuple[str, str, dict[str, Any]]:
    """The oldest queued message, as the transport checks it: (task id, request text, kwargs)."""
    client = processor.s.states.client
    _, checked = load_item(client.rpop(processor.s.settings.queue), processor.s.settings.queue)
    assert checked is not None
    return checked


def early(processor: Processor) -> EarlyEnds:
    """The processor's early-end check."""
    return processor.early


def test_a_superseded_request_ends_coalesced_into_the_newest_and_moves_to_its_covered_list(
    processor: Processor,
) -> None:
    client = client_for(processor)
    older, newer = (client.trigger("training_pipeline", coalesce_key=KEY) for _ in range(2))
    request = processor._decode(Delivery(raw=popped(processor)[1], task_id=older))

    verdict = early(processor).check(request)

    stored = processor.s.states.get(older)
    assert verdict.ended is not None and verdict.ended.status is Status.COALESCED
    assert stored == verdict.ended and stored.coalesced_into == newer
    assert processor.coalescing.covered(newer) == ([older], 1)
    waiting = processor.s.states.client.zrange(keys.waiting_key(processor.s.settings.queue), 0, -1)
    assert older.encode() not in waiting and newer.encode() in waiting


def test_a_duplicate_ends_naming_the_key_owner_and_counts_one_attempt(processor: Processor) -> None:
    client = client_for(processor)
    first, second = (client.trigger("training_pipeline", idempotency_key="nightly-1") for _ in range(2))
    processor.s.claims.claim("nightly-1", first)
    processor.s.states.client.rpop(processor.s.settings.queue)
    request = processor._decode(Delivery(raw=popped(processor)[1], task_id=second))

    ended = early(processor).check(request).ended

    assert ended is not None and ended.status is Status.DUPLICATE
    assert ended.duplicate_of == first and ended.attempts == 1 and ended.finished_at is not None
    assert processor.s.states.get(second) == ended


def test_the_newest_request_a_running_one_and_a_leased_one_are_left_to_the_walk(processor: Processor) -> None:
    client = client_for(processor)
    newest = client.trigger("training_pipeline", coalesce_key=KEY)
    request = processor._decode(Delivery(raw=popped(processor)[1], task_id=newest))
    assert early(processor).check(request) == early(processor).check(request)
    assert early(processor).check(request).ended is None
    assert early(processor).check(request).stored == processor.s.states.get(newest)

    client.trigger("training_pipeline", coalesce_key=KEY)  # now `newest` is superseded, but ...
    processor.s.states.client.set(keys.lease_key(newest), "another-worker", ex=30)
    assert early(processor).check(request).ended is None  # ... another copy holds its lease
    processor.s.states.client.delete(keys.lease_key(newest))

    running = processor.s.states.get(newest).advance(Status.RUNNING, attempts=1)
    processor.s.states.put(running)
    verdict = early(processor).check(request)
    assert verdict.ended is None and verdict.stored == running  # only a `queued` request ends early
    assert processor.s.states.get(newest).status is Status.RUNNING


def test_a_finished_request_is_never_overwritten(processor: Processor) -> None:
    client = client_for(processor)
    older = client.trigger("training_pipeline", coalesce_key=KEY, idempotency_key="k")
    client.trigger("training_pipeline", coalesce_key=KEY)
    processor.s.claims.claim("k", "someone-else")
    request = processor._decode(Delivery(raw=popped(processor)[1], task_id=older))
    done = processor.s.states.get(older).advance(Status.SUCCEEDED, attempts=1)
    processor.s.states.put(done)

    verdict = early(processor).check(request)

    assert verdict.ended is None and verdict.stored == done
    assert processor.s.states.get(older) == done


def test_a_state_written_in_another_field_order_is_still_read_for_its_status(processor: Processor) -> None:
    client = client_for(processor)
    older = client.trigger("training_pipeline", coalesce_key=KEY)
    client.trigger("training_pipeline", coalesce_key=KEY)
    state = json.loads(processor.s.states.client.get(keys.state_key(older)))
    reordered = {"status": "running", **{k: v for k, v in state.items() if k != "status"}}
    processor.s.states.client.set(keys.state_key(older), json.dumps(reordered))
    request = processor._decode(Delivery(raw=popped(processor)[1], task_id=older))

    verdict = early(processor).check(request)

    assert verdict.ended is None and verdict.stored is not None and verdict.stored.status is Status.RUNNING


def test_on_arrival_ends_a_superseded_first_delivery_and_leaves_the_rest_to_the_task(processor: Processor) -> None:
    client = client_for(processor)
    older, newer = (client.trigger("training_pipeline", coalesce_key=KEY) for _ in range(2))
    task_id, raw, kwargs = popped(processor)
    assert task_id == older
    newest_message = popped(processor)

    assert processor.end_on_arrival(task_id, raw, kwargs) is True
    assert processor.s.states.get(older).coalesced_into == newer
    assert processor.end_on_arrival(*newest_message) is False  # the newest must run
    assert processor.end_on_arrival(task_id, raw, {"attempt": 2}) is False  # a retry is the task's
    assert processor.end_on_arrival("other-id", raw, {}) is False  # a message under another id
    assert processor.end_on_arrival(task_id, "not json", {}) is False  # garbage is rejected by the task
    assert processor.s.states.get(newer).status is Status.QUEUED


def test_a_request_without_keys_is_never_looked_at_on_arrival(processor: Processor) -> None:
    plain = client_for(processor).trigger("training_pipeline")
    calls: list[Any] = []
    processor.early.check = lambda request: calls.append(request)  # type: ignore[method-assign]

    assert processor.end_on_arrival(*popped(processor)) is False
    assert calls == [] and processor.s.states.get(plain).status is Status.QUEUED


class FakeConnection:
    def __init__(self) -> None:
        self.delivered: list[dict[str, Any]] = []

    def _deliver(self, message: dict[str, Any], queue: str) -> None:
        self.delivered.append(message)


def test_the_channel_delivers_whatever_its_hook_does_not_settle_even_when_the_hook_raises() -> None:
    channel = Channel.__new__(Channel)
    channel.connection = FakeConnection()  # type: ignore[assignment]
    checked = ("id-1", "{}", {})

    channel.on_arrival = lambda *args: True
    assert channel._settled(checked) is True

    def broken(*args: Any) -> bool:
        raise RuntimeError("Redis went away mid-call")

    channel.on_arrival = broken
    assert channel._settled(checked) is False
    channel.on_arrival = None
    assert channel._settled(checked) is False
    assert channel._settled(None) is False  # a quarantined item is always delivered


def test_the_stored_early_state_parses_back_exactly(processor: Processor) -> None:
    client = client_for(processor)
    older = client.trigger("training_pipeline", coalesce_key='weird "key" \\ with quotes')
    client.trigger("training_pipeline", coalesce_key='weird "key" \\ with quotes')
    raw = popped(processor)[1]
    ended = processor.early.check(processor._decode(Delivery(raw=raw, task_id=older))).ended
    stored = processor.s.states.client.get(keys.state_key(older))
    assert ended is not None and RequestState.model_validate_json(stored) == ended
    assert json.loads(stored)["coalesce_key"] == 'weird "key" \\ with quotes'


def test_a_message_sent_under_another_requests_id_never_ends_that_request_early(processor: Processor) -> None:
    client = client_for(processor)
    victim = client.trigger("training_pipeline", source="nightly")
    client.trigger("training_pipeline", coalesce_key="attacker-key")
    client.trigger("training_pipeline", coalesce_key="attacker-key")
    forged = TriggerRequest(request_id=victim, pipeline_name="training_pipeline", coalesce_key="attacker-key")

    verdict = early(processor).check(forged)

    assert verdict.ended is None
    assert processor.s.states.get(victim).status is Status.QUEUED
    assert processor.s.states.get(victim).source == "nightly"

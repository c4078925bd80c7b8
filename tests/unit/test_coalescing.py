"""Coalescing: latest wins, at most one run in flight and one pending per key (fakeredis, scripted runner)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from producers import TriggerClient, keys
from producers.contract import TriggerRequest, decode_request
from producers.settings import ProducerSettings
from producers.state import Status
from worker.processing import Delivery, Processor

KEY = "drift:churn"


def send_burst(processor: Processor, count: int) -> tuple[list[str], list[Delivery]]:
    """`count` alerts for one key, enqueued through the real producer Lua before any is handled."""
    client = TriggerClient(processor.s.states.client, ProducerSettings(queue=processor.s.settings.queue))
    ids = [
        client.trigger("training_pipeline", parameters={"model_type": "random_forest"}, coalesce_key=KEY)
        if i < count - 1
        else client.trigger("training_pipeline", parameters={"model_type": "gradient_boosting"}, coalesce_key=KEY)
        for i in range(count)
    ]
    queue = processor.s.states.client.lrange(processor.s.settings.queue, 0, -1)[::-1]
    return ids, [delivery_of(envelope) for envelope in queue]


def delivery_of(envelope: bytes) -> Delivery:
    import base64

    message = json.loads(envelope)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    return Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs)


def test_a_burst_runs_once_on_the_newest_alerts_parameters(processor: Processor, runner: Any) -> None:
    ids, deliveries = send_burst(processor, 5)

    states = [processor.handle(delivery) for delivery in deliveries]

    assert [s.status for s in states] == [Status.COALESCED] * 4 + [Status.SUCCEEDED]
    assert all(s.coalesced_into == ids[-1] for s in states[:4])
    assert len(runner.calls) == 1 and runner.calls[0][1].parameters["model_type"] == "gradient_boosting"
    assert sorted(states[-1].coalesced_from) == sorted(ids[:4]) and states[-1].coalesced_count == 4
    assert processor.s.dead_letters.count() == 0


def test_the_latest_waits_while_a_run_for_its_key_is_in_flight(processor: Processor, runner: Any) -> None:
    _, deliveries = send_burst(processor, 1)
    processor.s.states.client.set(keys.coalesce_running_key(KEY), "an-earlier-request", ex=60)

    state = processor.handle(deliveries[0])

    assert state.status is Status.QUEUED and runner.calls == []
    assert processor.s.schedule.pending() == 1, "deferred through the retry schedule, never dropped"
    processor.s.states.client.delete(keys.coalesce_running_key(KEY))  # that run ended
    assert processor.handle(deliveries[0]).status is Status.SUCCEEDED


def test_the_in_flight_lock_is_held_during_the_run_and_freed_after(processor: Processor, runner: Any) -> None:
    ids, deliveries = send_burst(processor, 1)
    seen: list[Any] = []
    original = runner.run

    def run(*args: Any, **kwargs: Any) -> Any:
        client = processor.s.states.client
        seen.append((client.get(keys.coalesce_running_key(KEY)), client.ttl(keys.coalesce_running_key(KEY))))
        return original(*args, **kwargs)

    runner.run = run
    processor.handle(deliveries[0])

    assert seen[0][0] == ids[0].encode() and 0 < seen[0][1] <= processor.s.settings.lease_timeout
    assert processor.s.states.client.get(keys.coalesce_running_key(KEY)) is None


def test_a_failed_latest_frees_the_key_for_the_next_alert(processor: Processor, runner: Any) -> None:
    from worker.runner import RunOutcome

    runner.script = [RunOutcome("r-1", "n", "failed")]
    _, first = send_burst(processor, 1)
    assert processor.handle(first[0]).status is Status.FAILED
    _, second = send_burst(processor, 1)
    assert processor.handle(second[-1]).status is Status.SUCCEEDED


def test_version_one_requests_are_still_read_and_cannot_carry_a_coalescing_key() -> None:
    old = decode_request(json.dumps({"schema_version": 1, "pipeline_name": "training_pipeline"}))
    assert old.schema_version == 1 and old.coalesce_key is None
    with pytest.raises(ValidationError, match="needs schema_version 2"):
        TriggerRequest(pipeline_name="p", schema_version=1, coalesce_key="k")


def test_every_run_carries_why_it_started(processor: Processor, runner: Any) -> None:
    request = TriggerRequest(
        request_id="why-1",
        pipeline_name="training_pipeline",
        source="drift-monitor",
        idempotency_key="drift:churn:2026-11-26",
        coalesce_key=KEY,
        metadata={"drift": {"drifted": ["mean radius"], "share": 0.1}},
    )
    from producers.contract import encode_request

    processor.handle(Delivery(raw=encode_request(request), task_id="why-1"))

    (provenance,) = runner.provenances
    assert provenance.tags == ("trigger-source:drift-monitor",)
    assert provenance.metadata == {
        "trigger_request_id": "why-1",
        "trigger_source": "drift-monitor",
        "trigger_idempotency_key": "drift:churn:2026-11-26",
        "trigger_coalesce_key": KEY,
        "trigger_metadata": {"drift": {"drifted": ["mean radius"], "share": 0.1}},
    }

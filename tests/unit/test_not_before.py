"""The worker's `not_before` admission: an early message is deferred until its time, never run early."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from producers import keys
from producers.contract import TriggerRequest, encode_request
from producers.state import RequestState, Status
from worker.admission import Verdict
from worker.not_before import NotBefore
from worker.processing import Delivery, Processor

NOW = 1_900_000_000.0


def request_at(seconds_from_now: float | None) -> TriggerRequest:
    when = None if seconds_from_now is None else datetime.fromtimestamp(NOW + seconds_from_now, timezone.utc)
    return TriggerRequest(pipeline_name="training_pipeline", not_before=when)


def verdict(seconds_from_now: float | None) -> Verdict:
    request = request_at(seconds_from_now)
    return NotBefore(clock=lambda: NOW).decide(request, RequestState.queued(request))


def test_no_not_before_or_a_due_one_is_admitted() -> None:
    assert verdict(None).kind == "admit"
    assert verdict(-3600).kind == "admit", "long due"
    assert verdict(0.5).kind == "admit", "due within the tolerance"


def test_an_early_request_is_deferred_until_its_time() -> None:
    early = verdict(600)
    assert early.kind == "defer" and early.delay == 600
    assert "not to run before" in early.reason


def test_a_raw_push_before_its_time_starts_nothing_and_waits_in_the_retry_schedule(
    processor: Processor, runner: Any
) -> None:
    when = datetime.now(timezone.utc) + timedelta(minutes=10)
    request = TriggerRequest(pipeline_name="training_pipeline", not_before=when)

    state = processor.handle(Delivery(raw=encode_request(request), task_id=request.request_id))

    assert state.status is Status.QUEUED and state.attempts == 0, "deferred, no attempt burnt"
    assert runner.calls == [], "nothing ran"
    client = processor.s.states.client
    [(envelope, due)] = client.zrange(keys.retry_schedule_key(processor.s.settings.queue), 0, -1, withscores=True)
    assert abs(due - when.timestamp()) < 1
    [raw], _, _ = json.loads(base64.b64decode(json.loads(envelope)["body"]))
    assert TriggerRequest.model_validate_json(raw) == request, "the same request waits"

"""Decisions a copy makes under the lease: never over a live holder, never keeping a failed request's key."""

from __future__ import annotations

from typing import Any

import pytest

from producers.state import RequestState, Status
from tests.unit.test_processing import deliver, make_request
from worker.errors import StoreUnavailable
from worker.processing import Processor


def running_elsewhere(processor: Processor, request_id: str, key: str | None = None, seen: bool = True) -> Any:
    request = make_request(request_id=request_id, idempotency_key=key)
    state = RequestState.queued(request).advance(
        Status.RUNNING, attempts=1, run_name=f"training_pipeline-{request_id}-1"
    )
    processor.s.states.put(state)
    if seen:
        processor.s.leases.client.set(f"zenml-trigger:lease-seen:{request_id}", processor.s.leases.clock())
    return request


def test_a_copy_that_claimed_the_key_of_a_request_that_just_failed_frees_it(
    processor: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = make_request(request_id="f-1", idempotency_key="drift:k")
    failed = RequestState.queued(request).advance(Status.FAILED, attempts=1)
    processor.s.states.put(failed)
    reads = iter([RequestState.queued(request).advance(Status.RUNNING, attempts=1)])
    original = processor.s.states.get
    monkeypatch.setattr(processor.s.states, "get", lambda rid: next(reads, None) or original(rid))

    state = processor.handle(deliver(request))  # read `running`, claimed the freed key, then found `failed`

    assert state.status is Status.FAILED
    assert processor.s.claims.claim("drift:k", "next-alert") == "next-alert", "the key is free for the next alert"


def test_a_copy_waits_behind_a_live_holder_without_asking_zenml(processor: Processor, runner: Any) -> None:
    def broken_find(*_: Any) -> Any:
        raise AssertionError("a live holder's run must not be looked up, let alone settled")

    runner.find = broken_find
    request = running_elsewhere(processor, "live-1")

    state = processor.handle(deliver(request))

    assert state.status is Status.RUNNING and processor.s.schedule.pending() == 1 and runner.calls == []


def test_a_store_error_while_settling_a_dead_holders_attempt_is_retried_not_dead_lettered(
    processor: Processor, runner: Any
) -> None:
    def store_down(*_: Any) -> Any:
        raise StoreUnavailable("database is locked")

    runner.find = store_down
    request = running_elsewhere(processor, "dead-1", seen=False)

    state = processor.handle(deliver(request))

    assert state.status is Status.RETRYING and state.error is not None and state.error.type == "StoreUnavailable"
    assert processor.s.dead_letters.count() == 0


def test_a_template_store_blip_defers_the_request(processor: Processor, monkeypatch: pytest.MonkeyPatch) -> None:
    def store_down(*_: Any) -> Any:
        raise StoreUnavailable("ZenML store unavailable while resolving template nightly")

    monkeypatch.setattr(processor, "_resolve", store_down)
    request = make_request(request_id="blip-2")

    state = processor.handle(deliver(request))

    assert state.status is Status.QUEUED and processor.s.schedule.pending() == 1
    assert processor.s.dead_letters.count() == 0

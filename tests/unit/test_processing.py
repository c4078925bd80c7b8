"""The whole trigger path, without Celery: decode -> deduplicate -> resolve -> validate -> run -> record."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from structlog.testing import capture_logs

from producers.contract import TriggerRequest, encode_request, normalize_steps
from producers.logs import merge_context
from producers.state import RequestState, Status
from worker.errors import PipelineRunFailed, StoreUnavailable
from worker.processing import Delivery, Processor
from worker.runner import RunOutcome
from worker.transport import envelope_problem, safe_loads


def make_request(**fields: Any) -> TriggerRequest:
    fields.setdefault("pipeline_name", "training_pipeline")
    fields["steps"] = normalize_steps(fields.get("steps"))
    return TriggerRequest(**fields)


def deliver(request: TriggerRequest, **kwargs: Any) -> Delivery:
    return Delivery(raw=encode_request(request), task_id=request.request_id, **kwargs)


def events(logs: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in logs]


def stored(processor: Processor, request_id: str) -> RequestState:
    state = processor.s.states.get(request_id)
    assert state is not None
    return state


class TestSuccess:
    def test_valid_request_succeeds_with_metrics_and_run_id(self, processor: Processor, runner: Any) -> None:
        request = make_request(request_id="ok-1", steps={"train_model": {"n_estimators": 10}}, source="test")
        with capture_logs(processors=[merge_context]) as logs:
            state = processor.handle(deliver(request))
        assert state.status is Status.SUCCEEDED
        assert state.run_id == "run-1"
        assert state.metrics == {"accuracy": 0.9}
        assert state.attempts == 1
        assert state.error is None
        assert state.finished_at is not None
        assert stored(processor, "ok-1") == state
        assert events(logs) == ["trigger.received", "trigger.started", "trigger.succeeded"]
        assert all(entry["request_id"] == "ok-1" for entry in logs)
        assert all(entry["pipeline"] == "training_pipeline" and entry["source"] == "test" for entry in logs)
        assert processor.s.dead_letters.count() == 0

    def test_runner_gets_the_validated_plan(self, processor: Processor, runner: Any) -> None:
        request = make_request(request_id="ok-2", steps={"train_model": {"model_type": "gradient_boosting"}})
        processor.handle(deliver(request))
        [(name, plan, run_name)] = runner.calls
        assert name == "training_pipeline"
        assert plan.parameters == {"model_type": "gradient_boosting"}
        assert plan.steps == {}
        assert run_name == "training_pipeline-ok-2-1"

    def test_running_state_is_recorded_before_the_run(self, processor: Processor, runner: Any) -> None:
        seen: list[RequestState] = []
        original = runner.run

        def spy(entry: Any, plan: Any, run_name: str, **kwargs: Any) -> Any:
            seen.append(stored(processor, "ok-3"))
            return original(entry, plan, run_name, **kwargs)

        runner.run = spy
        processor.handle(deliver(make_request(request_id="ok-3")))
        assert seen[0].status is Status.RUNNING
        assert seen[0].run_name == "training_pipeline-ok-3-1"
        assert seen[0].started_at is not None

    def test_redelivered_terminal_request_is_not_run_again(self, processor: Processor, runner: Any) -> None:
        delivery = deliver(make_request(request_id="ok-4"))
        first = processor.handle(delivery)
        with capture_logs() as logs:
            second = processor.handle(delivery)
        assert len(runner.calls) == 1
        assert second.status is Status.SUCCEEDED
        assert second.run_id == first.run_id
        assert events(logs) == ["trigger.received", "trigger.skipped"]
        assert logs[-1]["reason"] == "already finished"

    def test_interrupted_run_that_finished_is_recovered_not_rerun(self, processor: Processor, runner: Any) -> None:
        request = make_request(request_id="ok-5")
        running = RequestState.queued(request).advance(Status.RUNNING, attempts=1, run_name="training_pipeline-ok-5-1")
        processor.s.states.put(running)
        run_name = "training_pipeline-ok-5-1"
        runner.found[run_name] = RunOutcome("zen-1", run_name, "completed", {"a": 1})
        with capture_logs() as logs:
            state = processor.handle(deliver(request))
        assert runner.calls == []
        assert state.status is Status.SUCCEEDED
        assert state.run_id == "zen-1"
        assert "trigger.recovered" in events(logs)


class TestRejection:
    def test_invalid_parameters_are_rejected_and_dead_lettered_without_a_run(
        self, processor: Processor, runner: Any
    ) -> None:
        request = make_request(
            request_id="bad-1", parameters={"nope": 1}, steps={"train_model": {"n_estimators": "10"}}
        )
        with capture_logs() as logs:
            state = processor.handle(deliver(request))
        assert runner.calls == []
        assert state.status is Status.REJECTED
        assert state.error is not None
        assert state.error.type == "InvalidParameters"
        assert {d["path"] for d in state.error.details} == {
            "parameters.nope",
            "steps.train_model.parameters.n_estimators",
        }
        letter = processor.s.dead_letters.get("bad-1")
        assert letter is not None
        assert letter.status == "rejected"
        assert TriggerRequest.model_validate_json(letter.raw_bytes()) == request
        assert events(logs) == ["trigger.received", "trigger.rejected"]
        assert logs[-1]["error_type"] == "InvalidParameters"

    def test_unknown_pipeline_is_rejected_not_imported(self, processor: Processor, runner: Any) -> None:
        state = processor.handle(deliver(make_request(request_id="bad-2", pipeline_name="os:system")))
        assert state.status is Status.REJECTED
        assert state.error is not None
        assert state.error.type == "UnknownPipeline"
        assert state.error.details[0]["path"] == "pipeline_name"
        assert "training_pipeline" in state.error.details[0]["problem"]
        assert runner.calls == []

    def test_unknown_template_is_rejected(self, processor: Processor) -> None:
        state = processor.handle(deliver(make_request(request_id="bad-3", pipeline_name=None, template="nightly")))
        assert state.status is Status.REJECTED
        assert state.error is not None
        assert state.error.type == "UnknownTemplate"
        assert state.template == "nightly"

    def test_malformed_bytes_are_rejected_under_a_generated_id(self, processor: Processor, runner: Any) -> None:
        raw = b"\xff\xfenot a request"
        with capture_logs() as logs:
            state = processor.handle(Delivery(raw=raw))
        assert state.status is Status.REJECTED
        assert state.request_id.startswith("malformed-")
        assert state.error is not None
        assert state.error.type == "MalformedRequest"
        letter = processor.s.dead_letters.get(state.request_id)
        assert letter is not None
        assert letter.raw_bytes() == raw
        assert stored(processor, state.request_id).status is Status.REJECTED
        assert events(logs) == ["trigger.received", "trigger.rejected"]
        assert runner.calls == []

    def test_malformed_request_is_recorded_under_its_delivery_id_with_the_claimed_id(
        self, processor: Processor
    ) -> None:
        raw = json.dumps({"request_id": "bad-4", "pipeline_name": 5}).encode()
        state = processor.handle(Delivery(raw=raw, task_id="task-4"))
        assert state.request_id == "task-4"
        assert state.claimed_id == "bad-4"
        assert processor.s.states.get("bad-4") is None
        assert state.error is not None
        assert [d["path"] for d in state.error.details] == ["pipeline_name"]

    def test_malformed_without_id_uses_the_task_id(self, processor: Processor) -> None:
        state = processor.handle(Delivery(raw="[1, 2]", task_id="task-5"))
        assert state.request_id == "task-5"
        assert state.status is Status.REJECTED

    def test_oversized_payload_is_rejected(
        self, make_services: Callable[..., Any], worker_settings: Any, runner: Any
    ) -> None:
        settings = worker_settings.model_copy(update={"max_payload_bytes": 200})
        processor = Processor(make_services(runner, settings))
        request = make_request(request_id="big-1", metadata={"blob": "x" * 500})
        state = processor.handle(deliver(request))
        assert state.status is Status.REJECTED
        assert state.error is not None
        assert state.error.type == "PayloadTooLarge"
        assert runner.calls == []

    def test_quarantined_garbage_from_the_transport_is_rejected_with_its_bytes(self, processor: Processor) -> None:
        raw = b"\x80\x81 binary junk"
        message = safe_loads(raw, processor.s.settings.queue)
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        state = processor.handle(Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs))
        assert state.status is Status.REJECTED
        assert state.request_id == message["headers"]["id"]
        assert state.error is not None
        assert "not JSON" in state.error.message
        letter = processor.s.dead_letters.get(state.request_id)
        assert letter is not None
        assert letter.raw_bytes() == raw

    def test_deeply_nested_json_is_rejected_not_raised(self, processor: Processor) -> None:
        state = processor.handle(Delivery(raw=b"[" * 5000 + b"]" * 5000, task_id="deep-1"))
        assert state.status is Status.REJECTED

    def test_redelivered_malformed_message_is_not_dead_lettered_twice(self, processor: Processor) -> None:
        delivery = Delivery(raw=b"junk", task_id="task-6")
        processor.handle(delivery)
        with capture_logs() as logs:
            state = processor.handle(delivery)
        assert state.status is Status.REJECTED
        assert events(logs) == ["trigger.skipped"]
        assert processor.s.dead_letters.count() == 1


class TestDuplicates:
    def test_second_request_with_the_same_key_is_a_duplicate(self, processor: Processor, runner: Any) -> None:
        first = make_request(request_id="dup-1", idempotency_key="drift:churn:2026-11-24")
        second = make_request(request_id="dup-2", idempotency_key="drift:churn:2026-11-24")
        assert processor.handle(deliver(first)).status is Status.SUCCEEDED
        with capture_logs() as logs:
            state = processor.handle(deliver(second))
        assert state.status is Status.DUPLICATE
        assert state.duplicate_of == "dup-1"
        assert len(runner.calls) == 1
        assert events(logs) == ["trigger.received", "trigger.duplicate"]
        assert logs[-1]["duplicate_of"] == "dup-1"
        assert processor.s.dead_letters.count() == 0
        assert stored(processor, "dup-2").status is Status.DUPLICATE


class TestFailures:
    def test_failed_run_is_recorded_dead_lettered_and_frees_the_key(self, processor: Processor, runner: Any) -> None:
        runner.script = [PipelineRunFailed("evaluate exploded", run_id="zen-9", run_name="r")]
        request = make_request(request_id="fail-1", idempotency_key="k-1")
        with capture_logs() as logs:
            state = processor.handle(deliver(request))
        assert state.status is Status.FAILED
        assert state.run_id == "zen-9"
        assert state.error is not None
        assert state.error.type == "PipelineRunFailed"
        assert "evaluate exploded" in state.error.message
        assert processor.s.dead_letters.get("fail-1") is not None
        assert events(logs)[-1] == "trigger.failed"
        retry = make_request(request_id="fail-2", idempotency_key="k-1")
        assert processor.handle(deliver(retry)).status is Status.SUCCEEDED
        assert len(runner.calls) == 2

    def test_run_that_ends_failed_is_failed(self, processor: Processor, runner: Any) -> None:
        runner.script = [RunOutcome("zen-10", "r", "failed")]
        state = processor.handle(deliver(make_request(request_id="fail-3")))
        assert state.status is Status.FAILED
        assert state.run_id == "zen-10"
        assert processor.s.dead_letters.get("fail-3") is not None

    def test_unexpected_exception_is_an_internal_error_dead_lettered(self, processor: Processor, runner: Any) -> None:
        runner.script = [RuntimeError("a bug")]
        with capture_logs() as logs:
            state = processor.handle(deliver(make_request(request_id="bug-1", idempotency_key="k-2")))
        assert state.status is Status.DEAD_LETTERED
        assert state.error is not None
        assert state.error.type == "InternalError"
        assert "RuntimeError: a bug" in state.error.message
        assert events(logs)[-2:] == ["trigger.internal_error", "trigger.dead_lettered"]
        letter = processor.s.dead_letters.get("bug-1")
        assert letter is not None
        assert letter.status == "dead_lettered"
        assert processor.s.claims.claim("k-2", "bug-2") == "bug-2", "the key is released"


class TestRetries:
    def test_transient_error_schedules_a_retry(self, processor: Processor, runner: Any) -> None:
        runner.script = [StoreUnavailable("zenml store down")]
        request = make_request(request_id="tr-1")
        with capture_logs() as logs:
            state = processor.handle(deliver(request))
        assert state.status is Status.RETRYING
        assert state.attempts == 1
        assert state.next_attempt_at is not None
        assert state.error is not None
        assert state.error.type == "StoreUnavailable"
        assert stored(processor, "tr-1").status is Status.RETRYING
        assert events(logs)[-1] == "trigger.retrying"
        assert processor.s.dead_letters.count() == 0

        [(envelope, due)] = processor.s.schedule.client.zrange(processor.s.schedule.key, 0, -1, withscores=True)
        assert due == pytest.approx(state.next_attempt_at.timestamp())
        message = json.loads(envelope)
        assert envelope_problem(message) is None
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert TriggerRequest.model_validate_json(args[0]) == request
        assert kwargs == {"attempt": 2}
        assert message["headers"]["id"] == "tr-1"

    def test_retry_delay_follows_the_policy(
        self, processor: Processor, runner: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = 1_900_000_000.0
        monkeypatch.setattr("worker.recording.time", SimpleNamespace(time=lambda: now, monotonic=time.monotonic))
        runner.script = [StoreUnavailable()]
        state = processor.handle(deliver(make_request(request_id="tr-2")))
        [(_, due)] = processor.s.schedule.client.zrange(processor.s.schedule.key, 0, -1, withscores=True)
        base = processor.s.settings.retry_base_delay
        assert base / 2 <= due - now <= base
        assert state.next_attempt_at == datetime.fromtimestamp(due, timezone.utc)

    def test_stale_copy_while_retrying_is_skipped(self, processor: Processor, runner: Any) -> None:
        runner.script = [StoreUnavailable()]
        request = make_request(request_id="tr-3")
        processor.handle(deliver(request))
        with capture_logs() as logs:
            state = processor.handle(deliver(request))
        assert state.status is Status.RETRYING
        assert len(runner.calls) == 1
        assert logs[-1]["event"] == "trigger.skipped"

    def test_gives_up_after_max_attempts(self, processor: Processor, runner: Any) -> None:
        max_attempts = processor.s.settings.max_attempts
        runner.script = [StoreUnavailable("down")] * max_attempts
        request = make_request(request_id="tr-4", idempotency_key="k-4")
        state = processor.handle(deliver(request))
        for attempt in range(2, max_attempts + 1):
            assert state.status is Status.RETRYING
            state = processor.handle(deliver(request, attempt=attempt))
        assert state.status is Status.DEAD_LETTERED
        assert state.attempts == max_attempts
        assert len(runner.calls) == max_attempts
        assert [call[2] for call in runner.calls] == [f"training_pipeline-tr-4-{n}" for n in range(1, max_attempts + 1)]
        letter = processor.s.dead_letters.get("tr-4")
        assert letter is not None
        assert letter.attempts == max_attempts
        assert letter.error.type == "StoreUnavailable"
        assert processor.s.claims.claim("k-4", "other") == "other"

    def test_retry_that_then_succeeds(self, processor: Processor, runner: Any) -> None:
        runner.script = [StoreUnavailable()]
        request = make_request(request_id="tr-5")
        processor.handle(deliver(request))
        state = processor.handle(deliver(request, attempt=2))
        assert state.status is Status.SUCCEEDED
        assert state.attempts == 2
        assert state.error is None
        assert state.next_attempt_at is None

    def test_per_pipeline_override_limits_attempts(
        self, make_services: Callable[..., Any], worker_settings: Any, runner: Any
    ) -> None:
        from worker.settings import RetryOverride

        settings = worker_settings.model_copy(
            update={"retry_overrides": {"training_pipeline": RetryOverride(max_attempts=1)}}
        )
        processor = Processor(make_services(runner, settings))
        runner.script = [StoreUnavailable()]
        assert processor.handle(deliver(make_request(request_id="tr-6"))).status is Status.DEAD_LETTERED


class TestAccounting:
    def test_every_request_ends_in_one_recorded_terminal_state(
        self, processor: Processor, runner: Any, fake_redis: fakeredis.FakeRedis
    ) -> None:
        runner.script = [None, PipelineRunFailed("x"), RuntimeError("y")]
        deliveries = [
            deliver(make_request(request_id="acc-1", idempotency_key="same")),
            deliver(make_request(request_id="acc-2", idempotency_key="same")),
            deliver(make_request(request_id="acc-3")),
            deliver(make_request(request_id="acc-4")),
            deliver(make_request(request_id="acc-5", parameters={"x": 1})),
            Delivery(raw=b"junk", task_id="acc-6"),
        ]
        statuses = [processor.handle(delivery).status for delivery in deliveries]
        assert statuses == [
            Status.SUCCEEDED,
            Status.DUPLICATE,
            Status.FAILED,
            Status.DEAD_LETTERED,
            Status.REJECTED,
            Status.REJECTED,
        ]
        for n, status in enumerate(statuses, start=1):
            assert stored(processor, f"acc-{n}").status is status
        letters = {letter.request_id for letter in processor.s.dead_letters.list()}
        assert letters == {"acc-3", "acc-4", "acc-5", "acc-6"}

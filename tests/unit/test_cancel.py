"""Cancel: the one Lua call that ends a request `cancelled`, and every copy of its message starting nothing after."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import fakeredis
import pytest

from producers import TriggerClient, keys
from producers.async_client import AsyncTriggerClient
from producers.errors import NotCancellable, UnknownRequest
from producers.run_stop import StopResult
from producers.settings import ProducerSettings
from producers.state import TERMINAL, RequestState, Status
from worker.admission import ADMIT, Verdict
from worker.errors import StoreUnavailable
from worker.processing import Delivery, Processor


def client_of(processor: Processor) -> TriggerClient:
    return TriggerClient(processor.s.states.client, ProducerSettings(queue=processor.s.settings.queue))


def queued_deliveries(processor: Processor) -> list[Delivery]:
    """The task messages on the queue, oldest first, as the worker receives them."""
    return [delivery_of(e) for e in processor.s.states.client.lrange(processor.s.settings.queue, 0, -1)[::-1]]


def delivery_of(envelope: bytes) -> Delivery:
    message = json.loads(envelope)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    return Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs)


def counts(processor: Processor) -> dict[bytes, bytes]:
    return processor.s.states.client.hgetall(keys.outcome_counts_key(processor.s.settings.queue))


class Stopper:
    """A `RunStopper` that answers as told and remembers what it was asked to stop."""

    def __init__(self, stopped: bool, message: str) -> None:
        self.result, self.asked = StopResult(stopped, message), []

    def stop(self, state: RequestState) -> StopResult:
        self.asked.append(state.request_id)
        return self.result


def test_cancelled_is_a_terminal_status() -> None:
    assert Status.CANCELLED in TERMINAL and Status.CANCELLED.terminal


class TestQueued:
    def test_a_queued_request_ends_cancelled_with_who_when_and_why(self, processor: Processor) -> None:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline")

        state = client.cancel(request_id, reason="wrong data", by="ops@laptop")

        assert state.status is Status.CANCELLED and state.finished_at is not None
        assert state.cancelled is not None and state.cancelled.by == "ops@laptop"
        assert state.cancelled.reason == "wrong data" and state.cancelled.run_stop is None
        assert client.status(request_id) == state
        redis_ = processor.s.states.client
        assert redis_.zcard(keys.waiting_key(processor.s.settings.queue)) == 0, "no longer waiting"
        assert counts(processor) == {b"cancelled:other": b"1"}, "counted once, as no catalog names the pipeline"

    def test_who_defaults_to_the_os_user_at_this_host(self, processor: Processor) -> None:
        client = client_of(processor)
        state = client.cancel(client.trigger("training_pipeline"))
        assert state.cancelled is not None and "@" in state.cancelled.by

    def test_the_queued_copy_then_starts_nothing(self, processor: Processor, runner: Any) -> None:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline", idempotency_key="k-1", coalesce_key="c-1")
        client.cancel(request_id)

        [delivery] = queued_deliveries(processor)
        assert processor.end_on_arrival(delivery.task_id or "", str(delivery.raw), {}) is False
        state = processor.handle(delivery)

        assert state.status is Status.CANCELLED and runner.calls == []
        assert counts(processor) == {b"cancelled:other": b"1"}

    def test_it_releases_the_claims_it_holds_and_only_those(self, processor: Processor) -> None:
        client, redis_ = client_of(processor), processor.s.states.client
        mine = client.trigger("training_pipeline", idempotency_key="k-2", coalesce_key="c-2")
        redis_.set(keys.idempotency_key("k-2"), mine)
        redis_.set(keys.coalesce_running_key("c-2"), mine)
        other = client.trigger("training_pipeline", idempotency_key="k-3", coalesce_key="c-3")
        redis_.set(keys.idempotency_key("k-3"), "someone-else")
        redis_.set(keys.coalesce_latest_key("c-3"), "a-newer-one")

        client.cancel(mine)
        client.cancel(other)

        assert redis_.get(keys.idempotency_key("k-2")) is None
        assert redis_.get(keys.coalesce_latest_key("c-2")) is None
        assert redis_.get(keys.coalesce_running_key("c-2")) is None
        assert redis_.get(keys.idempotency_key("k-3")) == b"someone-else"
        assert redis_.get(keys.coalesce_latest_key("c-3")) == b"a-newer-one"

    def test_a_request_with_the_same_key_runs_after_the_cancel(self, processor: Processor, runner: Any) -> None:
        client = client_of(processor)
        first = client.trigger("training_pipeline", idempotency_key="k-4")
        client.cancel(first)
        second = client.trigger("training_pipeline", idempotency_key="k-4")

        states = [processor.handle(delivery) for delivery in queued_deliveries(processor)]

        assert [s.status for s in states] == [Status.CANCELLED, Status.SUCCEEDED]
        assert states[1].request_id == second and len(runner.calls) == 1


class TestScheduled:
    def test_a_retrying_request_leaves_the_retry_schedule(self, processor: Processor, runner: Any) -> None:
        runner.script = [StoreUnavailable("store down")]
        client = client_of(processor)
        request_id = client.trigger("training_pipeline")
        [delivery] = queued_deliveries(processor)
        assert processor.handle(delivery).status is Status.RETRYING
        assert processor.s.schedule.pending() == 1

        state = client.cancel(request_id, reason="not needed")

        assert state.status is Status.CANCELLED and state.next_attempt_at is None
        assert state.attempts == 1 and state.error is not None, "the attempt it made stays on record"
        assert processor.s.schedule.pending() == 0
        index = keys.scheduled_envelopes_key(processor.s.settings.queue, request_id)
        assert not processor.s.states.client.exists(index)
        assert processor.handle(Delivery(raw=delivery.raw, task_id=request_id, attempt=2)).status is Status.CANCELLED
        assert len(runner.calls) == 1

    def test_a_deferred_request_leaves_the_retry_schedule(self, processor: Processor, runner: Any) -> None:
        client, redis_ = client_of(processor), processor.s.states.client
        request_id = client.trigger("training_pipeline", coalesce_key="c-5")
        redis_.set(keys.coalesce_running_key("c-5"), "an-earlier-request", ex=60)
        [delivery] = queued_deliveries(processor)
        assert processor.handle(delivery).status is Status.QUEUED
        assert processor.s.schedule.pending() == 1, "deferred behind the run in flight"

        client.cancel(request_id)

        assert processor.s.schedule.pending() == 0
        assert redis_.get(keys.coalesce_running_key("c-5")) == b"an-earlier-request", "not its lock"
        assert processor.handle(delivery).status is Status.CANCELLED and runner.calls == []

    def test_only_the_cancelled_requests_envelopes_leave(self, processor: Processor, runner: Any) -> None:
        runner.script = [StoreUnavailable(), StoreUnavailable()]
        client = client_of(processor)
        kept, cancelled = client.trigger("training_pipeline"), client.trigger("training_pipeline")
        for delivery in queued_deliveries(processor):
            processor.handle(delivery)
        assert processor.s.schedule.pending() == 2

        client.cancel(cancelled)

        [envelope] = processor.s.states.client.zrange(processor.s.schedule.key, 0, -1)
        assert json.loads(envelope)["headers"]["id"] == kept

    def test_a_released_envelope_leaves_its_requests_set(self, processor: Processor, runner: Any) -> None:
        runner.script = [StoreUnavailable()]
        client = client_of(processor)
        request_id = client.trigger("training_pipeline")
        processor.handle(queued_deliveries(processor)[0])
        index = keys.scheduled_envelopes_key(processor.s.settings.queue, request_id)
        assert processor.s.states.client.scard(index) == 1
        assert processor.s.states.client.ttl(index) > 0

        assert processor.s.schedule.release_due(now=10**10) == 1

        assert processor.s.states.client.scard(index) == 0


class TestRaces:
    def test_cancelled_after_the_early_check_frees_the_key_the_copy_then_claims(
        self, processor: Processor, runner: Any
    ) -> None:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline", idempotency_key="k-6")
        check = processor.early.check

        def check_then_cancel(request: Any) -> Any:
            verdict = check(request)
            client.cancel(request_id)
            return verdict

        processor.early.check = check_then_cancel  # type: ignore[method-assign]
        state = processor.handle(queued_deliveries(processor)[0])

        assert state.status is Status.CANCELLED and runner.calls == []
        assert processor.s.states.client.get(keys.idempotency_key("k-6")) is None

    def test_cancelled_while_the_copy_waits_for_its_lease(self, processor: Processor, runner: Any) -> None:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline", idempotency_key="k-7")
        processor.s.checkpoint = lambda point, rid: client.cancel(rid) if point == "admitted" else None

        state = processor.handle(queued_deliveries(processor)[0])

        assert state.status is Status.CANCELLED and runner.calls == []
        assert processor.s.states.client.get(keys.idempotency_key("k-7")) is None
        assert client.status(request_id).status is Status.CANCELLED

    def test_cancelled_between_admission_and_start_the_start_is_refused(
        self, processor: Processor, runner: Any
    ) -> None:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline", coalesce_key="c-8")

        class CancelOnAdmit:
            def decide(self, request: Any, state: RequestState) -> Verdict:
                client.cancel(request.request_id, reason="changed my mind")
                return ADMIT

            def release(self, request: Any) -> None:
                return None

        processor.admissions = (*processor.admissions, CancelOnAdmit())
        state = processor.handle(queued_deliveries(processor)[0])

        assert runner.calls == [], "the fenced write of `running` refused to start a cancelled request"
        assert state.status is Status.CANCELLED and client.status(request_id).status is Status.CANCELLED
        assert processor.s.states.client.get(keys.coalesce_running_key("c-8")) is None
        assert counts(processor) == {b"cancelled:other": b"1"}

    def test_a_state_that_moved_on_is_read_again_not_overwritten(self, processor: Processor) -> None:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline")
        redis_ = processor.s.states.client
        read = redis_.get(keys.state_key(request_id))
        original = redis_.get

        def get_then_finish(name: Any) -> Any:
            value = original(name)
            if name == keys.state_key(request_id) and value == read:  # the worker ends it right after our read
                done = RequestState.model_validate_json(value).advance(Status.SUCCEEDED)
                redis_.set(name, done.to_json())
            return value

        redis_.get = get_then_finish  # type: ignore[method-assign]
        with pytest.raises(NotCancellable, match="already ended succeeded"):
            client.cancel(request_id)
        redis_.get = original  # type: ignore[method-assign]
        assert client.status(request_id).status is Status.SUCCEEDED
        assert counts(processor) == {}


class TestRefusals:
    def test_a_request_that_ended_cannot_be_cancelled(self, processor: Processor) -> None:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline")
        processor.handle(queued_deliveries(processor)[0])

        with pytest.raises(NotCancellable, match=f"request {request_id} already ended succeeded"):
            client.cancel(request_id)
        assert client.status(request_id).status is Status.SUCCEEDED

    def test_cancelling_twice_refuses_the_second_and_counts_once(self, processor: Processor) -> None:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline")
        client.cancel(request_id)
        with pytest.raises(NotCancellable, match="already ended cancelled"):
            client.cancel(request_id)
        assert counts(processor) == {b"cancelled:other": b"1"}

    def test_an_unknown_id_is_unknown(self, processor: Processor) -> None:
        with pytest.raises(UnknownRequest, match="no request with id 'nope' is known"):
            client_of(processor).cancel("nope")


class TestRunning:
    def running(self, processor: Processor) -> tuple[TriggerClient, str]:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline")
        state = client.status(request_id).advance(Status.RUNNING, run_name=f"training_pipeline-{request_id}-1")
        processor.s.states.put(state)
        return client, request_id

    def test_a_run_the_orchestrator_cannot_stop_is_left_alone(self, processor: Processor) -> None:
        client, request_id = self.running(processor)
        stopper = Stopper(False, "ZenML run r-1 was left alone: the local orchestrator cannot stop it")

        with pytest.raises(NotCancellable, match=f"request {request_id} is running and was not cancelled: ZenML run"):
            client.cancel(request_id, stopper=stopper)

        assert stopper.asked == [request_id]
        assert client.status(request_id).status is Status.RUNNING and counts(processor) == {}

    def test_a_stopped_run_ends_the_request_cancelled_with_what_zenml_said(self, processor: Processor) -> None:
        client, request_id = self.running(processor)
        stopper = Stopper(True, "ZenML was asked to stop run r-1")

        state = client.cancel(request_id, reason="runaway", stopper=stopper)

        assert state.status is Status.CANCELLED
        assert state.cancelled is not None and state.cancelled.run_stop == "ZenML was asked to stop run r-1"
        assert client.status(request_id).status is Status.CANCELLED

    def test_the_default_stopper_says_when_no_run_exists_yet(self, processor: Processor) -> None:
        client = client_of(processor)
        request_id = client.trigger("training_pipeline")
        processor.s.states.put(client.status(request_id).advance(Status.RUNNING))
        with pytest.raises(NotCancellable, match="its run has not been created in ZenML yet"):
            client.cancel(request_id)


def test_the_async_client_cancels_the_same_way(processor: Processor) -> None:
    server = fakeredis.FakeServer()
    sync_redis = fakeredis.FakeRedis(server=server)
    settings = ProducerSettings()
    request_id = TriggerClient(sync_redis, settings).trigger("training_pipeline", idempotency_key="k-9")
    sync_redis.set(keys.idempotency_key("k-9"), request_id)

    async def cancel() -> RequestState:
        async with AsyncTriggerClient(fakeredis.aioredis.FakeRedis(server=server), settings) as client:
            state = await client.cancel(request_id, reason="async", by="app")
            with pytest.raises(NotCancellable, match="already ended cancelled"):
                await client.cancel(request_id)
            return state

    state = asyncio.run(cancel())
    assert state.status is Status.CANCELLED and state.cancelled is not None and state.cancelled.by == "app"
    assert sync_redis.get(keys.idempotency_key("k-9")) is None


def test_the_schedule_lists_envelopes_by_request_through_a_pipeline_too(fake_redis: fakeredis.FakeRedis) -> None:
    from producers.envelope import task_envelope
    from worker.schedule import RetrySchedule

    schedule, envelope = RetrySchedule(fake_redis, "q"), task_envelope(keys.TASK_NAME, "r-1", ["{}"], "q")
    pipe = fake_redis.pipeline()
    schedule.add(envelope, 5.0, pipe=pipe)
    pipe.execute()
    schedule.add("not an envelope", 6.0)

    assert schedule.pending() == 2
    assert fake_redis.smembers(keys.scheduled_envelopes_key("q", "r-1")) == {envelope.encode()}
    assert schedule.release_due(now=10.0) == 2 and fake_redis.llen("q") == 2, "an unlisted envelope is released too"
    assert not fake_redis.exists(keys.scheduled_envelopes_key("q", "r-1"))

"""Concurrency limits: the setting, which limit a run counts against, and the slot admission (fakeredis)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from pydantic import ValidationError

from producers import TriggerClient, keys
from producers.contract import TriggerRequest, encode_request
from producers.settings import ProducerSettings
from producers.state import RequestState, Status
from tests.unit.conftest import FakeTemplates
from worker.errors import StoreUnavailable
from worker.limits import JITTER, ConcurrencyLimits, limit_name
from worker.processing import Delivery, Processor
from worker.settings import WorkerSettings
from worker.sweeper import Sweeper
from worker.templates import Template

QUEUE = "zenml-triggers"
POLL = 2.0


def make_request(pipeline: str = "training_pipeline", **fields: Any) -> TriggerRequest:
    return TriggerRequest(pipeline_name=pipeline if "template" not in fields else None, **fields)


def state_of(request: TriggerRequest, pipeline: str | None = None, template_ref: str | None = None) -> RequestState:
    """The state the chain sees: the pipeline and template the request resolved to."""
    queued = RequestState.queued(request)
    return queued.model_copy(update={"pipeline_name": pipeline or request.pipeline_name, "template_ref": template_ref})


def hold_lease(client: fakeredis.FakeRedis, request: TriggerRequest) -> None:
    client.set(keys.lease_key(request.request_id), "some-worker", ex=60)


@pytest.fixture
def limits(fake_redis: fakeredis.FakeRedis) -> ConcurrencyLimits:
    return ConcurrencyLimits(fake_redis, {"training_pipeline": 1, "template:nightly": 2}, QUEUE, POLL)


def admitted(limits: ConcurrencyLimits, client: fakeredis.FakeRedis, request: TriggerRequest, **resolved: Any) -> bool:
    """Ask as the walk does: under the request's lease."""
    hold_lease(client, request)
    return limits.decide(request, state_of(request, **resolved)).kind == "admit"


class TestSetting:
    def test_parses_pipelines_and_templates(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TRIGGER_CONCURRENCY_LIMITS", '{"training_pipeline": 1, "template:nightly": 2}')

        assert WorkerSettings().concurrency_limits == {"training_pipeline": 1, "template:nightly": 2}

    def test_none_by_default(self) -> None:
        assert WorkerSettings().concurrency_limits == {}

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ('{"training_pipeline": 0}', "entry 'training_pipeline': the limit must be a whole number of runs"),
            ('{"training_pipeline": -2}', "at least 1, not -2"),
            ('{"training_pipeline": 1.5}', "not 1.5"),
            ('{"training_pipeline": true}', "not True"),
            ('{"training_pipeline": "2"}', "not '2'"),
            ('{"template:": 1}', "entry 'template:': template: must be followed by the template's name"),
            ('{" training_pipeline": 1}', "entry ' training_pipeline': the name must be a pipeline name"),
            ("[1]", "must be a JSON object"),
        ],
    )
    def test_a_bad_entry_is_named(self, monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
        monkeypatch.setenv("TRIGGER_CONCURRENCY_LIMITS", value)

        with pytest.raises(ValidationError) as raised:
            WorkerSettings()

        assert "concurrency_limits" in str(raised.value) and message in str(raised.value)


class TestWhichLimit:
    LIMITS = {"training_pipeline": 1, "template:nightly": 2}

    def test_a_template_limit_comes_first(self) -> None:
        assert limit_name(self.LIMITS, "training_pipeline", "nightly@3") == "template:nightly"

    def test_a_template_without_a_limit_counts_against_its_pipeline(self) -> None:
        assert limit_name(self.LIMITS, "training_pipeline", "weekly@1") == "training_pipeline"

    def test_unlimited(self) -> None:
        assert limit_name(self.LIMITS, "slow_pipeline", None) is None
        assert limit_name({}, "training_pipeline", "nightly@3") is None


class TestSlots:
    def test_over_the_limit_is_deferred_naming_the_holder(
        self, limits: ConcurrencyLimits, fake_redis: fakeredis.FakeRedis
    ) -> None:
        first, second = make_request(), make_request()
        assert admitted(limits, fake_redis, first)

        hold_lease(fake_redis, second)
        verdict = limits.decide(second, state_of(second))

        assert verdict.kind == "defer" and POLL * JITTER[0] <= verdict.delay <= POLL * JITTER[1]
        assert "'training_pipeline' (1) is full" in verdict.reason and first.request_id in verdict.reason
        assert limits.held("training_pipeline") == [first.request_id]

    def test_a_released_slot_is_taken_by_the_next(
        self, limits: ConcurrencyLimits, fake_redis: fakeredis.FakeRedis
    ) -> None:
        first, second = make_request(), make_request()
        assert admitted(limits, fake_redis, first)
        assert not admitted(limits, fake_redis, second)

        limits.release(first)

        assert admitted(limits, fake_redis, second)
        assert limits.held("training_pipeline") == [second.request_id]

    def test_a_slot_whose_lease_is_gone_frees_itself(
        self, limits: ConcurrencyLimits, fake_redis: fakeredis.FakeRedis
    ) -> None:
        dead, waiting = make_request(), make_request()
        assert admitted(limits, fake_redis, dead)

        fake_redis.delete(keys.lease_key(dead.request_id))  # its worker was killed; the lease ran out

        assert admitted(limits, fake_redis, waiting)
        assert limits.held("training_pipeline") == [waiting.request_id]

    def test_the_holder_asking_again_keeps_its_slot(
        self, limits: ConcurrencyLimits, fake_redis: fakeredis.FakeRedis
    ) -> None:
        holder = make_request()
        assert admitted(limits, fake_redis, holder)

        assert admitted(limits, fake_redis, holder)  # a recovered copy of the same request
        assert limits.held("training_pipeline") == [holder.request_id]

    def test_other_pipelines_flow_past_a_full_limit(
        self, limits: ConcurrencyLimits, fake_redis: fakeredis.FakeRedis
    ) -> None:
        assert admitted(limits, fake_redis, make_request())

        assert admitted(limits, fake_redis, make_request("slow_pipeline"))
        assert fake_redis.keys(keys.concurrency_slots_key(QUEUE, "slow_pipeline")) == []

    def test_a_template_limit_counts_its_own_runs(
        self, limits: ConcurrencyLimits, fake_redis: fakeredis.FakeRedis
    ) -> None:
        assert admitted(limits, fake_redis, make_request())  # the pipeline's only slot

        nightly = [make_request(template="nightly") for _ in range(3)]
        answers = [
            admitted(limits, fake_redis, r, pipeline="training_pipeline", template_ref="nightly@2") for r in nightly
        ]

        assert answers == [True, True, False]
        assert sorted(limits.held("template:nightly")) == sorted(r.request_id for r in nightly[:2])

    def test_the_recheck_delay_grows_with_the_backlog_per_slot(self, fake_redis: fakeredis.FakeRedis) -> None:
        now = [1000.0]
        limits = ConcurrencyLimits(fake_redis, {"training_pipeline": 2}, QUEUE, POLL, clock=lambda: now[0])
        assert admitted(limits, fake_redis, make_request()) and admitted(limits, fake_redis, make_request())
        waiters = [make_request() for _ in range(6)]

        delays = [self.delay(limits, fake_redis, w) for w in waiters]

        expected = [POLL, POLL, POLL * 1.5, POLL * 2, POLL * 2.5, POLL * 3]  # waiters per slot, at least one poll
        assert all(e * JITTER[0] <= d <= e * JITTER[1] for d, e in zip(delays, expected, strict=True)), delays
        assert self.delay(limits, fake_redis, waiters[0]) >= POLL * 3 * JITTER[0], "asking again counts it once"
        now[0] += 100  # every waiter is long overdue: admitted elsewhere, or ended
        assert self.delay(limits, fake_redis, make_request()) <= POLL * JITTER[1]

    def test_an_admitted_waiter_no_longer_counts(self, fake_redis: fakeredis.FakeRedis) -> None:
        limits = ConcurrencyLimits(fake_redis, {"training_pipeline": 1}, QUEUE, POLL)
        holder, first, second = make_request(), make_request(), make_request()
        assert admitted(limits, fake_redis, holder) and not admitted(limits, fake_redis, first)
        limits.release(holder)
        assert admitted(limits, fake_redis, first)

        assert not admitted(limits, fake_redis, second)
        assert fake_redis.zrange(keys.concurrency_waiting_key(QUEUE, "training_pipeline"), 0, -1) == [
            second.request_id.encode()
        ]

    @staticmethod
    def delay(limits: ConcurrencyLimits, client: fakeredis.FakeRedis, request: TriggerRequest) -> float:
        hold_lease(client, request)
        verdict = limits.decide(request, state_of(request))
        assert verdict.kind == "defer"
        return verdict.delay

    def test_limits_are_per_queue(self, fake_redis: fakeredis.FakeRedis) -> None:
        ours, theirs = (ConcurrencyLimits(fake_redis, {"training_pipeline": 1}, q, POLL) for q in ("a", "b"))

        assert admitted(ours, fake_redis, make_request())
        assert admitted(theirs, fake_redis, make_request())

    def test_only_the_pass_that_took_the_slot_gives_it_back(self, fake_redis: fakeredis.FakeRedis) -> None:
        ours, elsewhere = (ConcurrencyLimits(fake_redis, {"training_pipeline": 1}, QUEUE, POLL) for _ in range(2))
        holder = make_request()
        assert admitted(ours, fake_redis, holder)

        elsewhere.release(holder)  # a copy on another worker that deferred behind the live holder

        assert ours.held("training_pipeline") == [holder.request_id]
        ours.release(holder)
        assert ours.held("training_pipeline") == []

    def test_release_of_a_request_without_a_slot_is_a_no_op(
        self, limits: ConcurrencyLimits, fake_redis: fakeredis.FakeRedis
    ) -> None:
        holder = make_request()
        assert admitted(limits, fake_redis, holder)

        limits.release(make_request())

        assert limits.held("training_pipeline") == [holder.request_id]


@pytest.fixture
def limited(make_services: Callable[..., Any], worker_settings: WorkerSettings, runner: Any) -> Processor:
    settings = worker_settings.model_copy(update={"concurrency_limits": {"training_pipeline": 1}})
    return Processor(make_services(runner, settings))


def scheduled_kwargs(processor: Processor) -> list[dict[str, Any]]:
    """The kwargs of every task message waiting in the retry schedule."""
    envelopes = processor.s.states.client.zrange(processor.s.schedule.key, 0, -1)
    return [json.loads(base64.b64decode(json.loads(e)["body"]))[1] for e in envelopes]


class TestThroughTheWalk:
    def test_a_request_over_the_limit_waits_in_the_retry_schedule_and_runs_once_a_slot_frees(
        self, limited: Processor, runner: Any
    ) -> None:
        client, busy, waiting = limited.s.states.client, make_request(), make_request()
        slots = keys.concurrency_slots_key(limited.s.settings.queue, "training_pipeline")
        client.zadd(slots, {busy.request_id: 1.0})
        hold_lease(client, busy)

        state = limited.handle(Delivery(raw=encode_request(waiting), task_id=waiting.request_id, attempt=2))

        assert state.status is Status.QUEUED and state.attempts == 0 and runner.calls == [], "no attempt burnt"
        assert scheduled_kwargs(limited) == [{"attempt": 2}], "deferred with its attempt number, never dropped"
        assert client.zrange(slots, 0, -1) == [busy.request_id.encode()]

        client.delete(keys.lease_key(busy.request_id))  # the busy run's worker died
        assert (
            limited.handle(Delivery(raw=encode_request(waiting), task_id=waiting.request_id)).status is Status.SUCCEEDED
        )
        assert client.zcard(slots) == 0, "the slot is given back after the run"

    def test_the_slot_is_held_during_the_run(self, limited: Processor, runner: Any) -> None:
        request, seen = make_request(), []
        slots = keys.concurrency_slots_key(limited.s.settings.queue, "training_pipeline")
        original = runner.run

        def run(*args: Any, **kwargs: Any) -> Any:
            seen.append(limited.s.states.client.zrange(slots, 0, -1))
            return original(*args, **kwargs)

        runner.run = run
        assert (
            limited.handle(Delivery(raw=encode_request(request), task_id=request.request_id)).status is Status.SUCCEEDED
        )

        assert seen == [[request.request_id.encode()]]
        assert limited.s.states.client.zcard(slots) == 0

    def test_a_failed_run_gives_its_slot_back(self, limited: Processor, runner: Any) -> None:
        runner.script.append(StoreUnavailable("the ZenML store is away"))
        request = make_request()

        state = limited.handle(Delivery(raw=encode_request(request), task_id=request.request_id))

        assert state.status is Status.RETRYING
        assert (
            limited.s.states.client.zcard(keys.concurrency_slots_key(limited.s.settings.queue, "training_pipeline"))
            == 0
        )

    def test_a_retry_waiting_for_a_slot_keeps_its_attempt_number(self, limited: Processor, runner: Any) -> None:
        runner.script.append(StoreUnavailable("the ZenML store is away"))
        client, request, busy = limited.s.states.client, make_request(), make_request()
        assert (
            limited.handle(Delivery(raw=encode_request(request), task_id=request.request_id)).status is Status.RETRYING
        )
        client.zadd(keys.concurrency_slots_key(limited.s.settings.queue, "training_pipeline"), {busy.request_id: 1.0})
        hold_lease(client, busy)

        retry = delivery_of(client.zpopmin(limited.s.schedule.key)[0][0])
        assert limited.handle(retry).status is Status.RETRYING and len(runner.calls) == 1  # deferred
        again = delivery_of(client.zpopmin(limited.s.schedule.key)[0][0])
        client.delete(keys.lease_key(busy.request_id))

        assert retry.attempt == again.attempt == 2, "not taken for a stale copy, and no attempt burnt"
        state = limited.handle(again)
        assert state.status is Status.SUCCEEDED and state.attempts == 2 and len(runner.calls) == 2

    def test_a_template_run_counts_against_the_template_limit(
        self, make_services: Callable[..., Any], worker_settings: WorkerSettings, runner: Any
    ) -> None:
        template = Template(
            name="nightly",
            version=2,
            snapshot_id="snap-2",
            pipeline_name="training_pipeline",
            source="pipelines.training.training_pipeline",
        )
        settings = worker_settings.model_copy(update={"concurrency_limits": {"template:nightly": 1}})
        processor = Processor(make_services(runner, settings, templates=FakeTemplates(template)))
        slots = keys.concurrency_slots_key(settings.queue, "template:nightly")
        busy, request = make_request(), make_request(template="nightly")
        processor.s.states.client.zadd(slots, {busy.request_id: 1.0})
        hold_lease(processor.s.states.client, busy)

        state = processor.handle(Delivery(raw=encode_request(request), task_id=request.request_id))

        assert state.status is Status.QUEUED and runner.calls == []
        other = make_request()  # the pipeline itself has no limit
        assert (
            processor.handle(Delivery(raw=encode_request(other), task_id=other.request_id)).status is Status.SUCCEEDED
        )


class TestWaitingIsNotLost:
    def test_a_request_waiting_for_a_slot_is_not_resent_by_the_sweeper(self, limited: Processor) -> None:
        """The lost-message sweeper must not take a long wait for a lost message and multiply its copies."""
        client = limited.s.states.client
        producer = TriggerClient(client, ProducerSettings(queue=limited.s.settings.queue))
        busy, waiting = make_request(), producer.trigger("training_pipeline")
        client.zadd(keys.concurrency_slots_key(limited.s.settings.queue, "training_pipeline"), {busy.request_id: 1.0})
        hold_lease(client, busy)
        sweeper = Sweeper(client, limited.s.settings.queue, limited.s.states, lost_after=60)

        envelope = client.rpop(limited.s.settings.queue)
        assert limited.handle(delivery_of(envelope)).status is Status.QUEUED  # deferred
        limited.s.schedule.release_due(now=time.time() + 30)  # due: back in the queue
        assert sweeper.sweep(now=time.time() + 61) == 0, "its copy is in the queue"

        again = client.rpop(limited.s.settings.queue)
        assert limited.handle(delivery_of(again)).status is Status.QUEUED  # deferred once more
        assert sweeper.sweep(now=time.time() + 61) == 0, "its copy is in the retry schedule"
        assert client.llen(limited.s.settings.queue) == 0 and limited.s.schedule.pending() == 1
        assert waiting.encode() in client.zrange(keys.waiting_key(limited.s.settings.queue), 0, -1)


def delivery_of(envelope: bytes) -> Delivery:
    message = json.loads(envelope)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    return Delivery(raw=args[0], task_id=message["headers"]["id"], **kwargs)

"""Fencing: a worker that stalled past its lease while another took the request over records nothing."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from structlog.testing import capture_logs

from producers import keys
from producers.errors import TransientError
from producers.state import ErrorInfo, RequestState, StateStore, Status
from tests.unit.test_processing import deliver, events, make_request, stored
from worker.admission import Coalescing
from worker.dead_letters import DeadLetter, DeadLetterStore
from worker.idempotency import IdempotencyClaims
from worker.lease import Leases
from worker.outcomes import Outcomes, Refused, Step
from worker.processing import Processor
from worker.runner import RunOutcome
from worker.schedule import RetrySchedule


class Takeover:
    """Stale worker A on request r1 and worker B that took it over after A's lease ran out."""

    def __init__(self, b_records: bool = True) -> None:
        self.client = fakeredis.FakeRedis()
        self.states = StateStore(self.client, 3600)
        self.letters = DeadLetterStore(self.client, 10, 3600)
        self.schedule = RetrySchedule(self.client, "q")
        self.outcomes = Outcomes(self.states, self.letters, self.schedule)
        self.a, self.b = (Leases(self.client, 60, 10, holder=name) for name in ("worker-a", "worker-b"))
        assert self.a.acquire("r1")
        self.stale = self.a.fence("r1")
        self.running = RequestState(request_id="r1", status=Status.RUNNING, attempts=1, idempotency_key="k")
        self.outcomes.record(Step(self.running), self.stale)
        self.client.set(keys.idempotency_key("k"), "r1")
        self.client.delete(keys.lease_key("r1"))  # A stalled past its lease
        assert self.b.acquire("r1")
        self.retrying = self.running.advance(Status.RETRYING, attempts=1)
        if b_records:  # B counted A's attempt lost and scheduled attempt 2
            self.outcomes.record(Step(self.retrying, next_attempt=("b-envelope", 0)), self.b.fence("r1"))

    def stored(self) -> RequestState | None:
        return self.states.get("r1")


def test_every_acquisition_gets_a_newer_token_that_outlives_the_lease() -> None:
    client = fakeredis.FakeRedis()
    leases = Leases(client, 60, 10, holder="w")
    assert leases.acquire("r1") and leases.fence("r1") == "w:1"
    assert client.get(keys.lease_key("r1")) == b"w:1"
    leases.release("r1")
    assert client.get(keys.lease_key("r1")) is None and leases.fence("r1") is None
    assert leases.acquire("r1") and leases.fence("r1") == "w:2", "the token counter outlived the lease"
    assert 0 < client.ttl(keys.lease_token_key("r1")) <= 7 * 24 * 3600, "bounded by the state TTL"
    assert not Leases(client, 60, 10, holder="other").acquire("r1")


@pytest.mark.parametrize("b_released", [True, False])
def test_a_stale_heartbeat_never_takes_the_lease_back_from_a_worker_that_took_over(b_released: bool) -> None:
    t = Takeover()
    if b_released:
        t.b.release("r1")
    assert t.a.refresh("r1", None) == (3 if b_released else 0)
    assert t.client.get(keys.lease_key("r1")) == (None if b_released else b"worker-b:2")


def test_a_heartbeat_takes_back_its_expired_lease_when_no_one_took_the_request_over() -> None:
    t = Takeover(b_records=False)  # B acquired, looked, and deferred behind the live A
    t.b.release("r1")
    assert t.a.refresh("r1", None) == 2
    assert t.client.get(keys.lease_key("r1")) == b"worker-a:1"
    t.outcomes.record(Step(t.running.advance(Status.SUCCEEDED)), t.stale)
    assert t.stored().status is Status.SUCCEEDED  # type: ignore[union-attr]


@pytest.mark.parametrize("b_released", [True, False])
def test_a_stale_outcome_is_refused_with_its_dead_letter_and_claim_release(b_released: bool) -> None:
    t = Takeover()
    if b_released:
        t.b.release("r1")
    failed = t.running.advance(Status.FAILED, attempts=1)
    error = ErrorInfo(type="PipelineRunFailed", message="boom")
    letter = DeadLetter(request_id="r1", status="failed", reason="boom", error=error, attempts=1, raw_payload="{}")
    with pytest.raises(Refused, match="fenced"):
        t.outcomes.record(Step(failed, letter=letter, release_claim=True), t.stale)
    assert t.stored() == t.retrying
    assert t.letters.count() == 0 and t.client.get(keys.idempotency_key("k")) == b"r1"


def test_a_stale_retry_is_refused_and_schedules_nothing() -> None:
    t = Takeover()
    t.b.release("r1")
    with pytest.raises(Refused, match="fenced"):
        t.outcomes.record(Step(t.running.advance(Status.RETRYING), next_attempt=("a-envelope", 0)), t.stale)
    assert t.client.zrange(t.schedule.key, 0, -1) == [b"b-envelope"]


def test_a_stale_step_amend_is_refused() -> None:
    t = Takeover()
    read = t.client.get(keys.state_key("r1"))
    assert t.outcomes.amend(read, t.retrying.model_copy(update={"step": "train"}), t.stale) == "fenced"  # type: ignore[arg-type]
    assert t.stored() == t.retrying


def test_a_stale_claim_release_is_refused_and_the_claim_kept() -> None:
    t = Takeover()
    claims = IdempotencyClaims(t.client, 3600)
    with pytest.raises(Refused, match="fenced"):
        claims.release("k", "r1", t.stale)
    assert t.client.get(keys.idempotency_key("k")) == b"r1"
    claims.release("k", "r1", t.b.fence("r1"))
    assert t.client.get(keys.idempotency_key("k")) is None, "the current holder may release it"


def test_a_stale_coalescing_release_keeps_the_lock_of_the_run_that_took_over() -> None:
    t = Takeover()
    stale_fences = {"r1": t.stale}
    a = Coalescing(t.client, 60, 3600, 1.0, fence=stale_fences.get)
    request = make_request(request_id="r1", coalesce_key="nightly")
    t.client.set(keys.coalesce_latest_key("nightly"), "r1")
    assert a.decide(request, t.running).kind == "admit"  # A took the lock before it stalled
    with capture_logs() as logs:
        a.release(request)
    assert t.client.get(keys.coalesce_running_key("nightly")) == b"r1", "B's run still holds it"
    assert "trigger.fenced" in events(logs)


def test_a_copy_that_deferred_leaves_the_coalescing_lock_of_the_live_run_alone() -> None:
    client = fakeredis.FakeRedis()
    client.set(keys.coalesce_running_key("nightly"), "r1")
    copy = Coalescing(client, 60, 3600, 1.0)
    copy.release(make_request(request_id="r1", coalesce_key="nightly"))  # never admitted by this copy
    assert client.get(keys.coalesce_running_key("nightly")) == b"r1"


class TakenOverDuringRun:
    """A runner whose run stalls past the lease: worker B takes the request over, then the run ends."""

    def __init__(self, processor: Processor, result: Any) -> None:
        self.processor, self.result = processor, result

    def __call__(self, *_: Any, **__: Any) -> Any:
        client = self.processor.s.states.client
        client.delete(keys.lease_key("r1"))
        b = Leases(client, 60, 10, holder="worker-b")
        assert b.acquire("r1")
        state = stored(self.processor, "r1").advance(Status.RETRYING, worker="host-b")
        self.processor.outcomes.record(Step(state, next_attempt=("b-envelope", 0)), b.fence("r1"))
        b.release("r1")
        assert self.processor.s.leases.refresh("r1", None) == 3, "A's heartbeat, as A resumes, takes nothing back"
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


@pytest.mark.parametrize(
    "result",
    [
        RunOutcome(run_id="run-a", run_name="training_pipeline-r1-1", status="completed", metrics={}),
        RunOutcome(run_id="run-a", run_name="training_pipeline-r1-1", status="failed"),
        TransientError("the store blinked"),
    ],
    ids=["succeeded", "failed", "retry"],
)
def test_a_stale_walk_records_nothing_after_the_takeover(processor: Processor, runner: Any, result: Any) -> None:
    runner.run = TakenOverDuringRun(processor, result)
    request = make_request(request_id="r1", idempotency_key="drift:k")

    with capture_logs() as logs:
        state = processor.handle(deliver(request))

    assert state.status is Status.RETRYING and state.worker == "host-b", "what B recorded"
    assert stored(processor, "r1") == state
    assert processor.s.states.client.zrange(processor.s.schedule.key, 0, -1) == [b"b-envelope"]
    assert processor.s.dead_letters.count() == 0
    assert processor.s.states.client.get(keys.idempotency_key("drift:k")) == b"r1", "the claim is intact"
    assert "trigger.fenced" in events(logs)

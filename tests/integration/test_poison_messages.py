"""Issue 11: poison messages and runaway runs, against real workers, the real Redis and a real ZenML store.

Each test here failed on the code before the fix: a message lost without a trace, a
request hidden behind another's id, a worker held forever, a poison request looping.
"""

from __future__ import annotations

import base64
import json
import signal
import time

import psutil

from producers import TriggerRequest, keys
from producers.envelope import task_envelope
from producers.state import RequestState, Status
from tests.integration.conftest import Stack, zenml_runs

FAST_RECOVERY = {"TRIGGER_LEASE_TIMEOUT": "5", "TRIGGER_HEARTBEAT_INTERVAL": "1"}


def _letter(stack: Stack, request_id: str) -> dict:  # type: ignore[type-arg]
    raw = stack.redis.get(keys.dead_letter_key(request_id))
    assert raw is not None, f"no dead letter for {request_id}:\n{stack.logs()}"
    return json.loads(raw)


def _letter_bytes(letter: dict) -> bytes:  # type: ignore[type-arg]
    text = letter["raw_payload"]
    return base64.b64decode(text) if letter["raw_encoding"] == "base64" else text.encode("utf-8", "surrogatepass")


def _push(stack: Stack, task_id: str, raw: str, **kwargs: object) -> None:
    stack.redis.lpush(stack.queue, task_envelope(keys.TASK_NAME, task_id, [raw], stack.queue, dict(kwargs)))


def test_an_envelope_saying_base64_over_text_that_is_not_is_rejected_and_kept(stack: Stack) -> None:
    stack.start_worker()
    _push(stack, "bad-base64-1", "***not base64***", raw_encoding="base64")

    state = stack.wait("bad-base64-1")

    assert state.status is Status.REJECTED, stack.logs()
    assert "not valid base64" in state.error.message
    assert _letter_bytes(_letter(stack, "bad-base64-1")) == b"***not base64***"


def test_lone_surrogates_anywhere_in_a_request_are_rejected_with_their_path(stack: Stack) -> None:
    stack.start_worker()
    fields = {
        "source": '"source": "\\ud800"',
        "parameters": '"parameters": {"data_url": "\\ud800"}',
        "metadata": '"metadata": {"note": ["ok", "\\udfff"]}',
        "step-key": '"steps": {"train_model": {"parameters": {"\\ud800": 1}}}',
    }
    for name, fragment in fields.items():
        raw = f'{{"request_id": "surrogate-{name}", "pipeline_name": "training_pipeline", {fragment}}}'
        _push(stack, f"surrogate-{name}", raw)

    states = stack.wait_all([f"surrogate-{name}" for name in fields])

    paths = {rid: [d["path"] for d in s.error.details] for rid, s in states.items()}
    assert all(s.status is Status.REJECTED for s in states.values()), stack.logs()
    assert paths["surrogate-source"] == ["source"]
    assert paths["surrogate-parameters"] == ["parameters.data_url"]
    assert paths["surrogate-metadata"] == ["metadata.note.1"]
    assert paths["surrogate-step-key"] == ["steps.train_model.parameters.\\ud800"]
    raw = _letter_bytes(_letter(stack, "surrogate-parameters"))
    assert b'"data_url": "\\ud800"' in raw  # the bytes as they came, not re-serialized


def test_try_send_never_raises_and_send_raises_only_trigger_errors(stack: Stack) -> None:
    import pytest

    from producers.errors import InvalidRequest

    client = stack.client
    with pytest.raises(InvalidRequest):
        TriggerRequest(pipeline_name="training_pipeline", parameters={"data_url": "\ud800"})
    with pytest.raises(InvalidRequest) as raised:
        client.trigger("training_pipeline", parameters={"data_url": "\ud800"})
    assert [d.path for d in raised.value.details] == ["parameters.data_url"]
    request = TriggerRequest.model_construct(
        pipeline_name="training_pipeline", parameters={"data_url": "\ud800"}, request_id="unbuildable"
    )
    assert client.try_send(request) is None and client.failed_enqueues == 1
    with pytest.raises(InvalidRequest):
        client.send(request)
    assert stack.redis.llen(stack.queue) == 0


def test_garbage_naming_a_finished_request_is_dead_lettered_under_its_own_id(stack: Stack) -> None:
    stack.start_worker()
    finished = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.1})
    assert stack.wait(finished).status is Status.SUCCEEDED
    garbage = json.dumps({"request_id": finished}).encode()
    stack.redis.lpush(stack.queue, garbage)

    def impostor() -> RequestState | None:
        for member in stack.redis.zrange(keys.DEAD_LETTERS_KEY, 0, -1):
            state = stack.client.states.get(member.decode())
            if state is not None and state.claimed_id == finished:
                return state
        return None

    deadline = time.monotonic() + 60
    while impostor() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    state = impostor()

    assert state is not None, stack.logs()
    assert state.status is Status.REJECTED and state.request_id != finished
    assert _letter_bytes(_letter(stack, state.request_id)) == garbage
    assert stack.client.status(finished).status is Status.SUCCEEDED  # untouched


def test_garbage_sent_under_a_running_requests_id_does_not_take_it_over(stack: Stack) -> None:
    stack.start_worker("a")
    stack.start_worker("b")
    victim = stack.client.trigger("slow_pipeline", parameters={"seconds": 8}, idempotency_key="victim")
    deadline = time.monotonic() + 90
    while stack.client.status(victim).status is not Status.RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    _push(stack, victim, "garbage-running")
    second = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.1}, idempotency_key="victim")

    state = stack.wait(victim)

    assert state.status is Status.SUCCEEDED and stack.client.states.get(victim).claimed_id is None, stack.logs()
    assert stack.wait(second).status is Status.DUPLICATE, "the key stayed claimed while the run went on"
    assert stack.redis.get(keys.dead_letter_key(victim)) is None
    assert len([r for r in zenml_runs("slow_pipeline") if r.status.value == "completed"]) == 1
    garbage = [m.decode() for m in stack.redis.zrange(keys.DEAD_LETTERS_KEY, 0, -1)]
    claims = [stack.client.states.get(g).claimed_id for g in garbage if g.startswith("malformed-")]
    assert victim in claims


def test_a_run_over_its_time_limit_is_stopped_failed_and_the_worker_goes_on(stack: Stack) -> None:
    stack.start_worker(TRIGGER_RUN_TIMEOUTS='{"slow_pipeline": 8}')
    warm = stack.client.trigger("training_pipeline", steps={"train_model": {"n_estimators": 5}})
    assert stack.wait(warm).status is Status.SUCCEEDED, stack.logs()  # the store exists before the clock runs
    hung = stack.client.trigger("slow_pipeline", parameters={"seconds": 600})
    after = stack.client.trigger("training_pipeline", steps={"train_model": {"n_estimators": 5}})

    state = stack.wait(hung, timeout=90)

    assert state.status is Status.FAILED, stack.logs()
    assert state.error.type == "RunTimeout" and "8s" in state.error.message
    assert stack.wait(after).status is Status.SUCCEEDED, stack.client.status(after).error
    (run,) = zenml_runs("slow_pipeline")
    assert run.status.value == "failed" and str(run.id) == state.run_id


def test_a_run_that_ignores_the_limit_is_killed_by_the_pool(stack: Stack) -> None:
    stack.env_overrides.update(FAST_RECOVERY)  # the kill is recorded once the child's lease runs out
    stack.start_worker(
        pool="prefork",
        TRIGGER_RUN_TIMEOUT="30",  # the hard limit: the largest run limit (30 s) plus the grace (3 s)
        TRIGGER_RUN_TIMEOUTS='{"stubborn_pipeline": 6}',
        TRIGGER_RUN_TIMEOUT_GRACE="3",
        TRIGGER_CONCURRENCY="1",
    )
    warm = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.1})  # the child creates the store
    assert stack.wait(warm).status is Status.SUCCEEDED, stack.logs()
    stubborn = stack.client.trigger("stubborn_pipeline", parameters={"seconds": 600})
    after = stack.client.trigger("slow_pipeline", parameters={"seconds": 0.1})

    state = stack.wait(stubborn, timeout=90)

    assert state.status is Status.FAILED, stack.logs()
    assert state.error.type == "RunTimeout" and "hard time limit of 33s" in state.error.message
    assert stack.wait(after).status is Status.SUCCEEDED, stack.logs()
    (run,) = zenml_runs("stubborn_pipeline")
    assert run.status.value == "failed"


def test_a_memory_blow_up_fails_the_run_not_the_machine(stack: Stack) -> None:
    stack.start_worker(pool="prefork", TRIGGER_MEMORY_LIMIT_MB="3072", TRIGGER_CONCURRENCY="1")
    hog = stack.client.trigger("memory_hog_pipeline", parameters={"megabytes": 8192})
    after = stack.client.trigger("memory_hog_pipeline", parameters={"megabytes": 16})

    state = stack.wait(hog, timeout=90)

    assert state.status is Status.FAILED, stack.logs()
    assert "MemoryError" in state.error.message
    assert stack.wait(after).status is Status.SUCCEEDED, stack.logs()


def test_a_request_that_kills_its_worker_every_time_is_dead_lettered(stack: Stack) -> None:
    stack.env_overrides.update({**FAST_RECOVERY, "TRIGGER_MAX_ATTEMPTS": "2", "TRIGGER_RETRY_BASE_DELAY": "0.2"})
    stack.start_worker(pool="prefork", TRIGGER_CONCURRENCY="1")
    poison = stack.client.trigger("suicide_pipeline")

    state = stack.wait(poison, timeout=150)

    assert state.status is Status.DEAD_LETTERED, stack.logs()
    assert state.error.type == "WorkerLost" and "2 attempts died" in state.error.message
    assert state.attempts == 2 and state.lost_attempts == 2
    assert _letter(stack, poison)["status"] == "dead_lettered"
    runs = zenml_runs("suicide_pipeline")
    assert len(runs) == 2 and all(run.status.value == "failed" for run in runs)  # no orphan left `running`


def test_the_run_of_a_killed_attempt_is_marked_failed_in_zenml(stack: Stack) -> None:
    stack.env_overrides.update(FAST_RECOVERY)
    worker = stack.start_worker("prefork", pool="prefork", TRIGGER_CONCURRENCY="1")
    request_id = stack.client.trigger("slow_pipeline", parameters={"seconds": 6})
    deadline = time.monotonic() + 90
    while not stack.logged("wait_a_while` has started") and time.monotonic() < deadline:
        time.sleep(0.1)
    (child,) = psutil.Process(worker.pid).children()
    child.send_signal(signal.SIGKILL)

    state = stack.wait(request_id, timeout=120)

    assert state.status is Status.SUCCEEDED and state.lost_attempts == 1, stack.logs()
    statuses = sorted(run.status.value for run in zenml_runs("slow_pipeline"))
    assert statuses == ["completed", "failed"]

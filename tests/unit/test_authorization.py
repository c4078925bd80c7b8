"""Authorization in the walk: with signatures required, only a request signed by a valid key, within its scopes, runs.

Everything else ends `rejected` (`Unauthorized` or `Forbidden`, naming the key and what was refused,
never a secret) with a dead letter, and starts nothing. Retries, deferred copies, resends and
replays keep verifying.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from producers import TriggerClient, keys
from producers.contract import TriggerRequest, encode_request
from producers.credentials import KeysFileError
from producers.envelope import task_envelope
from producers.logs import merge_context
from producers.settings import ProducerSettings
from producers.signing import sign
from producers.state import RequestState, Status
from worker.authorization import Authorization, KeysFile
from worker.errors import StoreUnavailable
from worker.processing import Delivery, Processor
from worker.replay import replay
from worker.settings import WorkerSettings
from worker.sweeper import Sweeper
from worker.transport import load_item

OLD = "drift-old-secret-0123456789abcdef0123456789"
NEW = "drift-new-secret-0123456789abcdef0123456789"
OPS = "ops-secret-0123456789abcdef0123456789abcdef"
RETIRED = "retired-secret-0123456789abcdef0123456789"
SECRETS = (OLD, NEW, OPS, RETIRED)
DATA = {"data_url": "s3://bucket/new.csv"}


def keys_yaml(drift_secrets: list[str]) -> str:
    return f"""
keys:
  - id: drift
    secrets: {json.dumps(drift_secrets)}
    pipelines: [training_pipeline]
    parameters: [parameters.data_url]
  - id: ops
    secrets: ["{OPS}"]
    pipelines: ["*"]
    templates: ["*"]
  - id: retired
    secrets: ["{RETIRED}"]
    pipelines: ["*"]
    expires_at: 2020-01-01T00:00:00Z
"""


@pytest.fixture
def keys_path(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(keys_yaml([OLD]))
    return path


@pytest.fixture
def build(make_services: Callable[..., Any], runner: Any, keys_path: Path) -> Callable[..., Processor]:
    """A processor over fakeredis whose settings read `keys_path`; signatures required unless told otherwise."""

    def make(**fields: Any) -> Processor:
        fields.setdefault("require_signed", True)
        fields.setdefault("keys_file", keys_path)
        settings = WorkerSettings(redis_url="redis://unused.invalid:6379/0", max_attempts=3, **fields)
        processor = Processor(make_services(runner, settings=settings))
        if processor.authorization.keys is not None:
            processor.authorization.keys.interval = 0  # look at the file on every request
        return processor

    return make


@pytest.fixture
def processor(build: Callable[..., Processor]) -> Processor:
    return build()


def client(processor: Processor, key_id: str | None = None, secret: str | None = None) -> TriggerClient:
    settings = ProducerSettings(queue=processor.s.settings.queue, key_id=key_id, key_secret=secret)
    return TriggerClient(processor.s.states.client, settings)


def drift(processor: Processor) -> TriggerClient:
    return client(processor, "drift", OLD)


def delivery_of(envelope: bytes | str, queue: str) -> Delivery:
    """The delivery the task gets for a popped envelope, through the real transport check."""
    _, checked = load_item(envelope, queue)
    assert checked is not None
    task_id, raw, kwargs = checked
    return Delivery(raw=raw, task_id=task_id, **kwargs)


def work_one(processor: Processor) -> RequestState:
    queue = processor.s.settings.queue
    return processor.handle(delivery_of(processor.s.states.client.rpop(queue), queue))


def push(processor: Processor, text: str, request_id: str, signature: str | None = None) -> None:
    """Push a message straight onto the queue, as anyone with write access to Redis can."""
    kwargs = {"signature": signature} if signature is not None else {}
    envelope = task_envelope(keys.TASK_NAME, request_id, [text], processor.s.settings.queue, kwargs)
    processor.s.states.client.lpush(processor.s.settings.queue, envelope)


def raw_request(request_id: str, **fields: Any) -> str:
    fields.setdefault("pipeline_name", "training_pipeline")
    return encode_request(TriggerRequest(request_id=request_id, **fields))


def refusal(state: RequestState) -> tuple[str, str]:
    assert state.status is Status.REJECTED and state.error is not None
    return state.error.type, state.error.message


def assert_lettered_and_not_run(processor: Processor, runner: Any, request_id: str) -> None:
    assert processor.s.dead_letters.get(request_id) is not None
    assert runner.calls == []


def test_a_request_signed_by_a_key_within_its_scopes_runs(processor: Processor, runner: Any) -> None:
    request_id = drift(processor).trigger("training_pipeline", parameters=DATA)

    state = work_one(processor)

    assert state.request_id == request_id and state.status is Status.SUCCEEDED
    assert len(runner.calls) == 1


def test_an_unsigned_request_is_rejected_under_its_own_id_and_never_runs(processor: Processor, runner: Any) -> None:
    request_id = client(processor).trigger("training_pipeline", parameters=DATA)

    state = work_one(processor)

    assert state.request_id == request_id
    assert refusal(state) == (
        "Unauthorized",
        "The request's signature does not let it run: signature: the request is not signed, "
        "and this worker requires signed requests",
    )
    assert processor.s.states.get(request_id) == state
    assert_lettered_and_not_run(processor, runner, request_id)


@pytest.mark.parametrize(
    ("signer", "expected"),
    [
        (lambda text: sign(text, "drift", b"a-guessed-secret-0123456789abcdef0123"), "by key 'drift' does not match"),
        (lambda text: sign(text.replace("new.csv", "evil.csv"), "drift", OLD.encode()), "does not match the request"),
        (lambda text: sign(text, "nobody", OLD.encode()), "key 'nobody' is not in the keys file"),
        (lambda text: sign(text, "retired", RETIRED.encode()), "key 'retired' expired at 2020-01-01T00:00:00+00:00"),
        (lambda text: sign(text, "drift", OLD.encode(), int(time.time()) - 90_000), "is 900"),
        (lambda text: sign(text, "drift", OLD.encode(), int(time.time()) + 3600), "ahead of the worker's clock"),
    ],
    ids=["forged", "altered-body", "unknown-key", "expired-key", "too-old", "from-the-future"],
)
def test_a_message_whose_signature_does_not_hold_is_unauthorized(
    processor: Processor, runner: Any, signer: Callable[[str], str], expected: str
) -> None:
    text = raw_request("pushed-1", parameters=DATA)
    push(processor, text, "pushed-1", signer(text))

    kind, message = refusal(work_one(processor))

    assert kind == "Unauthorized" and expected in message
    assert_lettered_and_not_run(processor, runner, "pushed-1")


def test_a_pipeline_outside_the_keys_scope_is_forbidden_before_it_is_even_resolved(
    processor: Processor, runner: Any
) -> None:
    request_id = drift(processor).trigger("etl_pipeline")

    state = work_one(processor)

    assert refusal(state)[0] == "Forbidden"
    assert state.error is not None and state.error.details == [
        {
            "path": "pipeline_name",
            "problem": "key 'drift' may not trigger pipeline 'etl_pipeline' (its pipelines: training_pipeline)",
        }
    ]
    assert_lettered_and_not_run(processor, runner, request_id)


def test_a_parameter_outside_the_keys_paths_is_forbidden_naming_each_path(processor: Processor, runner: Any) -> None:
    request_id = drift(processor).trigger(
        "training_pipeline", parameters=DATA, steps={"train_model": {"model_type": "gradient_boosting"}}
    )

    state = work_one(processor)

    assert refusal(state) == (
        "Forbidden",
        "The request's key may not trigger this: steps.train_model.parameters.model_type: key 'drift' may not set it",
    )
    assert_lettered_and_not_run(processor, runner, request_id)


def test_a_request_signed_by_the_old_secret_verifies_while_both_are_listed(
    processor: Processor, runner: Any, keys_path: Path
) -> None:
    """The rotation: add the new secret beside the old, move producers over, then drop the old one."""
    queued_before = drift(processor).trigger("training_pipeline", parameters=DATA)
    keys_path.write_text(keys_yaml([NEW, OLD]))
    by_new = client(processor, "drift", NEW).trigger("training_pipeline", parameters=DATA)

    assert [work_one(processor).status for _ in range(2)] == [Status.SUCCEEDED, Status.SUCCEEDED]

    late = drift(processor).trigger("training_pipeline", parameters=DATA)
    keys_path.write_text(keys_yaml([NEW]))
    assert refusal(work_one(processor))[0] == "Unauthorized"
    assert {queued_before, by_new} == {call[2].split("-")[1] for call in runner.calls}
    assert processor.s.states.get(late).status is Status.REJECTED


def test_a_keys_file_edit_that_does_not_load_keeps_the_keys_in_force(processor: Processor, keys_path: Path) -> None:
    drift(processor).trigger("training_pipeline", parameters=DATA)
    keys_path.write_text("keys: [oops")

    with capture_logs() as logs:
        state = work_one(processor)

    assert state.status is Status.SUCCEEDED
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["trigger.keys_reload_failed"]


def test_an_unauthorized_request_ends_no_other_request_and_claims_no_key(processor: Processor, runner: Any) -> None:
    """Refused before the early end: an unsigned copy cannot end requests as duplicate or superseded."""
    owner = drift(processor).trigger("training_pipeline", parameters=DATA, idempotency_key="nightly")
    assert work_one(processor).status is Status.SUCCEEDED
    unsigned = client(processor).trigger("training_pipeline", idempotency_key="nightly", coalesce_key="drift:m")
    queue = processor.s.settings.queue
    _, checked = load_item(processor.s.states.client.lindex(queue, 0), queue)
    assert checked is not None

    assert processor.end_on_arrival(*checked) is False
    state = work_one(processor)

    assert state.request_id == unsigned and refusal(state)[0] == "Unauthorized" and state.duplicate_of is None
    assert processor.s.states.client.get(keys.idempotency_key("nightly")) == owner.encode()


def test_a_signed_duplicate_still_ends_on_arrival(processor: Processor) -> None:
    sender = drift(processor)
    owner = sender.trigger("training_pipeline", parameters=DATA, idempotency_key="nightly")
    work_one(processor)
    second = sender.trigger("training_pipeline", parameters=DATA, idempotency_key="nightly")
    queue = processor.s.settings.queue
    _, checked = load_item(processor.s.states.client.rpop(queue), queue)
    assert checked is not None and "signature" in checked[2]

    assert processor.end_on_arrival(*checked) is True
    assert processor.s.states.get(second).duplicate_of == owner


def test_a_retry_carries_the_original_text_and_signature_and_verifies(processor: Processor, runner: Any) -> None:
    runner.script = [StoreUnavailable("zenml store down")]
    request_id = drift(processor).trigger("training_pipeline", parameters=DATA)
    assert work_one(processor).status is Status.RETRYING

    (envelope,) = processor.s.states.client.zrange(processor.s.schedule.key, 0, -1)
    retry = delivery_of(envelope, processor.s.settings.queue)
    assert retry.attempt == 2 and retry.signature is not None and retry.signature.startswith("k=drift,")
    state = processor.handle(retry)

    assert state.request_id == request_id and state.status is Status.SUCCEEDED and state.attempts == 2


def test_a_deferred_copy_carries_the_signature_and_verifies(processor: Processor) -> None:
    request_id = drift(processor).trigger("training_pipeline", parameters=DATA)
    processor.s.states.client.set(keys.lease_key(request_id), "another-worker", ex=30)
    assert work_one(processor).status is Status.QUEUED  # deferred behind the lease

    (envelope,) = processor.s.states.client.zrange(processor.s.schedule.key, 0, -1)
    processor.s.states.client.delete(keys.lease_key(request_id))

    assert processor.handle(delivery_of(envelope, processor.s.settings.queue)).status is Status.SUCCEEDED


def test_a_message_resent_by_the_sweeper_keeps_its_signature(processor: Processor) -> None:
    request_id = drift(processor).trigger("training_pipeline", parameters=DATA)
    processor.s.states.client.rpop(processor.s.settings.queue)  # lost in flight
    sweeper = Sweeper(processor.s.states.client, processor.s.settings.queue, processor.s.states, lost_after=1)

    assert sweeper.sweep(now=time.time() + 60) == 1
    state = work_one(processor)

    assert state.request_id == request_id and state.status is Status.SUCCEEDED


def test_a_replay_is_a_new_request_signed_by_the_replaying_operators_key(processor: Processor, runner: Any) -> None:
    refused = drift(processor).trigger("training_pipeline", parameters={**DATA, "model_type": "gradient_boosting"})
    assert refusal(work_one(processor))[0] == "Forbidden"
    letter = processor.s.dead_letters.get(refused)
    assert letter is not None

    unsigned_replay = replay(letter, client(processor), processor.s.dead_letters)
    assert refusal(work_one(processor))[0] == "Unauthorized"
    by_operator = replay(letter, client(processor, "ops", OPS), processor.s.dead_letters)
    state = work_one(processor)

    assert state.request_id == by_operator != unsigned_replay and state.status is Status.SUCCEEDED
    assert state.replay_of == refused


def test_a_copy_of_a_finished_request_that_is_not_signed_is_skipped(processor: Processor, runner: Any) -> None:
    request_id = drift(processor).trigger("training_pipeline", parameters=DATA)
    done = work_one(processor)
    push(processor, raw_request(request_id, parameters=DATA), request_id)

    assert work_one(processor) == done
    assert len(runner.calls) == 1


def test_no_secret_reaches_a_state_a_letter_or_a_log_line(processor: Processor) -> None:
    text = raw_request("leaky", parameters=DATA)
    with capture_logs(processors=[merge_context]) as logs:
        for signature in (sign(text, "drift", NEW.encode()), sign(text, "retired", RETIRED.encode()), None):
            push(processor, text, "leaky", signature)
            work_one(processor)
        drift(processor).trigger("training_pipeline", steps={"train_model": {"n_estimators": 3}})
        work_one(processor)

    stored = b" ".join(
        processor.s.states.client.dump(key) or b"" for key in processor.s.states.client.scan_iter(count=1000)
    )
    logged = json.dumps(logs, default=str)
    for secret in SECRETS:
        assert secret.encode() not in stored and secret not in logged


class TestWithoutRequiredSignatures:
    def test_an_unsigned_request_runs_and_a_signed_one_is_still_checked(
        self, build: Callable[..., Processor], runner: Any
    ) -> None:
        processor = build(require_signed=False)
        client(processor).trigger("training_pipeline")
        client(processor, "drift", NEW).trigger("training_pipeline", parameters=DATA)

        assert work_one(processor).status is Status.SUCCEEDED
        assert refusal(work_one(processor))[0] == "Unauthorized"

    def test_without_a_keys_file_a_signature_is_not_looked_at(self, build: Callable[..., Processor]) -> None:
        processor = build(require_signed=False, keys_file=None)
        client(processor, "anyone", NEW).trigger("training_pipeline")

        assert work_one(processor).status is Status.SUCCEEDED


class TestSettings:
    def test_required_signatures_need_a_keys_file(self) -> None:
        with pytest.raises(ValidationError, match="require_signed needs keys_file"):
            WorkerSettings(require_signed=True)

    def test_a_signature_may_not_outlive_the_state_that_guards_against_its_replay(self, keys_path: Path) -> None:
        with pytest.raises(ValidationError, match="must be at most state_ttl"):
            WorkerSettings(keys_file=keys_path, signature_max_age=8 * 24 * 3600)

    def test_a_signature_must_outlast_the_longest_run_a_request_may_wait_behind(self, keys_path: Path) -> None:
        with pytest.raises(ValidationError, match="at least the hard run limit"):
            WorkerSettings(keys_file=keys_path, signature_max_age=600)

    def test_a_bad_keys_file_stops_the_worker_at_start(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.yaml"
        path.write_text('keys:\n  - {id: drift, secrets: ["env:NOT_SET_ANYWHERE"]}\n')

        with pytest.raises(KeysFileError, match="key 'drift': secrets: environment variable NOT_SET_ANYWHERE"):
            Authorization.from_settings(WorkerSettings(require_signed=True, keys_file=path))


def test_the_keys_file_is_looked_at_no_more_than_once_an_interval(keys_path: Path) -> None:
    now = [0.0]
    keys_file = KeysFile(keys_path, interval=1.0, clock=lambda: now[0])
    keys_path.write_text(keys_yaml([NEW]))

    assert keys_file.current().get("drift").secret_bytes() == (OLD.encode(),)
    now[0] = 1.0
    assert keys_file.current().get("drift").secret_bytes() == (NEW.encode(),)


def test_a_signature_is_verified_over_the_text_as_it_travelled(keys_path: Path) -> None:
    authorization = Authorization(KeysFile(keys_path), required=True)
    text = raw_request("t1", parameters=DATA)
    request = TriggerRequest.model_validate_json(text)
    signature = sign(text, "drift", OLD.encode())

    authorization.check(request, text, signature)
    assert authorization.permits(request, text.encode(), signature)
    assert not authorization.permits(request, base64.b64encode(text.encode()).decode(), signature)

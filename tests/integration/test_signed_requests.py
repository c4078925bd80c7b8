"""Who may trigger what, end to end: a real worker that requires signed requests, and Redis locked down with ACL users.

Write access to the queue alone runs nothing: unsigned, forged, out-of-scope messages pushed straight
onto the queue end `rejected` with a dead letter and start no ZenML run; a properly signed one runs.
"""

from __future__ import annotations

import redis

from producers import TriggerClient, keys
from producers.contract import TriggerRequest, encode_request, new_request_id, normalize_steps
from producers.envelope import task_envelope
from producers.settings import ProducerSettings
from producers.signing import sign
from producers.state import Status
from tests.integration.conftest import SecuredRedis, SigningKeys, Stack, zenml_runs

FEW_TREES = {"train_model": {"n_estimators": 5}}


def wire_text(request_id: str, pipeline_name: str = "training_pipeline", **fields: object) -> str:
    fields["steps"] = normalize_steps(fields.get("steps"))  # type: ignore[arg-type]
    return encode_request(TriggerRequest(request_id=request_id, pipeline_name=pipeline_name, **fields))  # type: ignore[arg-type]


def push(stack: Stack, text: str, request_id: str, signature: str | None) -> str:
    """Put a message straight onto the queue, as anyone with write access to Redis can; no state is recorded."""
    kwargs = {"signature": signature} if signature is not None else {}
    stack.redis.lpush(stack.queue, task_envelope(keys.TASK_NAME, request_id, [text], stack.queue, kwargs))
    return request_id


def signed_by(key: tuple[str, str], text: str) -> str:
    key_id, secret = key
    return sign(text, key_id, secret.encode())


def test_only_a_properly_signed_request_within_its_keys_scope_runs(
    signed_stack: Stack, signing_keys: SigningKeys
) -> None:
    stack, drift = signed_stack, signing_keys.drift
    stack.start_worker()
    ids = {name: new_request_id() for name in ("unsigned", "forged", "pipeline", "parameter", "signed")}
    texts = {
        "unsigned": wire_text(ids["unsigned"], steps=FEW_TREES),
        "forged": wire_text(ids["forged"], steps=FEW_TREES),
        "pipeline": wire_text(ids["pipeline"], "slow_pipeline", parameters={"seconds": 0.1}),
        "parameter": wire_text(ids["parameter"], steps={"train_model": {"n_estimators": 5, "model_type": "svm"}}),
        "signed": wire_text(ids["signed"], steps=FEW_TREES),
    }
    signatures = {
        "unsigned": None,
        "forged": sign(texts["forged"], drift[0], b"a-guessed-secret-0123456789abcdef0123"),
        **{name: signed_by(drift, texts[name]) for name in ("pipeline", "parameter", "signed")},
    }
    for name, text in texts.items():
        push(stack, text, ids[name], signatures[name])
    unsigned_client = TriggerClient.from_settings(ProducerSettings(redis_url=stack.redis_url, queue=stack.queue))
    ids["client_unsigned"] = unsigned_client.trigger("training_pipeline", steps=FEW_TREES)

    states = stack.wait_all(list(ids.values()))

    errors = {name: states[ids[name]].error.type for name in ids if states[ids[name]].error is not None}
    assert states[ids["signed"]].status is Status.SUCCEEDED, stack.logs()
    assert errors == {
        "unsigned": "Unauthorized",
        "forged": "Unauthorized",
        "pipeline": "Forbidden",
        "parameter": "Forbidden",
        "client_unsigned": "Unauthorized",
    }
    assert all(states[ids[name]].status is Status.REJECTED for name in errors)
    assert "may not set it" in states[ids["parameter"]].error.message
    assert "drift-monitor" in states[ids["pipeline"]].error.message
    assert all(stack.redis.exists(keys.dead_letter_key(ids[name])) for name in errors)
    assert [str(run.id) for run in zenml_runs()] == [states[ids["signed"]].run_id]


def test_a_locked_down_redis_over_tls_lets_each_side_do_only_its_part(
    signed_stack: Stack, secured_redis: SecuredRedis
) -> None:
    """The README's ACL users over `rediss://`: the producer enqueues and reads states, the worker does the rest.

    The worker's URL names no CA: `rediss://` alone verifies the server against the system's CAs (here
    the test CA, through `SSL_CERT_FILE`)."""
    stack = signed_stack
    stack.redis_url = secured_redis.url("trigger-producer")
    stack.queue = keys.DEFAULT_QUEUE  # the ACL lines name the default queue
    worker_url = secured_redis.url("trigger-worker", ca_in_url=False)
    stack.start_worker(TRIGGER_REDIS_URL=worker_url, SSL_CERT_FILE=str(secured_redis.ca_file))
    producer = stack.client

    request_id = producer.trigger("training_pipeline", steps=FEW_TREES)
    state = stack.wait(request_id)

    assert state.status is Status.SUCCEEDED, stack.logs()
    assert [s.request_id for s in producer.requests(limit=2)] == [request_id, stack.probes[0]]  # the index's ACL
    for command in (
        ("DEL", keys.DEFAULT_QUEUE),
        ("LRANGE", keys.DEFAULT_QUEUE, 0, -1),
        ("ZRANGE", keys.DEAD_LETTERS_KEY, 0, -1),
        ("GET", keys.dead_letter_key(stack.probes[0])),
        ("FLUSHDB",),
    ):
        try:
            producer.redis.execute_command(*command)
        except redis.exceptions.NoPermissionError:
            continue
        raise AssertionError(f"the producer user may run {command}")
    worker_user = redis.Redis.from_url(secured_redis.url("trigger-worker"))
    assert worker_user.zcard(keys.DEAD_LETTERS_KEY) == 1, "the worker user reads dead letters (the probe's)"
    try:
        worker_user.flushall()
        raise AssertionError("the worker user may flush Redis")
    except redis.exceptions.NoPermissionError:
        pass
    try:
        redis.Redis.from_url(secured_redis.url(None)).get(keys.state_key(request_id))
        raise AssertionError("an unauthenticated client may read a state")
    except redis.exceptions.AuthenticationError:
        pass

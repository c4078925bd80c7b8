"""Regressions from review: leases never drop a copy, Redis trouble is never recorded as an outcome,
re-sent ids keep their state, and bad settings or configs give one line, not a traceback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from click.testing import CliRunner

from producers import keys
from producers.cli import cli
from producers.client import TriggerClient
from producers.contract import TriggerRequest, encode_request
from producers.settings import ProducerSettings
from producers.state import Status
from worker.processing import Delivery, Processor
from worker.settings import WorkerSettings


def deliver(request: TriggerRequest, **kwargs: Any) -> Delivery:
    return Delivery(raw=encode_request(request), task_id=request.request_id, **kwargs)


def test_a_copy_of_a_leased_request_is_deferred_not_dropped(processor: Processor, runner: Any) -> None:
    request = TriggerRequest(request_id="leased-1", pipeline_name="training_pipeline")
    processor.s.states.client.set(keys.lease_key("leased-1"), "a-dead-prefork-child", ex=30)

    state = processor.handle(deliver(request))

    assert state.status is Status.QUEUED and runner.calls == []
    [(_envelope, due)] = processor.s.states.client.zrange(processor.s.schedule.key, 0, -1, withscores=True)
    assert 29 < due - time.time() <= 31.5  # back once the lease would have expired
    processor.s.states.client.delete(keys.lease_key("leased-1"))  # the holder died
    assert processor.s.schedule.release_due(now=due + 1) == 1
    assert processor.handle(deliver(request)).status is Status.SUCCEEDED
    assert len(runner.calls) == 1


def test_a_copy_finds_the_outcome_another_worker_recorded_meanwhile(processor: Processor, runner: Any) -> None:
    request = TriggerRequest(request_id="race-1", pipeline_name="training_pipeline")
    processor.handle(deliver(request))
    stale = processor.s.states.get("race-1")
    assert stale is not None and stale.status is Status.SUCCEEDED
    processor.s.states.put(stale.model_copy(update={"status": Status.QUEUED}))
    original_get = processor.s.states.get
    calls = {"n": 0}

    def first_read_stale_then_fresh(request_id: str) -> Any:
        calls["n"] += 1
        return original_get(request_id) if calls["n"] > 1 else stale.model_copy(update={"status": Status.QUEUED})

    processor.s.states.put(stale)  # the other worker finished it
    processor.s.states.get = first_read_stale_then_fresh  # type: ignore[method-assign]
    assert processor.handle(deliver(request)).status is Status.SUCCEEDED
    assert len(runner.calls) == 1


def test_redis_trouble_mid_request_is_raised_for_requeue_not_recorded(processor: Processor, runner: Any) -> None:
    def broken_put(*_args: Any, **_kwargs: Any) -> None:
        raise redis.ConnectionError("Redis went away")

    processor.outcomes.record = broken_put  # type: ignore[method-assign]
    with pytest.raises(redis.ConnectionError):
        processor.handle(deliver(TriggerRequest(request_id="blip-1", pipeline_name="training_pipeline")))
    assert processor.s.dead_letters.count() == 0 and runner.calls == []


def test_a_failing_lease_release_does_not_turn_success_into_failure(processor: Processor, runner: Any) -> None:
    def broken_release(**_kwargs: Any) -> None:
        raise redis.ConnectionError("blip")

    processor.s.leases._release = broken_release  # type: ignore[method-assign]
    state = processor.handle(deliver(TriggerRequest(request_id="rel-1", pipeline_name="training_pipeline")))
    assert state.status is Status.SUCCEEDED and processor.s.dead_letters.count() == 0


def test_resending_a_request_id_keeps_its_recorded_state() -> None:
    client = TriggerClient(fakeredis.FakeRedis(), ProducerSettings(queue="q"))
    request = TriggerRequest(request_id="resend-1", pipeline_name="training_pipeline")
    client.send(request)
    done = client.status("resend-1").model_copy(update={"status": Status.SUCCEEDED})
    client.states.put(done)
    client.send(request)
    assert client.status("resend-1").status is Status.SUCCEEDED
    assert client.redis.llen("q") == 2  # the copy still goes out; the worker skips it as finished


def test_fire_and_forget_never_raises_for_an_oversized_request() -> None:
    client = TriggerClient(fakeredis.FakeRedis(), ProducerSettings(queue="q", max_payload_bytes=200))
    request = TriggerRequest(pipeline_name="training_pipeline", metadata={"blob": "x" * 1000})
    assert client.try_send(request) is None and client.failed_enqueues == 1


def test_heartbeat_must_fit_well_inside_the_lease() -> None:
    with pytest.raises(ValueError, match="at most half of"):
        WorkerSettings(lease_timeout=10, heartbeat_interval=6)


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"TRIGGER_REDIS_URL": "garbage"}, ["send", "training_pipeline"], "Redis URL must specify"),
        ({"TRIGGER_ENQUEUE_TIMEOUT": "abc"}, ["send", "training_pipeline"], "TRIGGER_ENQUEUE_TIMEOUT"),
        ({"TRIGGER_LEASE_TIMEOUT": "2"}, ["pipelines"], "TRIGGER_LEASE_TIMEOUT"),
        ({}, ["templates", "create", "x@5", "--pipeline", "training_pipeline"], "no '@'"),
    ],
)
def test_bad_settings_and_names_give_one_line(
    env: dict[str, str], args: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert expected in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps:\n  - train_model\n", "'steps' must be a mapping"),
        ("parameters: [1, 2]\n", "'parameters' must be a mapping"),
        ("steps:\n  train_model: 5\n", "'steps.train_model' must be a mapping"),
        ("a: [\n", "while parsing"),
    ],
)
def test_malformed_template_config_gives_one_line(text: str, expected: str, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(text)
    result = CliRunner().invoke(
        cli, ["templates", "create", "t", "--pipeline", "training_pipeline", "--config", str(config)]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert expected in result.output

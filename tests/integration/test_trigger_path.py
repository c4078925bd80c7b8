"""Issue 2 end to end: producer -> real Redis -> real worker -> validated ZenML run -> recorded outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from producers import keys
from producers.envelope import task_envelope
from producers.state import Status
from tests.integration.conftest import REPO, Stack, zenml_runs


def test_valid_request_runs_with_step_and_pipeline_overrides(stack: Stack, tmp_path: Path) -> None:
    csv = tmp_path / "churn.csv"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["target"] = (frame["a"] > 0).astype(int)
    frame.to_csv(csv, index=False)
    stack.start_worker(TRIGGER_DATA_ROOT=str(tmp_path))

    request_id = stack.client.trigger(
        "training_pipeline",
        parameters={"data_url": f"file://{csv}"},
        steps={"train_model": {"model_type": "gradient_boosting", "n_estimators": 25}},
        source="test",
    )
    state = stack.wait(request_id)

    assert state.status is Status.SUCCEEDED, stack.logs()
    assert state.attempts == 1 and state.error is None
    assert state.metrics is not None and state.metrics["accuracy"] > 0.9  # the CSV's target is learnable
    from zenml.client import Client

    run = Client().get_pipeline_run(state.run_id)
    assert run.steps["train_model"].config.parameters["model_type"] == "gradient_boosting"
    assert run.steps["train_model"].config.parameters["n_estimators"] == 25
    assert run.steps["load_data"].config.parameters["data_url"] == f"file://{csv}"


def test_cli_send_and_status_json(stack: Stack) -> None:
    stack.start_worker()
    env = stack.env()
    sent = subprocess.run(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "send",
            "training_pipeline",
            "-s",
            "train_model.n_estimators=10",
            "--idempotency-key",
            "cli-test",
            "--json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    request_id = json.loads(sent.stdout)["request_id"]
    shown = subprocess.run(
        [sys.executable, "-m", "producers.cli", "status", request_id, "--wait", "120", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(shown.stdout)
    assert status["status"] == "succeeded", stack.logs()
    for field in (
        "request_id",
        "pipeline_name",
        "template",
        "attempts",
        "run_id",
        "metrics",
        "error",
        "created_at",
        "updated_at",
    ):
        assert field in status
    assert status["pipeline_name"] == "training_pipeline" and 0 <= status["metrics"]["accuracy"] <= 1


def test_every_invalid_kind_is_rejected_with_its_path_and_never_runs(stack: Stack) -> None:
    stack.start_worker(TRIGGER_MAX_PAYLOAD_BYTES="4096")
    client = stack.client
    cases = {
        "pipeline_name": client.trigger("os.system", source="test"),
        "steps.tune_model": client.trigger("training_pipeline", steps={"tune_model": {"trials": 3}}),
        "steps.train_model.parameters.depth": client.trigger("training_pipeline", steps={"train_model": {"depth": 3}}),
        "steps.train_model.parameters.datasets": client.trigger(
            "training_pipeline", steps={"train_model": {"datasets": "s3://x"}}
        ),
        "steps.train_model.parameters.n_estimators": client.trigger(
            "training_pipeline", steps={"train_model": {"n_estimators": "many"}}
        ),
        "parameters.model_type": client.trigger("training_pipeline", parameters={"model_type": "linear"}),
        "parameters.learning_rate": client.trigger("training_pipeline", parameters={"learning_rate": 0.1}),
    }
    raw_cases = {
        "": "this is not json",
        "pipline_name": json.dumps({"request_id": "not-a-request-1", "pipline_name": "typo"}),
        "large": json.dumps(
            {"request_id": "too-large-1", "pipeline_name": "training_pipeline", "metadata": {"blob": "x" * 10_000}}
        ),
    }
    for index, (path, body) in enumerate(raw_cases.items()):
        task_id = f"raw-{index}"
        stack.redis.lpush(stack.queue, task_envelope(keys.TASK_NAME, task_id, [body], stack.queue))
        cases[f"raw:{path}"] = task_id  # recorded under its own task id, never under the id its body claims
    states = {path: stack.wait(request_id) for path, request_id in cases.items()}
    assert states["raw:pipline_name"].claimed_id == "not-a-request-1"
    assert stack.client.states.get("not-a-request-1") is None

    for path, state in states.items():
        assert state.status is Status.REJECTED, (path, state)
        paths = [detail["path"] for detail in state.error.details]
        expected = path.removeprefix("raw:")
        if expected == "large":
            assert state.error.type == "PayloadTooLarge"
        elif expected:
            assert expected in paths or any(p.startswith(expected) for p in paths), (path, state.error)
    assert states["pipeline_name"].error.type == "UnknownPipeline"
    assert zenml_runs() == []


def test_garbage_on_the_queue_does_not_stop_the_worker(stack: Stack) -> None:
    worker = stack.start_worker()
    stack.redis.lpush(stack.queue, b"\xff\xfe not utf-8 at all")
    stack.redis.lpush(stack.queue, b'{"body": 1}')
    stack.redis.lpush(
        stack.queue,
        json.dumps(
            {"content-type": "application/x-python-serialize", "headers": {}, "properties": {}, "body": "gASVAAAAAA=="}
        ),
    )
    request_id = stack.client.trigger("training_pipeline", steps={"train_model": {"n_estimators": 5}})

    state = stack.wait(request_id, process=worker)

    assert state.status is Status.SUCCEEDED, stack.logs()
    letters = stack.redis.zrange(keys.DEAD_LETTERS_KEY, 0, -1)
    stored = [json.loads(stack.redis.get(keys.dead_letter_key(m.decode()))) for m in letters]
    reasons = " | ".join(letter["reason"] for letter in stored)
    assert "not JSON" in reasons and "content type" in reasons and "not a Celery task envelope" in reasons
    non_utf8 = [letter for letter in stored if letter["raw_encoding"] == "base64"]
    assert len(non_utf8) == 1
